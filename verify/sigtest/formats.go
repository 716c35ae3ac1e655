package sigtest

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"strings"

	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protodsse "github.com/sigstore/protobuf-specs/gen/pb-go/dsse"
	protorekor "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
	"google.golang.org/protobuf/encoding/protojson"
)

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
