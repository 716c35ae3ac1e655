package verify_test

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shipwatch/shipwatch/imageref"
	"github.com/shipwatch/shipwatch/internal/testenv"
	"github.com/shipwatch/shipwatch/verify"
	"github.com/shipwatch/shipwatch/verify/sigtest"
)

func TestNewRejectsBadPolicies(t *testing.T) {
	key := sigtest.MustKey(t, "")
	dir := t.TempDir()
	badRoot := filepath.Join(dir, "bad_root.json")
	if err := os.WriteFile(badRoot, []byte(`{"mediaType": "nope"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	goodRoot, err := sigtest.MustSigstore(t).WriteTrustedRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	ok := verify.AuthoritySpec{Name: "release", Key: key.PublicKeyPEM()}
	base := func(mod func(p *verify.PolicySpec)) []verify.PolicySpec {
		p := verify.PolicySpec{Name: "prod", Images: []string{"ghcr.io/acme/*"}, Authorities: []verify.AuthoritySpec{ok}}
		mod(&p)
		return []verify.PolicySpec{p}
	}
	keyless := func(mod func(k *verify.KeylessSpec)) []verify.AuthoritySpec {
		k := verify.KeylessSpec{Subject: "a@example.com", Issuer: "https://issuer.example", TrustedRootFile: goodRoot}
		mod(&k)
		return []verify.AuthoritySpec{{Name: "ci", Keyless: &k}}
	}
	tests := []struct {
		name     string
		policies []verify.PolicySpec
		want     []string // fragments of the error
	}{
		{"missing name", []verify.PolicySpec{{Images: []string{"x/*"}, Authorities: []verify.AuthoritySpec{ok}}}, []string{"policies[0]: name is required"}},
		{"duplicate name", append(base(func(*verify.PolicySpec) {}), base(func(*verify.PolicySpec) {})...), []string{`policies[1]: name "prod" is used twice`}},
		{"no images", base(func(p *verify.PolicySpec) { p.Images = nil }), []string{`policy "prod": images`}},
		{"digest in pattern", base(func(p *verify.PolicySpec) { p.Images = []string{"ghcr.io/acme/app@sha256:abc"} }), []string{`policy "prod": images[0]`}},
		{"bad mode", base(func(p *verify.PolicySpec) { p.Mode = "audit" }), []string{`policy "prod": mode "audit"`}},
		{"no authorities", base(func(p *verify.PolicySpec) { p.Authorities = nil }), []string{`policy "prod": authorities`, "allowUnsigned"}},
		{"allowUnsigned with authorities", base(func(p *verify.PolicySpec) { p.AllowUnsigned = true }), []string{"allowUnsigned and authorities exclude each other"}},
		{"bad PEM", base(func(p *verify.PolicySpec) {
			p.Authorities[0].Key = "-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n"
		}), []string{`policy "prod": authorities[0] ("release"): key`}},
		{"not PEM", base(func(p *verify.PolicySpec) { p.Authorities[0].Key = "hello" }), []string{`authorities[0] ("release"): key: no PEM block`}},
		{"private key", base(func(p *verify.PolicySpec) { p.Authorities[0].Key = key.PrivateKeyPEM() }), []string{"never give a private key"}},
		{"key and keyFile", base(func(p *verify.PolicySpec) { p.Authorities[0].KeyFile = "/x.pub" }), []string{"set exactly one of key, keyFile and keyless"}},
		{"missing keyFile", base(func(p *verify.PolicySpec) {
			p.Authorities[0] = verify.AuthoritySpec{Name: "f", KeyFile: filepath.Join(dir, "nope.pub")}
		}), []string{`authorities[0] ("f"): keyFile`, "no such file"}},
		{"keyless without issuer", base(func(p *verify.PolicySpec) { p.Authorities = keyless(func(k *verify.KeylessSpec) { k.Issuer = "" }) }), []string{`authorities[0] ("ci"): keyless: set issuer or issuerRegex`}},
		{"keyless without subject", base(func(p *verify.PolicySpec) { p.Authorities = keyless(func(k *verify.KeylessSpec) { k.Subject = "" }) }), []string{"set subject or subjectRegex"}},
		{"keyless bad regex", base(func(p *verify.PolicySpec) {
			p.Authorities = keyless(func(k *verify.KeylessSpec) { k.Subject, k.SubjectRegex = "", "([a-z" })
		}), []string{`keyless: subjectRegex "([a-z"`}},
		{"keyless without trusted root", base(func(p *verify.PolicySpec) {
			p.Authorities = keyless(func(k *verify.KeylessSpec) { k.TrustedRootFile = "" })
		}), []string{"trustedRootFile is required"}},
		{"keyless unreadable trusted root", base(func(p *verify.PolicySpec) {
			p.Authorities = keyless(func(k *verify.KeylessSpec) { k.TrustedRootFile = filepath.Join(dir, "missing.json") })
		}), []string{"keyless: trustedRootFile", "no such file"}},
		{"keyless invalid trusted root", base(func(p *verify.PolicySpec) {
			p.Authorities = keyless(func(k *verify.KeylessSpec) { k.TrustedRootFile = badRoot })
		}), []string{"not a valid sigstore trusted root"}},
		{"keyless proving no time", base(func(p *verify.PolicySpec) {
			p.Authorities = keyless(func(k *verify.KeylessSpec) { k.RequireTlog = no() })
		}), []string{"nothing would prove"}},
		{"attestation without type", base(func(p *verify.PolicySpec) {
			p.Attestations = []verify.AttestationSpec{{Authorities: []verify.AuthoritySpec{ok}}}
		}), []string{"attestations[0].predicateType: is required"}},
		{"attestation of the signature type", base(func(p *verify.PolicySpec) {
			p.Attestations = []verify.AttestationSpec{{PredicateType: verify.PredicateCosignSign, Authorities: []verify.AuthoritySpec{ok}}}
		}), []string{"is a signature, not an attestation"}},
		{"attestation without authorities", base(func(p *verify.PolicySpec) { p.Attestations = []verify.AttestationSpec{{PredicateType: "https://x/v1"}} }), []string{"attestations[0].authorities: at least one authority"}},
		{"scan bad severity", base(func(p *verify.PolicySpec) {
			p.Scan = &verify.ScanSpec{Authorities: []verify.AuthoritySpec{ok}, MaxSeverity: "severe"}
		}), []string{`scan.maxSeverity "severe"`}},
		{"scan bad missing", base(func(p *verify.PolicySpec) {
			p.Scan = &verify.ScanSpec{Authorities: []verify.AuthoritySpec{ok}, Missing: "skip"}
		}), []string{`scan.missing "skip"`}},
		{"scan without authorities", base(func(p *verify.PolicySpec) { p.Scan = &verify.ScanSpec{} }), []string{"scan.authorities: at least one authority"}},
		{"scan negative age", base(func(p *verify.PolicySpec) {
			p.Scan = &verify.ScanSpec{Authorities: []verify.AuthoritySpec{ok}, MaxAge: -1}
		}), []string{"scan.maxAge -1ns is negative"}},
		{"harbor with authorities", base(func(p *verify.PolicySpec) {
			p.Scan = &verify.ScanSpec{Source: "harbor", Authorities: []verify.AuthoritySpec{ok}}
		}), []string{"not to source harbor"}},
		{"harbor bad URL", base(func(p *verify.PolicySpec) { p.Scan = &verify.ScanSpec{Source: "harbor", HarborURL: "ftp://x"} }), []string{`scan.harborURL "ftp://x"`}},
		{"provenance without builder", base(func(p *verify.PolicySpec) {
			p.Provenance = &verify.ProvenanceSpec{Authorities: []verify.AuthoritySpec{ok}}
		}), []string{"provenance.builderID is required"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := verify.New(verify.Options{Policies: tc.policies})
			if err == nil {
				t.Fatalf("New: got no error, want one mentioning %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("New: got %q, want a mention of %q", err, w)
				}
			}
		})
	}
}

func TestKeyFileAuthority(t *testing.T) {
	key := sigtest.MustKey(t, "rsa-2048")
	path, err := key.WritePublicKey(t.TempDir(), "cosign.pub")
	if err != nil {
		t.Fatal(err)
	}
	reg := testenv.NewRegistry(t)
	img := pushRandom(t, reg, "demo/app:1.0")
	sigtest.MustSign(t, reg, digestRef(img), key, sigtest.Legacy)
	v := newVerifier(t, reg, imagePolicy(reg, verify.AuthoritySpec{Name: "file", KeyFile: path}))
	wantDecision(t, v.Verify(ctx(t), img), verify.Allowed, "signed by file (key sha256:")
}

func TestWarningsAndModes(t *testing.T) {
	key := sigtest.MustKey(t, "")
	reg := testenv.NewRegistry(t)
	unsigned := pushRandom(t, reg, "public/tool:1.0")
	audited := pushRandom(t, reg, "audited/app:1.0")
	v := newVerifier(t, reg,
		verify.PolicySpec{Name: "public", Images: []string{reg.Host + "/public/*"}, AllowUnsigned: true},
		verify.PolicySpec{Name: "audit", Images: []string{reg.Host + "/audited/**"}, Mode: "warn", Authorities: []verify.AuthoritySpec{keyAuthority("release", key)}},
	)
	warnings := strings.Join(v.Warnings(), "\n")
	for _, w := range []string{`policy "public" allows unsigned images for ` + reg.Host + "/public/*", `policy "audit" is in warn mode`} {
		if !strings.Contains(warnings, w) {
			t.Errorf("warnings: got %q, want %q", warnings, w)
		}
	}

	reg.Reset()
	vd := v.Verify(ctx(t), unsigned)
	wantDecision(t, vd, verify.Allowed, "not required: policy public allows unsigned images")
	if n := reg.Count("", ""); n != 0 {
		t.Errorf("allowUnsigned: got %d registry requests, want 0", n)
	}

	vd = v.Verify(ctx(t), audited)
	wantDecision(t, vd, verify.Blocked, "no signature")
	if vd.Mode != verify.ModeWarn || !vd.Deployable() {
		t.Errorf("warn mode: got mode %q deployable %v, want warn and deployable", vd.Mode, vd.Deployable())
	}
	if !strings.Contains(vd.Summary(), "warn mode: not enforced") {
		t.Errorf("summary: got %q, want it to say the verdict is not enforced", vd.Summary())
	}
}

func TestPolicyPatterns(t *testing.T) {
	key := sigtest.MustKey(t, "")
	auth := []verify.AuthoritySpec{keyAuthority("k", key)}
	// Matching is what is tested: registries are never reached.
	offline := roundTripFunc(func(*http.Request) (*http.Response, error) { return nil, errors.New("offline test") })
	v, err := verify.New(verify.Options{Transport: offline, Policies: []verify.PolicySpec{
		{Name: "acme", Images: []string{"ghcr.io/acme/*"}, Authorities: auth},
		{Name: "loopback", Images: []string{"127.0.0.1:*/demo/**"}, Authorities: auth},
		{Name: "hub", Images: []string{"nginx", "bitnami/*"}, Authorities: auth},
		{Name: "single-char", Images: []string{"quay.io/team?/app"}, Authorities: auth},
	}})
	if err != nil {
		t.Fatal(err)
	}
	const d = "@sha256:0000000000000000000000000000000000000000000000000000000000000000"
	tests := []struct{ image, policy string }{
		{"ghcr.io/acme/app" + d, "acme"},
		{"ghcr.io/acme/team/app" + d, ""}, // * stays within one segment
		{"ghcr.io/acme" + d, ""},
		{"127.0.0.1:5000/demo/app" + d, "loopback"},
		{"127.0.0.1:5000/demo/a/b/c" + d, "loopback"},
		{"127.0.0.1:5000/other/app" + d, ""},
		{"nginx" + d, "hub"},
		{"docker.io/library/nginx" + d, "hub"},
		{"bitnami/redis" + d, "hub"},
		{"quay.io/team1/app" + d, "single-char"},
		{"quay.io/team12/app" + d, ""},
	}
	for _, tc := range tests {
		t.Run(tc.image, func(t *testing.T) {
			vd := v.Verify(ctx(t), imageref.MustParse(tc.image))
			if vd.Policy != tc.policy {
				t.Errorf("policy: got %q, want %q (%s)", vd.Policy, tc.policy, vd.Summary())
			}
		})
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
