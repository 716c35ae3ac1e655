package verify

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protodsse "github.com/sigstore/protobuf-specs/gen/pb-go/dsse"
	protorekor "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	sgverify "github.com/sigstore/sigstore-go/pkg/verify"
)

// Predicate types and media types shipwatch understands.
const (
	// PredicateCosignSign is the predicate of the in-toto statement that
	// "cosign sign --new-bundle-format" (and cosign v3 by default) signs: a
	// signature, not an attestation.
	PredicateCosignSign = "https://sigstore.dev/cosign/sign/v1"
	// PredicateVulnCosign is the cosign vulnerability scan record
	// (trivy --format cosign-vuln, cosign attest --type vuln).
	PredicateVulnCosign = "https://cosign.sigstore.dev/attestation/vuln/v1"
	// PredicateVulnsInToto is the in-toto vulnerabilities predicate v0.2.
	PredicateVulnsInToto = "https://in-toto.io/attestation/vulns/v0.2"
	// PredicateSLSAProvenanceV1 is SLSA provenance v1.
	PredicateSLSAProvenanceV1 = "https://slsa.dev/provenance/v1"
	// EvidenceSimpleSigning is the evidence type of a legacy cosign
	// signature (".sig" tag): a signed simple-signing payload.
	EvidenceSimpleSigning = "cosign simple-signing"

	simpleSigningType  = "cosign container image signature"
	mediaSimpleSigning = "application/vnd.dev.cosign.simplesigning.v1+json"
	mediaDSSE          = "application/vnd.dsse.envelope.v1+json"
	mediaBundlePrefix  = "application/vnd.dev.sigstore.bundle"
	mediaInToto        = "application/vnd.in-toto+json"

	annSignature   = "dev.cosignproject.cosign/signature"
	annCertificate = "dev.sigstore.cosign/certificate"
	annChain       = "dev.sigstore.cosign/chain"
	annBundle      = "dev.sigstore.cosign/bundle"
	annTimestamp   = "dev.sigstore.cosign/rfc3161timestamp"

	bundleMediaType01 = "application/vnd.dev.sigstore.bundle+json;version=0.1"
)

// candidate is one signature or attestation found for a digest, parsed but
// not yet verified. Nothing in it counts as evidence until an authority
// verifies it.
type candidate struct {
	// where it was found and in which format, for messages.
	source, format string
	entity         sgverify.SignedEntity
	// dsse is true for in-toto statements in DSSE envelopes; false for
	// message signatures over a simple-signing payload.
	dsse bool
	// payload is the signed content: the in-toto statement or the
	// simple-signing payload.
	payload []byte
	// claimedType is the predicate type the unverified payload claims (or
	// EvidenceSimpleSigning). It only routes the candidate to the rules that
	// could use it; evidence records the type read from verified bytes.
	claimedType string
}

func (c candidate) describe() string { return c.format + " from " + c.source }

// statement is the part of an in-toto statement shipwatch reads.
type statement struct {
	Type          string `json:"_type"`
	PredicateType string `json:"predicateType"`
	Subject       []struct {
		Name   string            `json:"name"`
		Digest map[string]string `json:"digest"`
	} `json:"subject"`
	Predicate json.RawMessage `json:"predicate"`
}

// parseStatement reads an in-toto statement (v0.1 or v1).
func parseStatement(b []byte) (*statement, error) {
	var s statement
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("in-toto statement: %w", err)
	}
	switch s.Type {
	case "https://in-toto.io/Statement/v1", "https://in-toto.io/Statement/v0.1":
	default:
		return nil, fmt.Errorf("in-toto statement: unknown _type %q", s.Type)
	}
	if s.PredicateType == "" {
		return nil, errors.New("in-toto statement: no predicateType")
	}
	if len(s.Subject) == 0 {
		return nil, errors.New("in-toto statement: no subject")
	}
	return &s, nil
}

// hasSubject reports whether the statement names digest ("sha256:…").
func (s *statement) hasSubject(digest string) bool {
	alg, hexd, ok := strings.Cut(digest, ":")
	if !ok {
		return false
	}
	for _, sub := range s.Subject {
		if strings.EqualFold(sub.Digest[alg], hexd) {
			return true
		}
	}
	return false
}

// simpleSigning is cosign's signed payload for a legacy signature.
type simpleSigning struct {
	Critical struct {
		Identity struct {
			DockerReference string `json:"docker-reference"`
		} `json:"identity"`
		Image struct {
			DockerManifestDigest string `json:"docker-manifest-digest"`
		} `json:"image"`
		Type string `json:"type"`
	} `json:"critical"`
}

