// Package sigtest signs and attests images in a test registry the way cosign
// does, with real cryptography: keys generated in the test, or keyless
// identities of sigstore-go's virtual Sigstore (fake Fulcio, Rekor and
// timestamp authority). Signatures are written as sigstore bundles in OCI 1.1
// referrers (what cosign v3 writes) or as legacy cosign ".sig"/".att" tags.
// It is for tests of shipwatch and of programs using its verify package.
package sigtest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protodsse "github.com/sigstore/protobuf-specs/gen/pb-go/dsse"
	protorekor "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/testing/ca"
	"github.com/sigstore/sigstore-go/pkg/tlog"
	"google.golang.org/protobuf/encoding/protojson"
)

// Format is how a signature or attestation is stored in the registry.
type Format string

const (
	// Bundle is a sigstore bundle (v0.3, DSSE) in an OCI 1.1 referrer of
	// the image, as cosign v3 writes; on a registry without the referrers
	// API the "sha256-<hex>" fallback tag lists it.
	Bundle Format = "bundle"
	// Legacy is cosign's "sha256-<hex>.sig" (simple-signing payload) and
	// "sha256-<hex>.att" (DSSE envelope) tags.
	Legacy Format = "legacy"
)

// Media types, predicate types and annotations of the cosign formats.
const (
	PredicateCosignSign  = "https://sigstore.dev/cosign/sign/v1"
	PredicateVulnCosign  = "https://cosign.sigstore.dev/attestation/vuln/v1"
	PredicateVulnsInToto = "https://in-toto.io/attestation/vulns/v0.2"
	PredicateSLSAv1      = "https://slsa.dev/provenance/v1"

	MediaBundle        = "application/vnd.dev.sigstore.bundle.v0.3+json"
	MediaSimpleSigning = "application/vnd.dev.cosign.simplesigning.v1+json"
	MediaDSSE          = "application/vnd.dsse.envelope.v1+json"
	MediaInToto        = "application/vnd.in-toto+json"

	AnnSignature   = "dev.cosignproject.cosign/signature"
	AnnCertificate = "dev.sigstore.cosign/certificate"
	AnnChain       = "dev.sigstore.cosign/chain"
	AnnBundle      = "dev.sigstore.cosign/bundle"
	AnnTimestamp   = "dev.sigstore.cosign/rfc3161timestamp"
)

// Registry is what sigtest needs of a registry; *testenv.Registry has it.
type Registry interface {
	Auth() authn.Authenticator
	Transport() *http.Transport
}

// Signer signs: a *Key or a keyless *Identity.
type Signer interface {
	// dsse signs an in-toto statement into a DSSE envelope and returns the
	// material that goes with it.
	dsse(statement []byte, withProof bool) (*signed, error)
	// message signs a simple-signing payload.
	message(payload []byte) (*signed, error)
}

// signed is a signature with its verification material.
type signed struct {
	sig        []byte
	payload    []byte // statement or payload
	keyHint    string // keyed
	cert       *x509.Certificate
	chain      []*x509.Certificate
	tlog       *protorekor.TransparencyLogEntry
	timestamps [][]byte
}

// ---- keys

// Key is a key pair generated in the test.
type Key struct {
	Signer crypto.Signer
	alg    string
}

var _ Signer = (*Key)(nil)

// NewKey generates a key: alg is "ecdsa-p256" (the default, what cosign
// generate-key-pair makes), "ecdsa-p384", "rsa-2048" or "ed25519".
func NewKey(alg string) (*Key, error) {
	var s crypto.Signer
	var err error
	switch alg {
	case "", "ecdsa-p256":
		alg = "ecdsa-p256"
		s, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ecdsa-p384":
		s, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "rsa-2048":
		s, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ed25519":
		_, s, err = ed25519.GenerateKey(rand.Reader)
	default:
		return nil, fmt.Errorf("sigtest: unknown key algorithm %q", alg)
	}
	if err != nil {
		return nil, err
	}
	return &Key{Signer: s, alg: alg}, nil
}

