package verify

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"time"

	"github.com/sigstore/sigstore-go/pkg/root"
	sgverify "github.com/sigstore/sigstore-go/pkg/verify"
	"github.com/sigstore/sigstore/pkg/signature"
)

// maxTrustFileSize bounds key and trusted-root files read at start-up.
const maxTrustFileSize = 4 << 20

// authority is a compiled AuthoritySpec: a sigstore-go verifier and the
// policy (key or certificate identity) every signature must meet.
type authority struct {
	name string
	// describe is the authority's trust anchor for messages: "key
	// sha256:…" or "subject … issuer …" (the pattern, not a match).
	describe string
	// trust is a digest of everything the authority trusts (key bytes,
	// trusted root, identity), part of the cache key.
	trust    string
	keyless  bool
	verifier *sgverify.Verifier
	policy   sgverify.PolicyOption
}

// compileAuthority validates spec and builds its verifier; where names the
// policy and rule for errors ("policy \"prod\" signature authority \"ci\"").
func compileAuthority(spec AuthoritySpec, where string) (*authority, error) {
	n := 0
	for _, set := range []bool{spec.Key != "", spec.KeyFile != "", spec.Keyless != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return nil, fmt.Errorf("%s: set exactly one of key, keyFile and keyless (got %d)", where, n)
	}
	if spec.Keyless != nil {
		return compileKeyless(spec.Name, *spec.Keyless, where)
	}
	pemBytes := []byte(spec.Key)
	field := "key"
	if spec.KeyFile != "" {
		field = "keyFile"
		b, err := readBounded(spec.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%s: keyFile: %w", where, err)
		}
		pemBytes = b
	}
	pub, err := parsePublicKeyPEM(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", where, field, err)
	}
	return compileKey(spec.Name, pub, where)
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxTrustFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxTrustFileSize {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxTrustFileSize)
	}
	return b, nil
}

// parsePublicKeyPEM reads exactly one PEM public key: PKIX "PUBLIC KEY"
// (ECDSA, RSA, Ed25519) or PKCS#1 "RSA PUBLIC KEY".
func parsePublicKeyPEM(b []byte) (crypto.PublicKey, error) {
	block, rest := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM block found; want a PEM public key (-----BEGIN PUBLIC KEY-----)")
	}
	if extra, _ := pem.Decode(rest); extra != nil {
		return nil, errors.New("more than one PEM block; give one key per authority")
	}
	var pub crypto.PublicKey
	var err error
	switch block.Type {
	case "PUBLIC KEY":
		pub, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		pub, err = x509.ParsePKCS1PublicKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a public key; want PUBLIC KEY (never give a private key)", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse public key: %w", err)
	}
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
		default:
			return nil, fmt.Errorf("unsupported ECDSA curve %s", k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("RSA key of %d bits is too small (want at least 2048)", k.N.BitLen())
		}
	case ed25519.PublicKey:
	default:
		return nil, fmt.Errorf("unsupported public key type %T (want ECDSA, RSA or Ed25519)", pub)
	}
	return pub, nil
}