// parseSimpleSigning returns the manifest digest a simple-signing payload
// signs.
func parseSimpleSigning(b []byte) (string, error) {
	var p simpleSigning
	if err := json.Unmarshal(b, &p); err != nil {
		return "", fmt.Errorf("simple-signing payload: %w", err)
	}
	if p.Critical.Type != simpleSigningType {
		return "", fmt.Errorf("simple-signing payload: type %q, want %q", p.Critical.Type, simpleSigningType)
	}
	d := p.Critical.Image.DockerManifestDigest
	if d == "" {
		return "", errors.New("simple-signing payload names no docker-manifest-digest")
	}
	return d, nil
}

// parseBundleCandidate reads a sigstore bundle (JSON) as stored in an OCI
// referrer's layer. Only DSSE bundles say which image they are about.
func parseBundleCandidate(b []byte) (candidate, error) {
	var bun bundle.Bundle
	if err := bun.UnmarshalJSON(b); err != nil {
		return candidate{}, fmt.Errorf("sigstore bundle: %w", err)
	}
	env, err := bun.Envelope()
	if err != nil {
		return candidate{}, errors.New("sigstore bundle holds a message signature, which names no image digest; want a DSSE envelope (cosign sign --new-bundle-format)")
	}
	raw := env.RawEnvelope()
	if raw.PayloadType != mediaInToto {
		return candidate{}, fmt.Errorf("sigstore bundle: DSSE payload type %q, want %q", raw.PayloadType, mediaInToto)
	}
	payload, err := base64.StdEncoding.DecodeString(raw.Payload)
	if err != nil {
		return candidate{}, fmt.Errorf("sigstore bundle: DSSE payload: %w", err)
	}
	st, err := parseStatement(payload)
	if err != nil {
		return candidate{}, fmt.Errorf("sigstore bundle: %w", err)
	}
	return candidate{format: "sigstore bundle", entity: &bun, dsse: true, payload: payload, claimedType: st.PredicateType}, nil
}

// parseLegacySignature turns a cosign ".sig" layer (simple-signing payload
// plus annotations) into a sigstore bundle v0.1 so that sigstore-go verifies
// it like any other.
func parseLegacySignature(ann map[string]string, payload []byte) (candidate, error) {
	sigB64, ok := ann[annSignature]
	if !ok || sigB64 == "" {
		return candidate{}, errors.New("cosign signature layer has no " + annSignature + " annotation")
	}
	sig, err := base64.StdEncoding.DecodeString(sigB64)
	if err != nil {
		return candidate{}, fmt.Errorf("cosign signature annotation: %w", err)
	}
	if _, err := parseSimpleSigning(payload); err != nil {
		return candidate{}, err
	}
	sum := sha256.Sum256(payload)
	pb := &protobundle.Bundle{
		MediaType: bundleMediaType01,
		Content: &protobundle.Bundle_MessageSignature{MessageSignature: &protocommon.MessageSignature{
			MessageDigest: &protocommon.HashOutput{Algorithm: protocommon.HashAlgorithm_SHA2_256, Digest: sum[:]},
			Signature:     sig,
		}},
	}
	if err := legacyMaterial(pb, ann); err != nil {
		return candidate{}, err
	}
	b, err := bundle.NewBundle(pb)
	if err != nil {
		return candidate{}, fmt.Errorf("cosign signature: %w", err)
	}
	return candidate{format: "cosign signature", entity: b, payload: payload, claimedType: EvidenceSimpleSigning}, nil
}

// dsseEnvelope is the JSON form of a DSSE envelope (a legacy ".att" layer).
type dsseEnvelope struct {
	PayloadType string `json:"payloadType"`
	Payload     string `json:"payload"`
	Signatures  []struct {
		KeyID string `json:"keyid"`
		Sig   string `json:"sig"`
	} `json:"signatures"`
}

// parseLegacyAttestation turns a cosign ".att" layer (a DSSE envelope plus
// annotations) into a sigstore bundle v0.1.
func parseLegacyAttestation(ann map[string]string, envJSON []byte) (candidate, error) {
	var env dsseEnvelope
	if err := json.Unmarshal(envJSON, &env); err != nil {
		return candidate{}, fmt.Errorf("DSSE envelope: %w", err)
	}
	if env.PayloadType != mediaInToto {
		return candidate{}, fmt.Errorf("DSSE envelope: payload type %q, want %q", env.PayloadType, mediaInToto)
	}
	if len(env.Signatures) != 1 {
		return candidate{}, fmt.Errorf("DSSE envelope: %d signatures, want exactly 1", len(env.Signatures))
	}
	payload, err := base64.StdEncoding.DecodeString(env.Payload)
	if err != nil {
		return candidate{}, fmt.Errorf("DSSE envelope payload: %w", err)
	}
	sig, err := base64.StdEncoding.DecodeString(env.Signatures[0].Sig)
	if err != nil {
		return candidate{}, fmt.Errorf("DSSE envelope signature: %w", err)
	}
	st, err := parseStatement(payload)
	if err != nil {
		return candidate{}, err
	}
	pb := &protobundle.Bundle{
		MediaType: bundleMediaType01,
		Content: &protobundle.Bundle_DsseEnvelope{DsseEnvelope: &protodsse.Envelope{
			Payload:     payload,
			PayloadType: env.PayloadType,
			Signatures:  []*protodsse.Signature{{Sig: sig, Keyid: env.Signatures[0].KeyID}},
		}},
	}
	if err := legacyMaterial(pb, ann); err != nil {
		return candidate{}, err
	}
	b, err := bundle.NewBundle(pb)
	if err != nil {
		return candidate{}, fmt.Errorf("cosign attestation: %w", err)
	}
	return candidate{format: "cosign attestation", entity: b, dsse: true, payload: payload, claimedType: st.PredicateType}, nil
}

