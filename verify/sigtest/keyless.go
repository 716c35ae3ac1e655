package sigtest

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	protorekor "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/testing/ca"
	"github.com/sigstore/sigstore-go/pkg/tlog"
)

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
