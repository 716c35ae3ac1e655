package verify_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/shipwatch/shipwatch/imageref"
	"github.com/shipwatch/shipwatch/internal/testenv"
	"github.com/shipwatch/shipwatch/verify"
	"github.com/shipwatch/shipwatch/verify/sigtest"
)

const (
	ciSubject = "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1.0.0"
	ciIssuer  = "https://token.actions.githubusercontent.com"
)

func keylessAuthority(t *testing.T, ss *sigtest.Sigstore, spec verify.KeylessSpec) verify.AuthoritySpec {
	t.Helper()
	p, err := ss.WriteTrustedRoot(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	spec.TrustedRootFile = p
	return verify.AuthoritySpec{Name: "ci", Keyless: &spec}
}

func no() *bool { b := false; return &b }

func TestKeylessSignatures(t *testing.T) {
	ss := sigtest.MustSigstore(t)
	ci := ss.Identity(ciSubject, ciIssuer)
	exact := verify.KeylessSpec{Subject: ciSubject, Issuer: ciIssuer}
	tests := []struct {
		name   string
		signer sigtest.Signer
		spec   verify.KeylessSpec
		want   verify.Decision
		frag   string
	}{
		{"exact identity", ci, exact, verify.Allowed, "subject " + ciSubject + " issuer " + ciIssuer},
		{"subject regex", ci, verify.KeylessSpec{SubjectRegex: `https://github\.com/acme/.*`, Issuer: ciIssuer}, verify.Allowed, "signed by ci"},
		{"issuer regex", ci, verify.KeylessSpec{Subject: ciSubject, IssuerRegex: `https://token\.actions\.githubusercontent\.com`}, verify.Allowed, "signed by ci"},
		{"with signed timestamp", ci, verify.KeylessSpec{Subject: ciSubject, Issuer: ciIssuer, RequireTimestamp: true}, verify.Allowed, "signed by ci"},
		{"timestamp only, no tlog", ci, verify.KeylessSpec{Subject: ciSubject, Issuer: ciIssuer, RequireTimestamp: true, RequireTlog: no()}, verify.Allowed, "signed by ci"},
		{"wrong subject", ss.Identity("https://github.com/evil/app/.github/workflows/release.yml@refs/heads/main", ciIssuer), exact, verify.Blocked, "SAN"},
		{"wrong issuer", ss.Identity(ciSubject, "https://accounts.google.com"), exact, verify.Blocked, "issuer"},
		{"regex must match the whole subject", ss.Identity("https://evil.example/?https://github.com/acme/x", ciIssuer), verify.KeylessSpec{SubjectRegex: `https://github\.com/acme/.*`, Issuer: ciIssuer}, verify.Blocked, "SAN"},
		{"other Sigstore deployment", sigtest.MustSigstore(t).Identity(ciSubject, ciIssuer), exact, verify.Blocked, "rejected"},
	}
	for _, tc := range tests {
		for _, format := range []sigtest.Format{sigtest.Bundle, sigtest.Legacy} {
			t.Run(tc.name+"/"+string(format), func(t *testing.T) {
				reg := testenv.NewRegistry(t, testenv.WithReferrersAPI())
				img := pushRandom(t, reg, "demo/app:1.0")
				sigtest.MustSign(t, reg, digestRef(img), tc.signer, format)
				v := newVerifier(t, reg, imagePolicy(reg, keylessAuthority(t, ss, tc.spec)))
				vd := v.Verify(ctx(t), img)
				wantDecision(t, vd, tc.want, tc.frag)
				if tc.want == verify.Allowed && vd.Signer != "ci (subject "+ciSubject+" issuer "+ciIssuer+")" {
					t.Errorf("signer: got %q, want the certificate identity", vd.Signer)
				}
			})
		}
	}
}

func TestKeylessTransparencyLog(t *testing.T) {
	ss := sigtest.MustSigstore(t)
	ci := ss.Identity(ciSubject, ciIssuer)
	bg := context.Background()
	tests := []struct {
		name  string
		setup func(t *testing.T, reg *testenv.Registry, img imageref.Ref)
		want  verify.Decision
		frag  string
	}{
		{"rekor entry of another signing", func(t *testing.T, reg *testenv.Registry, img imageref.Ref) {
			payload, ann, err := sigtest.LegacySignatureLayer(ci, img.Repo(), img.Digest)
			if err != nil {
				t.Fatal(err)
			}
			_, other, err := sigtest.LegacySignatureLayer(ci, img.Repo(), img.Digest)
			if err != nil {
				t.Fatal(err)
			}
			ann[sigtest.AnnBundle] = other[sigtest.AnnBundle]
			if err := sigtest.AppendLegacyLayer(bg, reg, digestRef(img), ".sig", payload, sigtest.MediaSimpleSigning, ann); err != nil {
				t.Fatal(err)
			}
		}, verify.Blocked, "transparency log"},
		{"rekor entry of another signing (bundle)", func(t *testing.T, reg *testenv.Registry, img imageref.Ref) {
			st, err := sigtest.Statement(img.Digest, sigtest.PredicateCosignSign, nil)
			if err != nil {
				t.Fatal(err)
			}
			mine, err := sigtest.BundleJSON(ci, st)
			if err != nil {
				t.Fatal(err)
			}
			theirs, err := sigtest.BundleJSON(ci, st)
			if err != nil {
				t.Fatal(err)
			}
			var a, b map[string]any
			if err := json.Unmarshal(mine, &a); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(theirs, &b); err != nil {
				t.Fatal(err)
			}
			a["verificationMaterial"].(map[string]any)["tlogEntries"] = b["verificationMaterial"].(map[string]any)["tlogEntries"]
			swapped, err := json.Marshal(a)
			if err != nil {
				t.Fatal(err)
			}
			if err := sigtest.PushBundle(bg, reg, digestRef(img), swapped, sigtest.PredicateCosignSign); err != nil {
				t.Fatal(err)
			}
		}, verify.Blocked, "transparency log"},
		{"no rekor entry", func(t *testing.T, reg *testenv.Registry, img imageref.Ref) {
			payload, ann, err := sigtest.LegacySignatureLayer(ci, img.Repo(), img.Digest)
			if err != nil {
				t.Fatal(err)
			}
			delete(ann, sigtest.AnnBundle)
			if err := sigtest.AppendLegacyLayer(bg, reg, digestRef(img), ".sig", payload, sigtest.MediaSimpleSigning, ann); err != nil {
				t.Fatal(err)
			}
		}, verify.Blocked, "log"},
		{"timestamp required but missing", func(t *testing.T, reg *testenv.Registry, img imageref.Ref) {
			payload, ann, err := sigtest.LegacySignatureLayer(ci, img.Repo(), img.Digest)
			if err != nil {
				t.Fatal(err)
			}
			delete(ann, sigtest.AnnTimestamp)
			if err := sigtest.AppendLegacyLayer(bg, reg, digestRef(img), ".sig", payload, sigtest.MediaSimpleSigning, ann); err != nil {
				t.Fatal(err)
			}
		}, verify.Blocked, "timestamp"},
		{"rekor entry and certificate of the same signing", func(t *testing.T, reg *testenv.Registry, img imageref.Ref) {
			sigtest.MustSign(t, reg, digestRef(img), ci, sigtest.Legacy)
		}, verify.Allowed, "signed by ci"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg := testenv.NewRegistry(t)
			img := pushRandom(t, reg, "demo/app:1.0")
			tc.setup(t, reg, img)
			spec := verify.KeylessSpec{Subject: ciSubject, Issuer: ciIssuer, RequireTimestamp: true}
			v := newVerifier(t, reg, imagePolicy(reg, keylessAuthority(t, ss, spec)))
			wantDecision(t, v.Verify(ctx(t), img), tc.want, tc.frag)
		})
	}
}