// MustKey is NewKey for tests.
func MustKey(tb testing.TB, alg string) *Key {
	tb.Helper()
	k, err := NewKey(alg)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// PublicKeyPEM is the public key as a PEM "PUBLIC KEY" block.
func (k *Key) PublicKeyPEM() string {
	der, err := x509.MarshalPKIXPublicKey(k.Signer.Public())
	if err != nil {
		panic(err) // generated keys always marshal
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// PrivateKeyPEM is the private key as PKCS#8 PEM (unencrypted).
func (k *Key) PrivateKeyPEM() string {
	der, err := x509.MarshalPKCS8PrivateKey(k.Signer)
	if err != nil {
		panic(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// WritePublicKey writes the public key PEM to dir/name and returns the path.
func (k *Key) WritePublicKey(dir, name string) (string, error) {
	p := filepath.Join(dir, name)
	return p, os.WriteFile(p, []byte(k.PublicKeyPEM()), 0o644)
}

// hint is cosign's key hint: base64 SHA-256 of the PKIX public key.
func (k *Key) hint() string {
	der, _ := x509.MarshalPKIXPublicKey(k.Signer.Public())
	sum := sha256.Sum256(der)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// sign signs msg as cosign does with a key: SHA-256 for ECDSA (any curve)
// and RSA PKCS#1 v1.5, pure Ed25519.
func (k *Key) sign(msg []byte) ([]byte, error) {
	switch s := k.Signer.(type) {
	case ed25519.PrivateKey:
		return ed25519.Sign(s, msg), nil
	case *rsa.PrivateKey:
		sum := sha256.Sum256(msg)
		return rsa.SignPKCS1v15(rand.Reader, s, crypto.SHA256, sum[:])
	case *ecdsa.PrivateKey:
		sum := sha256.Sum256(msg)
		return ecdsa.SignASN1(rand.Reader, s, sum[:])
	}
	return nil, fmt.Errorf("sigtest: unsupported key %T", k.Signer)
}

func (k *Key) dsse(statement []byte, _ bool) (*signed, error) {
	sig, err := k.sign(pae(MediaInToto, statement))
	if err != nil {
		return nil, err
	}
	return &signed{sig: sig, payload: statement, keyHint: k.hint()}, nil
}

func (k *Key) message(payload []byte) (*signed, error) {
	sig, err := k.sign(payload)
	if err != nil {
		return nil, err
	}
	return &signed{sig: sig, payload: payload, keyHint: k.hint()}, nil
}

// pae is DSSE's pre-authentication encoding.
func pae(payloadType string, payload []byte) []byte {
	return []byte(fmt.Sprintf("DSSEv1 %d %s %d %s", len(payloadType), payloadType, len(payload), payload))
}

// ---- keyless

// Sigstore is a virtual Sigstore deployment: a Fulcio CA, a Rekor log and a
// timestamp authority, all in memory.
type Sigstore struct {
	vs   *ca.VirtualSigstore
	root []byte
}

// NewSigstore starts a virtual Sigstore. Its certificates are valid for an
// hour from now.
func NewSigstore() (*Sigstore, error) {
	vs, err := ca.NewVirtualSigstore()
	if err != nil {
		return nil, err
	}
	// The virtual Sigstore's log IDs are hex text where the trusted root
	// format wants the raw key ID; fix them so the JSON round-trips.
	rekor := map[string]*root.TransparencyLog{}
	for id, tl := range vs.RekorLogs() {
		raw, err := hex.DecodeString(id)
		if err != nil {
			return nil, err
		}
		cp := *tl
		cp.ID = raw
		rekor[id] = &cp
	}
	// No CT logs in the trusted root: the virtual Fulcio embeds no SCTs.
	tr, err := root.NewTrustedRoot(root.TrustedRootMediaType01, vs.FulcioCertificateAuthorities(), nil, vs.TimestampingAuthorities(), rekor)
	if err != nil {
		return nil, err
	}
	b, err := tr.MarshalJSON()
	if err != nil {
		return nil, err
	}
	return &Sigstore{vs: vs, root: b}, nil
}

// MustSigstore is NewSigstore for tests.
func MustSigstore(tb testing.TB) *Sigstore {
	tb.Helper()
	s, err := NewSigstore()
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// TrustedRootJSON is the deployment's trusted_root.json.
func (s *Sigstore) TrustedRootJSON() []byte { return append([]byte(nil), s.root...) }

// WriteTrustedRoot writes trusted_root.json into dir and returns its path.
func (s *Sigstore) WriteTrustedRoot(dir string) (string, error) {
	p := filepath.Join(dir, "trusted_root.json")
	return p, os.WriteFile(p, s.root, 0o644)
}

// Identity is a keyless signer: Fulcio issues it a certificate for subject
// (an email or URI) from the OIDC issuer.
func (s *Sigstore) Identity(subject, issuer string) *Identity {
	return &Identity{s: s, Subject: subject, Issuer: issuer}
}

// Identity is a keyless signer of a virtual Sigstore.
type Identity struct {
	s               *Sigstore
	Subject, Issuer string
}

var _ Signer = (*Identity)(nil)

// signedAt is the integrated time of virtual Rekor entries: inside the
// leaf certificate's validity (it starts now and lasts 10 minutes).
func signedAt() time.Time { return time.Now().Add(5 * time.Minute) }

func (id *Identity) dsse(statement []byte, withProof bool) (*signed, error) {
	ent, err := id.s.vs.AttestAtTime(id.Subject, id.Issuer, statement, signedAt(), withProof)
	if err != nil {
		return nil, err
	}
	sc, err := ent.SignatureContent()
	if err != nil {
		return nil, err
	}
	env := sc.EnvelopeContent().RawEnvelope()
	sig, err := base64.StdEncoding.DecodeString(env.Signatures[0].Sig)
	if err != nil {
		return nil, err
	}
	return id.material(ent, sig, statement)
}

func (id *Identity) message(payload []byte) (*signed, error) {
	ent, err := id.s.vs.SignAtTime(id.Subject, id.Issuer, payload, signedAt())
	if err != nil {
		return nil, err
	}
	sc, err := ent.SignatureContent()
	if err != nil {
		return nil, err
	}
	return id.material(ent, sc.Signature(), payload)
}

// material turns a virtual Sigstore test entity into bundle material: the
// leaf certificate, the Rekor entry with its signed entry timestamp and the
// RFC 3161 timestamp.
func (id *Identity) material(ent *ca.TestEntity, sig, payload []byte) (*signed, error) {
	vc, err := ent.VerificationContent()
	if err != nil {
		return nil, err
	}
	entries, err := ent.TlogEntries()
	if err != nil || len(entries) != 1 {
		return nil, fmt.Errorf("sigtest: want one tlog entry, got %d (%v)", len(entries), err)
	}
	tle, err := promisedEntry(id.s.vs, entries[0])
	if err != nil {
		return nil, err
	}
	ts, err := ent.Timestamps()
	if err != nil {
		return nil, err
	}
	fca := id.s.vs.FulcioCertificateAuthorities()[0].(*root.FulcioCertificateAuthority)
	chain := append(append([]*x509.Certificate(nil), fca.Intermediates...), fca.Root)
	return &signed{sig: sig, payload: payload, cert: vc.Certificate(), chain: chain, tlog: tle, timestamps: ts}, nil
}

// promisedEntry is the protobuf form of a Rekor entry with its kind and its
// inclusion promise (the virtual Rekor signs it again: the SET is
// deterministic input, a fresh ECDSA signature over it is as valid).
func promisedEntry(vs *ca.VirtualSigstore, e *tlog.Entry) (*protorekor.TransparencyLogEntry, error) {
	tle := e.TransparencyLogEntry()
	var kv struct {
		Kind       string `json:"kind"`
		APIVersion string `json:"apiVersion"`
	}
	if err := json.Unmarshal(tle.CanonicalizedBody, &kv); err != nil {
		return nil, err
	}
	set, err := vs.RekorSignPayload(tlog.RekorPayload{
		Body:           base64.StdEncoding.EncodeToString(tle.CanonicalizedBody),
		IntegratedTime: tle.IntegratedTime,
		LogIndex:       tle.LogIndex,
		LogID:          hex.EncodeToString(tle.LogId.KeyId),
	})
	if err != nil {
		return nil, err
	}
	return &protorekor.TransparencyLogEntry{
		LogIndex:          tle.LogIndex,
		LogId:             tle.LogId,
		KindVersion:       &protorekor.KindVersion{Kind: kv.Kind, Version: kv.APIVersion},
		IntegratedTime:    tle.IntegratedTime,
		InclusionPromise:  &protorekor.InclusionPromise{SignedEntryTimestamp: set},
		InclusionProof:    tle.InclusionProof,
		CanonicalizedBody: tle.CanonicalizedBody,
	}, nil
}

// ---- statements and payloads

// Statement is an in-toto v1 statement about digest ("sha256:…").
func Statement(digest, predicateType string, predicate any) ([]byte, error) {
	alg, hexd, ok := strings.Cut(digest, ":")
	if !ok {
		return nil, fmt.Errorf("sigtest: digest %q", digest)
	}
	st := map[string]any{
		"_type":         "https://in-toto.io/Statement/v1",
		"subject":       []any{map[string]any{"digest": map[string]string{alg: hexd}}},
		"predicateType": predicateType,
	}
	if predicate != nil {
		st["predicate"] = predicate
	}
	return json.Marshal(st)
}

// SimpleSigningPayload is cosign's signed payload for repo@digest.
func SimpleSigningPayload(repo, digest string) []byte {
	b, _ := json.Marshal(map[string]any{
		"critical": map[string]any{
			"identity": map[string]string{"docker-reference": repo},
			"image":    map[string]string{"docker-manifest-digest": digest},
			"type":     "cosign container image signature",
		},
		"optional": nil,
	})
	return b
}

// BundleJSON signs statement and returns it as a sigstore bundle v0.3.
func BundleJSON(s Signer, statement []byte) ([]byte, error) {
	sg, err := s.dsse(statement, true)
	if err != nil {
		return nil, err
	}
	pb := &protobundle.Bundle{
		MediaType: MediaBundle,
		Content: &protobundle.Bundle_DsseEnvelope{DsseEnvelope: &protodsse.Envelope{
			Payload:     statement,
			PayloadType: MediaInToto,
			Signatures:  []*protodsse.Signature{{Sig: sg.sig}},
		}},
		VerificationMaterial: &protobundle.VerificationMaterial{},
	}
	vm := pb.VerificationMaterial
	if sg.cert != nil {
		vm.Content = &protobundle.VerificationMaterial_Certificate{Certificate: &protocommon.X509Certificate{RawBytes: sg.cert.Raw}}
	} else {
		vm.Content = &protobundle.VerificationMaterial_PublicKey{PublicKey: &protocommon.PublicKeyIdentifier{Hint: sg.keyHint}}
	}
	if sg.tlog != nil {
		vm.TlogEntries = []*protorekor.TransparencyLogEntry{sg.tlog}
	}
	if len(sg.timestamps) > 0 {
		vm.TimestampVerificationData = &protobundle.TimestampVerificationData{}
		for _, t := range sg.timestamps {
			vm.TimestampVerificationData.Rfc3161Timestamps = append(vm.TimestampVerificationData.Rfc3161Timestamps, &protocommon.RFC3161SignedTimestamp{SignedTimestamp: t})
		}
	}
	return protojson.Marshal(pb)
}

// legacyAnnotations are cosign's annotations for keyless material.
func legacyAnnotations(sg *signed) (map[string]string, error) {
	ann := map[string]string{}
	if sg.cert == nil {
		return ann, nil
	}
	ann[AnnCertificate] = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: sg.cert.Raw}))
	var chain bytes.Buffer
	for _, c := range sg.chain {
		_ = pem.Encode(&chain, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	ann[AnnChain] = chain.String()
	if sg.tlog != nil {
		b, err := json.Marshal(map[string]any{
			"SignedEntryTimestamp": sg.tlog.InclusionPromise.SignedEntryTimestamp,
			"Payload": map[string]any{
				"body":           base64.StdEncoding.EncodeToString(sg.tlog.CanonicalizedBody),
				"integratedTime": sg.tlog.IntegratedTime,
				"logIndex":       sg.tlog.LogIndex,
				"logID":          hex.EncodeToString(sg.tlog.LogId.KeyId),
			},
		})
		if err != nil {
			return nil, err
		}
		ann[AnnBundle] = string(b)
	}
	if len(sg.timestamps) > 0 {
		b, err := json.Marshal(map[string][]byte{"SignedRFC3161Timestamp": sg.timestamps[0]})
		if err != nil {
			return nil, err
		}
		ann[AnnTimestamp] = string(b)
	}
	return ann, nil
}

// LegacySignatureLayer signs the simple-signing payload of repo@digest and
// returns the layer content and annotations of a cosign ".sig" image.
func LegacySignatureLayer(s Signer, repo, digest string) (payload []byte, ann map[string]string, err error) {
	payload = SimpleSigningPayload(repo, digest)
	sg, err := s.message(payload)
	if err != nil {
		return nil, nil, err
	}
	ann, err = legacyAnnotations(sg)
	if err != nil {
		return nil, nil, err
	}
	ann[AnnSignature] = base64.StdEncoding.EncodeToString(sg.sig)
	return payload, ann, nil
}

// LegacyAttestationLayer signs statement into a DSSE envelope and returns
// the layer content and annotations of a cosign ".att" image.
func LegacyAttestationLayer(s Signer, statement []byte, predicateType string) (envelope []byte, ann map[string]string, err error) {
	sg, err := s.dsse(statement, false)
	if err != nil {
		return nil, nil, err
	}
	envelope, err = json.Marshal(map[string]any{
		"payloadType": MediaInToto,
		"payload":     base64.StdEncoding.EncodeToString(statement),
		"signatures":  []any{map[string]string{"keyid": "", "sig": base64.StdEncoding.EncodeToString(sg.sig)}},
	})
	if err != nil {
		return nil, nil, err
	}
	ann, err = legacyAnnotations(sg)
	if err != nil {
		return nil, nil, err
	}
	ann[AnnSignature] = ""
	ann["predicateType"] = predicateType
	return envelope, ann, nil
}

// ---- writing to the registry

func options(reg Registry) []remote.Option {
	return []remote.Option{remote.WithAuth(reg.Auth()), remote.WithTransport(reg.Transport())}
}

func parseDigestRef(ref string) (name.Digest, error) {
	d, err := name.NewDigest(ref)
	if err != nil {
		return name.Digest{}, fmt.Errorf("sigtest: %q must be repo@sha256:…: %w", ref, err)
	}
	return d, nil
}

// Sign signs the image ref ("host/repo@sha256:…") in format f.
func Sign(ctx context.Context, reg Registry, ref string, s Signer, f Format) error {
	d, err := parseDigestRef(ref)
	if err != nil {
		return err
	}
	switch f {
	case Bundle:
		st, err := Statement(d.DigestStr(), PredicateCosignSign, nil)
		if err != nil {
			return err
		}
		b, err := BundleJSON(s, st)
		if err != nil {
			return err
		}
		return PushBundle(ctx, reg, ref, b, PredicateCosignSign)
	case Legacy:
		payload, ann, err := LegacySignatureLayer(s, d.Context().Name(), d.DigestStr())
		if err != nil {
			return err
		}
		return AppendLegacyLayer(ctx, reg, ref, ".sig", payload, MediaSimpleSigning, ann)
	}
	return fmt.Errorf("sigtest: unknown format %q", f)
}

// Attest attests predicate (any JSON value) of predicateType about ref.
func Attest(ctx context.Context, reg Registry, ref string, s Signer, f Format, predicateType string, predicate any) error {
	d, err := parseDigestRef(ref)
	if err != nil {
		return err
	}
	st, err := Statement(d.DigestStr(), predicateType, predicate)
	if err != nil {
		return err
	}
	switch f {
	case Bundle:
		b, err := BundleJSON(s, st)
		if err != nil {
			return err
		}
		return PushBundle(ctx, reg, ref, b, predicateType)
	case Legacy:
		env, ann, err := LegacyAttestationLayer(s, st, predicateType)
		if err != nil {
			return err
		}
		return AppendLegacyLayer(ctx, reg, ref, ".att", env, MediaDSSE, ann)
	}
	return fmt.Errorf("sigtest: unknown format %q", f)
}

// MustSign is Sign for tests.
func MustSign(tb testing.TB, reg Registry, ref string, s Signer, f Format) {
	tb.Helper()
	if err := Sign(context.Background(), reg, ref, s, f); err != nil {
		tb.Fatalf("sign %s (%s): %v", ref, f, err)
	}
}

// MustAttest is Attest for tests.
func MustAttest(tb testing.TB, reg Registry, ref string, s Signer, f Format, predicateType string, predicate any) {
	tb.Helper()
	if err := Attest(context.Background(), reg, ref, s, f, predicateType, predicate); err != nil {
		tb.Fatalf("attest %s %s (%s): %v", predicateType, ref, f, err)
	}
}

// referrerManifest is an OCI 1.1 image manifest with artifactType and
// subject, which ggcr's v1.Manifest cannot express completely.
type referrerManifest struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     types.MediaType   `json:"mediaType"`
	ArtifactType  string            `json:"artifactType"`
	Config        v1.Descriptor     `json:"config"`
	Layers        []v1.Descriptor   `json:"layers"`
	Subject       *v1.Descriptor    `json:"subject"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

type rawManifest struct {
	b  []byte
	mt types.MediaType
}

func (r rawManifest) RawManifest() ([]byte, error)        { return r.b, nil }
func (r rawManifest) MediaType() (types.MediaType, error) { return r.mt, nil }

// PushBundle pushes bundle as an OCI 1.1 referrer of subject ("repo@sha256:…")
// with cosign's layout: an empty config, one bundle layer, artifactType the
// bundle media type. ggcr updates the fallback tag when the registry has no
// referrers API. predicateType goes into the (unsigned, informative)
// annotation cosign writes.
func PushBundle(ctx context.Context, reg Registry, subject string, bundle []byte, predicateType string) error {
	d, err := parseDigestRef(subject)
	if err != nil {
		return err
	}
	opts := append(options(reg), remote.WithContext(ctx))
	desc, err := remote.Head(d, opts...)
	if err != nil {
		return fmt.Errorf("sigtest: head %s: %w", subject, err)
	}
	cfg := static.NewLayer([]byte("{}"), "application/vnd.oci.empty.v1+json")
	layer := static.NewLayer(bundle, MediaBundle)
	for _, l := range []v1.Layer{cfg, layer} {
		if err := remote.WriteLayer(d.Context(), l, opts...); err != nil {
			return fmt.Errorf("sigtest: upload blob: %w", err)
		}
	}
	m := referrerManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  MediaBundle,
		Config:        descriptorOf(cfg, "application/vnd.oci.empty.v1+json"),
		Layers:        []v1.Descriptor{descriptorOf(layer, MediaBundle)},
		Subject:       &v1.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: desc.Size},
		Annotations: map[string]string{
			"dev.sigstore.bundle.content":       "dsse-envelope",
			"dev.sigstore.bundle.predicateType": predicateType,
		},
	}
	return PushReferrerManifest(ctx, reg, d.Context(), m)
}

// PushReferrerManifest pushes m by digest into repo.
func PushReferrerManifest(ctx context.Context, reg Registry, repo name.Repository, m any) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	h, _, err := v1.SHA256(bytes.NewReader(b))
	if err != nil {
		return err
	}
	ref := repo.Digest(h.String())
	if err := remote.Put(ref, rawManifest{b: b, mt: types.OCIManifestSchema1}, append(options(reg), remote.WithContext(ctx))...); err != nil {
		return fmt.Errorf("sigtest: push referrer: %w", err)
	}
	return nil
}

func descriptorOf(l v1.Layer, mt string) v1.Descriptor {
	d, _ := l.Digest()
	sz, _ := l.Size()
	return v1.Descriptor{MediaType: types.MediaType(mt), Digest: d, Size: sz}
}

// AppendLegacyLayer adds a layer to the cosign tag "sha256-<hex><suffix>"
// (".sig" or ".att") of ref, creating the image if needed, as cosign does.
func AppendLegacyLayer(ctx context.Context, reg Registry, ref, suffix string, content []byte, mediaType string, ann map[string]string) error {
	d, err := parseDigestRef(ref)
	if err != nil {
		return err
	}
	tag := d.Context().Tag(strings.Replace(d.DigestStr(), ":", "-", 1) + suffix)
	opts := append(options(reg), remote.WithContext(ctx))
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	if img, err := remote.Image(tag, opts...); err == nil {
		base = img
	} else {
		var te *transport.Error
		if !errors.As(err, &te) || te.StatusCode != http.StatusNotFound {
			return fmt.Errorf("sigtest: read %s: %w", tag, err)
		}
	}
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:       static.NewLayer(content, types.MediaType(mediaType)),
		Annotations: ann,
		MediaType:   types.MediaType(mediaType),
	})
	if err != nil {
		return err
	}
	if err := remote.Write(tag, img, opts...); err != nil {
		return fmt.Errorf("sigtest: push %s: %w", tag, err)
	}
	return nil
}
