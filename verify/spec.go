package verify

import (
	"net/http"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/rs/zerolog"
)

// PolicySpec is one verification policy as the config file states it. It is
// plain data: New validates and compiles it once.
type PolicySpec struct {
	// Name identifies the policy in verdicts, errors and logs.
	Name string
	// Images are glob patterns on the normalized repository
	// ("ghcr.io/org/*", "127.0.0.1:*/demo/**"): "*" matches within one path
	// segment, "**" across segments, "?" one character. A pattern without a
	// registry ("nginx", "org/app") is normalized as Docker does
	// ("docker.io/library/nginx"). The first policy with a matching pattern
	// wins.
	Images []string
	// Mode is "enforce" (the default) or "warn": in warn mode the verdict is
	// computed and reported, but a blocked verdict is still deployable
	// (Verdict.Deployable). Undecided never is.
	Mode string
	// AllowUnsigned lets matching images run without a signature. It must be
	// spelled out and cannot be combined with Authorities; New reports it in
	// Warnings so the agent logs it loudly at start-up. Attestation, scan and
	// provenance rules still apply.
	AllowUnsigned bool
	// Authorities may sign the image (any one of them is enough).
	Authorities []AuthoritySpec
	// Attestations must all be present, each signed by one of its authorities.
	Attestations []AttestationSpec
	// Scan, when set, requires a vulnerability scan that passes its rules.
	Scan *ScanSpec
	// Provenance, when set, requires a SLSA v1 provenance attestation with
	// the given builder id.
	Provenance *ProvenanceSpec
	// PlatformSignatures also accepts, for a multi-platform index, evidence
	// attached to each platform manifest that runs here (Options.Platforms)
	// when the index itself has none.
	PlatformSignatures bool
}

// AuthoritySpec is one trusted signer: a public key (Key or KeyFile) or a
// keyless (Fulcio certificate) identity.
type AuthoritySpec struct {
	// Name identifies the authority in verdicts ("release-key"); defaults to
	// "<rule>[i]".
	Name string
	// Key is a PEM public key (ECDSA, RSA or Ed25519), the content itself.
	Key string
	// KeyFile is a path to a PEM public key, read once by New.
	KeyFile string
	// Keyless trusts certificates issued by a Fulcio CA to an identity.
	Keyless *KeylessSpec
}

// KeylessSpec is a Fulcio certificate identity and the trust material that
// proves it.
type KeylessSpec struct {
	// Issuer or IssuerRegex must match the certificate's OIDC issuer.
	Issuer, IssuerRegex string
	// Subject or SubjectRegex must match the certificate's subject
	// alternative name (email, URI). Regexes must match the whole value.
	Subject, SubjectRegex string
	// TrustedRootFile is a sigstore trusted_root.json (Fulcio CAs, Rekor
	// and CT log keys, timestamp authorities), read once by New, so that
	// verification works offline and air-gapped. Required.
	TrustedRootFile string
	// RequireTlog requires a transparency-log (Rekor) entry whose signed
	// timestamp proves when the certificate was used. Nil means true.
	RequireTlog *bool
	// RequireTimestamp requires an RFC 3161 signed timestamp from a trusted
	// timestamp authority.
	RequireTimestamp bool
}

// AttestationSpec requires an in-toto attestation of PredicateType about the
// image digest, signed by one of Authorities.
type AttestationSpec struct {
	PredicateType string
	Authorities   []AuthoritySpec
}

// ScanSpec states what vulnerability scan an image needs.
type ScanSpec struct {
	// Authorities are the trusted scanners that sign vulnerability
	// attestations (predicate https://cosign.sigstore.dev/attestation/vuln/v1
	// or https://in-toto.io/attestation/vulns/v0.2). Required unless Source
	// is "harbor".
	Authorities []AuthoritySpec
	// MaxSeverity is the highest severity allowed: "none" (the default),
	// "low", "medium", "high" or "critical".
	MaxSeverity string
	// MaxAge is how old the newest scan may be (default 168h).
	MaxAge time.Duration
	// IgnoreCVEs are vulnerability ids that never count.
	IgnoreCVEs []string
	// Missing says what happens when there is no usable scan: "block" (the
	// default, decided no) or "wait" (undecided: retried later, never
	// deployed).
	Missing string
	// Source is where scans come from: "attestation" (the default) or
	// "harbor" (the registry's Harbor scan overview API).
	Source string
	// HarborURL is Harbor's base URL for Source "harbor"; the default is
	// https://<registry host>. Credentials come from Options.Keychain.
	HarborURL string
}

// ProvenanceSpec requires a SLSA v1 provenance attestation
// (https://slsa.dev/provenance/v1) whose runDetails.builder.id equals
// BuilderID, signed by one of Authorities.
type ProvenanceSpec struct {
	BuilderID   string
	Authorities []AuthoritySpec
}

// Options configures a Verifier.
type Options struct {
	// Policies are evaluated in order; the first whose Images match wins.
	Policies []PolicySpec
	// Keychain resolves registry credentials (default: the Docker
	// config.json and its credential helpers).
	Keychain authn.Keychain
	// Transport is the HTTP transport to registries (tests inject one; the
	// agent passes one that trusts the configured registries' CA files).
	Transport http.RoundTripper
	// InsecureRegistries are registry hosts reached over plain HTTP
	// (loopback registries always are, as Docker does).
	InsecureRegistries []string
	// Logger receives debug logs of discovery; the default discards them.
	Logger zerolog.Logger
	// Now is the clock for scan age (default time.Now).
	Now func() time.Time
	// Platforms are the platforms that run here ("linux/amd64"), used with
	// PolicySpec.PlatformSignatures (default: linux/<GOARCH>).
	Platforms []string
	// Cache keeps verified evidence across Verifiers, for example across a
	// configuration reload; nil gives the Verifier a cache of its own.
	Cache *Cache
}
