// Package sigtest signs and attests images in a test registry the way cosign
// does, with real cryptography: keys generated in the test, or keyless
// identities of sigstore-go's virtual Sigstore (fake Fulcio, Rekor and
// timestamp authority). Signatures are written as sigstore bundles in OCI 1.1
// referrers (what cosign v3 writes) or as legacy cosign ".sig"/".att" tags.
// It is for tests of shipwatch and of programs using its verify package.
package sigtest

import (
	"crypto/x509"
	"net/http"

	"github.com/google/go-containerregistry/pkg/authn"
	protorekor "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
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