// KeyFingerprint is "sha256:" and the hex SHA-256 of the key's PKIX DER
// encoding, the key identity shown in verdicts (first 16 hex digits).
func KeyFingerprint(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

func compileKey(name string, pub crypto.PublicKey, where string) (*authority, error) {
	fp, err := KeyFingerprint(pub)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	kv, err := newKeyVerifier(pub)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	// The bundle's key hint is not trusted: every hint resolves to the one
	// key of this authority, and the signature decides.
	tm := root.NewTrustedPublicKeyMaterial(func(string) (root.TimeConstrainedVerifier, error) { return kv, nil })
	// A key does not expire and proves no time: no timestamps needed. (Rekor
	// entries of keyed signatures are not required; see docs/verify.md.)
	v, err := sgverify.NewVerifier(tm, sgverify.WithNoObserverTimestamps(), sgverify.WithoutStatementPredicate())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	return &authority{
		name:     name,
		describe: "key " + shortFingerprint(fp),
		trust:    "key:" + fp,
		verifier: v,
		policy:   sgverify.WithKey(),
	}, nil
}

func shortFingerprint(fp string) string {
	if len(fp) > len("sha256:")+16 {
		return fp[:len("sha256:")+16]
	}
	return fp
}

func compileKeyless(name string, spec KeylessSpec, where string) (*authority, error) {
	if spec.Issuer == "" && spec.IssuerRegex == "" {
		return nil, fmt.Errorf("%s: keyless: set issuer or issuerRegex (the OIDC issuer of the signer's certificate)", where)
	}
	if spec.Subject == "" && spec.SubjectRegex == "" {
		return nil, fmt.Errorf("%s: keyless: set subject or subjectRegex (the identity in the signer's certificate)", where)
	}
	issuerRe, err := anchored(spec.IssuerRegex)
	if err != nil {
		return nil, fmt.Errorf("%s: keyless: issuerRegex %q: %w", where, spec.IssuerRegex, err)
	}
	subjectRe, err := anchored(spec.SubjectRegex)
	if err != nil {
		return nil, fmt.Errorf("%s: keyless: subjectRegex %q: %w", where, spec.SubjectRegex, err)
	}
	if spec.TrustedRootFile == "" {
		return nil, fmt.Errorf("%s: keyless: trustedRootFile is required (a sigstore trusted_root.json; see docs/verify.md)", where)
	}
	rootJSON, err := readBounded(spec.TrustedRootFile)
	if err != nil {
		return nil, fmt.Errorf("%s: keyless: trustedRootFile: %w", where, err)
	}
	tr, err := root.NewTrustedRootFromJSON(rootJSON)
	if err != nil {
		return nil, fmt.Errorf("%s: keyless: trustedRootFile %s: not a valid sigstore trusted root: %w", where, spec.TrustedRootFile, err)
	}
	if len(tr.FulcioCertificateAuthorities()) == 0 {
		return nil, fmt.Errorf("%s: keyless: trustedRootFile %s lists no certificate authority", where, spec.TrustedRootFile)
	}
	requireTlog := spec.RequireTlog == nil || *spec.RequireTlog
	var opts []sgverify.VerifierOption
	if requireTlog {
		if len(tr.RekorLogs()) == 0 {
			return nil, fmt.Errorf("%s: keyless: requireTlog needs a transparency log in trustedRootFile %s", where, spec.TrustedRootFile)
		}
		opts = append(opts, sgverify.WithTransparencyLog(1), sgverify.WithObserverTimestamps(1))
	}
	if spec.RequireTimestamp {
		if len(tr.TimestampingAuthorities()) == 0 {
			return nil, fmt.Errorf("%s: keyless: requireTimestamp needs a timestamp authority in trustedRootFile %s", where, spec.TrustedRootFile)
		}
		opts = append(opts, sgverify.WithSignedTimestamps(1))
	}
	if !requireTlog && !spec.RequireTimestamp {
		return nil, fmt.Errorf("%s: keyless: requireTlog is false and requireTimestamp is not set: nothing would prove the short-lived certificate was valid when it signed", where)
	}
	// Certificates from a CA whose trusted root lists CT logs (the public
	// Sigstore instance) must carry a verified SCT, as cosign requires.
	if len(tr.CTLogs()) > 0 {
		opts = append(opts, sgverify.WithSignedCertificateTimestamps(1))
	}
	opts = append(opts, sgverify.WithoutStatementPredicate())
	v, err := sgverify.NewVerifier(tr, opts...)
	if err != nil {
		return nil, fmt.Errorf("%s: keyless: %w", where, err)
	}
	id, err := sgverify.NewShortCertificateIdentity(spec.Issuer, issuerRe, spec.Subject, subjectRe)
	if err != nil {
		return nil, fmt.Errorf("%s: keyless: %w", where, err)
	}
	sum := sha256.New()
	fmt.Fprintf(sum, "%q %q %q %q %v %v\n", spec.Issuer, issuerRe, spec.Subject, subjectRe, requireTlog, spec.RequireTimestamp)
	sum.Write(rootJSON)
	return &authority{
		name:     name,
		describe: describeIdentity(spec),
		trust:    "keyless:" + hex.EncodeToString(sum.Sum(nil)),
		keyless:  true,
		verifier: v,
		policy:   sgverify.WithCertificateIdentity(id),
	}, nil
}

// anchored makes a user regex match the whole value: an unanchored
// "https://github.com/org/.*" would also match a subject that merely
// contains it.
func anchored(re string) (string, error) {
	if re == "" {
		return "", nil
	}
	if _, err := regexp.Compile(re); err != nil {
		return "", err
	}
	return "^(?:" + re + ")$", nil
}

func describeIdentity(spec KeylessSpec) string {
	subject := spec.Subject
	if subject == "" {
		subject = "~" + spec.SubjectRegex
	}
	issuer := spec.Issuer
	if issuer == "" {
		issuer = "~" + spec.IssuerRegex
	}
	return "subject " + subject + " issuer " + issuer
}

// verifyEntity checks ent against the authority. artifact is the signed
// artifact (a message signature's payload) or the image digest (an in-toto
// statement's subject). It returns the signer's identity on success.
func (a *authority) verifyEntity(ent sgverify.SignedEntity, artifact sgverify.ArtifactPolicyOption) (string, error) {
	res, err := a.verifier.Verify(ent, sgverify.NewPolicy(artifact, a.policy))
	if err != nil {
		return "", err
	}
	if a.keyless && res.Signature != nil && res.Signature.Certificate != nil {
		c := res.Signature.Certificate
		return fmt.Sprintf("subject %s issuer %s", c.SubjectAlternativeName, c.Issuer), nil
	}
	return a.describe, nil
}

// keyVerifier verifies with one public key. ECDSA keys on P-384/P-521 also
// accept SHA-256 digests, because cosign signs with SHA-256 whatever the
// curve.
type keyVerifier struct {
	pub       crypto.PublicKey
	verifiers []signature.Verifier
}

var _ root.TimeConstrainedVerifier = (*keyVerifier)(nil)

func newKeyVerifier(pub crypto.PublicKey) (*keyVerifier, error) {
	kv := &keyVerifier{pub: pub}
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		v, err := signature.LoadECDSAVerifier(k, crypto.SHA256)
		if err != nil {
			return nil, err
		}
		kv.verifiers = append(kv.verifiers, v)
		if k.Curve != elliptic.P256() {
			d, err := signature.LoadDefaultVerifier(k)
			if err != nil {
				return nil, err
			}
			kv.verifiers = append(kv.verifiers, d)
		}
	case *rsa.PublicKey:
		v, err := signature.LoadRSAPKCS1v15Verifier(k, crypto.SHA256)
		if err != nil {
			return nil, err
		}
		kv.verifiers = append(kv.verifiers, v)
	case ed25519.PublicKey:
		v, err := signature.LoadED25519Verifier(k)
		if err != nil {
			return nil, err
		}
		kv.verifiers = append(kv.verifiers, v)
	default:
		return nil, fmt.Errorf("unsupported public key type %T", pub)
	}
	return kv, nil
}

func (k *keyVerifier) ValidAtTime(time.Time) bool { return true }

func (k *keyVerifier) PublicKey(...signature.PublicKeyOption) (crypto.PublicKey, error) {
	return k.pub, nil
}

// maxSignedMessage bounds what a key verifier reads: the signed messages
// here are DSSE pre-authentication encodings and simple-signing payloads,
// themselves bounded by the blob limit.
const maxSignedMessage = maxBlobSize + 4096

func (k *keyVerifier) VerifySignature(sig, msg io.Reader, opts ...signature.VerifyOption) error {
	sigBytes, err := io.ReadAll(io.LimitReader(sig, 64<<10))
	if err != nil {
		return err
	}
	var msgBytes []byte
	if msg != nil {
		if msgBytes, err = io.ReadAll(io.LimitReader(msg, maxSignedMessage)); err != nil {
			return err
		}
	}
	var errs []error
	for _, v := range k.verifiers {
		err := v.VerifySignature(bytes.NewReader(sigBytes), bytes.NewReader(msgBytes), opts...)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("signature does not verify with the authority's key: %w", errors.Join(errs...))
}