// TestKeylessAttestations: a keyless scanner identity attests scans in both
// formats; another identity of the same Sigstore is not trusted for scans.
func TestKeylessAttestations(t *testing.T) {
	ss := sigtest.MustSigstore(t)
	release := sigtest.MustKey(t, "")
	const scannerSubject = "https://github.com/acme/app/.github/workflows/scan.yml@refs/heads/main"
	for _, tc := range []struct {
		name   string
		signer *sigtest.Identity
		want   verify.Decision
		frag   string
	}{
		{"trusted scanner identity", ss.Identity(scannerSubject, ciIssuer), verify.Allowed, "scanned by"},
		{"release workflow is not the scanner", ss.Identity(ciSubject, ciIssuer), verify.Blocked, "SAN"},
	} {
		for _, format := range []sigtest.Format{sigtest.Bundle, sigtest.Legacy} {
			t.Run(tc.name+"/"+string(format), func(t *testing.T) {
				reg := testenv.NewRegistry(t)
				img := pushRandom(t, reg, "demo/app:1.0")
				sigtest.MustSign(t, reg, digestRef(img), release, format)
				if err := sigtest.AttestVuln(context.Background(), reg, digestRef(img), tc.signer, format, sigtest.Scan{FinishedAt: time.Now()}); err != nil {
					t.Fatal(err)
				}
				scanner := keylessAuthority(t, ss, verify.KeylessSpec{Subject: scannerSubject, Issuer: ciIssuer, RequireTimestamp: true})
				scanner.Name = "scanner"
				p := imagePolicy(reg, keyAuthority("release", release))
				p.Scan = &verify.ScanSpec{Authorities: []verify.AuthoritySpec{scanner}}
				vd := newVerifier(t, reg, p).Verify(ctx(t), img)
				wantDecision(t, vd, tc.want, tc.frag)
				if tc.want == verify.Allowed && (vd.Scan == nil || vd.Scan.Authority != "scanner") {
					t.Errorf("scan authority: got %+v, want scanner", vd.Scan)
				}
			})
		}
	}
}