// rekorBundle is cosign's "dev.sigstore.cosign/bundle" annotation: a Rekor
// entry and its signed entry timestamp (inclusion promise).
type rekorBundle struct {
	SignedEntryTimestamp []byte `json:"SignedEntryTimestamp"`
	Payload              struct {
		Body           string `json:"body"`
		IntegratedTime int64  `json:"integratedTime"`
		LogIndex       int64  `json:"logIndex"`
		LogID          string `json:"logID"`
	} `json:"Payload"`
}

// legacyMaterial fills the verification material of a v0.1 bundle from
// cosign's annotations: the certificate (keyless) or a key hint (keyed), the
// Rekor entry and an RFC 3161 timestamp.
func legacyMaterial(pb *protobundle.Bundle, ann map[string]string) error {
	vm := &protobundle.VerificationMaterial{}
	if certPEM := ann[annCertificate]; certPEM != "" {
		block, _ := pem.Decode([]byte(certPEM))
		if block == nil || block.Type != "CERTIFICATE" {
			return errors.New("cosign certificate annotation is not a PEM certificate")
		}
		// Intermediates come from the trusted root, never from the
		// signature (the chain annotation is informative only).
		vm.Content = &protobundle.VerificationMaterial_X509CertificateChain{X509CertificateChain: &protocommon.X509CertificateChain{
			Certificates: []*protocommon.X509Certificate{{RawBytes: block.Bytes}},
		}}
	} else {
		vm.Content = &protobundle.VerificationMaterial_PublicKey{PublicKey: &protocommon.PublicKeyIdentifier{}}
	}
	if rb := ann[annBundle]; rb != "" {
		entry, err := parseRekorBundle([]byte(rb))
		if err != nil {
			return err
		}
		vm.TlogEntries = []*protorekor.TransparencyLogEntry{entry}
	}
	if ts := ann[annTimestamp]; ts != "" {
		var t struct {
			SignedRFC3161Timestamp []byte `json:"SignedRFC3161Timestamp"`
		}
		if err := json.Unmarshal([]byte(ts), &t); err != nil {
			return fmt.Errorf("cosign timestamp annotation: %w", err)
		}
		vm.TimestampVerificationData = &protobundle.TimestampVerificationData{
			Rfc3161Timestamps: []*protocommon.RFC3161SignedTimestamp{{SignedTimestamp: t.SignedRFC3161Timestamp}},
		}
	}
	pb.VerificationMaterial = vm
	return nil
}

func parseRekorBundle(b []byte) (*protorekor.TransparencyLogEntry, error) {
	var rb rekorBundle
	if err := json.Unmarshal(b, &rb); err != nil {
		return nil, fmt.Errorf("cosign Rekor bundle annotation: %w", err)
	}
	body, err := base64.StdEncoding.DecodeString(rb.Payload.Body)
	if err != nil {
		return nil, fmt.Errorf("cosign Rekor bundle: body: %w", err)
	}
	var kv struct {
		Kind       string `json:"kind"`
		APIVersion string `json:"apiVersion"`
	}
	if err := json.Unmarshal(body, &kv); err != nil {
		return nil, fmt.Errorf("cosign Rekor bundle: body: %w", err)
	}
	logID, err := hex.DecodeString(rb.Payload.LogID)
	if err != nil || len(logID) == 0 {
		return nil, fmt.Errorf("cosign Rekor bundle: logID %q is not hex", rb.Payload.LogID)
	}
	if len(rb.SignedEntryTimestamp) == 0 {
		return nil, errors.New("cosign Rekor bundle: no SignedEntryTimestamp")
	}
	return &protorekor.TransparencyLogEntry{
		LogIndex:          rb.Payload.LogIndex,
		LogId:             &protocommon.LogId{KeyId: logID},
		KindVersion:       &protorekor.KindVersion{Kind: kv.Kind, Version: kv.APIVersion},
		IntegratedTime:    rb.Payload.IntegratedTime,
		InclusionPromise:  &protorekor.InclusionPromise{SignedEntryTimestamp: rb.SignedEntryTimestamp},
		CanonicalizedBody: body,
	}, nil
}

// printable shortens untrusted text for messages.
func printable(s string) string {
	if !utf8.ValidString(s) {
		return fmt.Sprintf("%q", s)
	}
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}
