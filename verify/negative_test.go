package verify_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/shipwatch/shipwatch/imageref"
	"github.com/shipwatch/shipwatch/internal/testenv"
	"github.com/shipwatch/shipwatch/verify"
	"github.com/shipwatch/shipwatch/verify/sigtest"
)

type rawManifest struct {
	b  []byte
	mt types.MediaType
}

func (r rawManifest) RawManifest() ([]byte, error)        { return r.b, nil }
func (r rawManifest) MediaType() (types.MediaType, error) { return r.mt, nil }

// copyLegacyTag copies the cosign tag of from (".sig"/".att") onto to's tag.
func copyLegacyTag(t *testing.T, reg *testenv.Registry, from, to imageref.Ref, suffix string) {
	t.Helper()
	src, err := name.ParseReference(from.Repo() + ":" + strings.Replace(from.Digest, ":", "-", 1) + suffix)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := name.ParseReference(to.Repo() + ":" + strings.Replace(to.Digest, ":", "-", 1) + suffix)
	if err != nil {
		t.Fatal(err)
	}
	opts := []remote.Option{remote.WithAuth(reg.Auth()), remote.WithTransport(reg.Transport())}
	desc, err := remote.Get(src, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Put(dst, rawManifest{desc.Manifest, desc.MediaType}, opts...); err != nil {
		t.Fatal(err)
	}
}

// tamperBundle replaces the signed statement of a bundle by another one,
// keeping the signature.
func tamperBundle(t *testing.T, bundleJSON, statement []byte) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(bundleJSON, &m); err != nil {
		t.Fatal(err)
	}
	m["dsseEnvelope"].(map[string]any)["payload"] = base64.StdEncoding.EncodeToString(statement)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestKeyedNegativeCases(t *testing.T) {
	key := sigtest.MustKey(t, "")
	wrong := sigtest.MustKey(t, "")
	bg := context.Background()
	tests := []struct {
		name string
		// setup signs (or mis-signs) target; other is another image of
		// the same repository, signed by key in both formats.
		setup func(t *testing.T, reg *testenv.Registry, target, other imageref.Ref)
		want  verify.Decision
		frag  []string
	}{
		{"unsigned", func(*testing.T, *testenv.Registry, imageref.Ref, imageref.Ref) {}, verify.Blocked, []string{"no signature", "none found"}},
		{"wrong key bundle", func(t *testing.T, reg *testenv.Registry, target, _ imageref.Ref) {
			sigtest.MustSign(t, reg, digestRef(target), wrong, sigtest.Bundle)
		}, verify.Blocked, []string{"rejected", "release"}},
		{"wrong key legacy", func(t *testing.T, reg *testenv.Registry, target, _ imageref.Ref) {
			sigtest.MustSign(t, reg, digestRef(target), wrong, sigtest.Legacy)
		}, verify.Blocked, []string{"cosign signature", "rejected"}},
		{"sig copied from another digest", func(t *testing.T, reg *testenv.Registry, target, other imageref.Ref) {
			copyLegacyTag(t, reg, other, target, ".sig")
		}, verify.Blocked, []string{"copied from another image"}},
		{"bundle copied from another digest", func(t *testing.T, reg *testenv.Registry, target, other imageref.Ref) {
			st, err := sigtest.Statement(other.Digest, sigtest.PredicateCosignSign, nil)
			if err != nil {
				t.Fatal(err)
			}
			b, err := sigtest.BundleJSON(key, st)
			if err != nil {
				t.Fatal(err)
			}
			if err := sigtest.PushBundle(bg, reg, digestRef(target), b, sigtest.PredicateCosignSign); err != nil {
				t.Fatal(err)
			}
		}, verify.Blocked, []string{"rejected", "does not match any digest in statement"}},
		{"tampered simple-signing payload", func(t *testing.T, reg *testenv.Registry, target, _ imageref.Ref) {
			payload, ann, err := sigtest.LegacySignatureLayer(key, target.Repo(), target.Digest)
			if err != nil {
				t.Fatal(err)
			}
			tampered := []byte(strings.Replace(string(payload), target.Repo(), target.Repo()+"-evil", 1))
			if err := sigtest.AppendLegacyLayer(bg, reg, digestRef(target), ".sig", tampered, sigtest.MediaSimpleSigning, ann); err != nil {
				t.Fatal(err)
			}
		}, verify.Blocked, []string{"rejected"}},
		{"tampered bundle statement", func(t *testing.T, reg *testenv.Registry, target, other imageref.Ref) {
			// Signed for the other image, then rewritten to name the target.
			signedFor, _ := sigtest.Statement(other.Digest, sigtest.PredicateCosignSign, nil)
			b, err := sigtest.BundleJSON(key, signedFor)
			if err != nil {
				t.Fatal(err)
			}
			claims, _ := sigtest.Statement(target.Digest, sigtest.PredicateCosignSign, nil)
			if err := sigtest.PushBundle(bg, reg, digestRef(target), tamperBundle(t, b, claims), sigtest.PredicateCosignSign); err != nil {
				t.Fatal(err)
			}
		}, verify.Blocked, []string{"rejected", "could not verify envelope"}},
		{"vuln attestation is not a signature (bundle, annotated as a signature like cosign v3 does)", func(t *testing.T, reg *testenv.Registry, target, _ imageref.Ref) {
			st, _ := sigtest.Statement(target.Digest, sigtest.PredicateVulnCosign, sigtest.VulnPredicate(sigtest.Scan{FinishedAt: timeNow()}))
			b, err := sigtest.BundleJSON(key, st)
			if err != nil {
				t.Fatal(err)
			}
			if err := sigtest.PushBundle(bg, reg, digestRef(target), b, sigtest.PredicateCosignSign); err != nil {
				t.Fatal(err)
			}
		}, verify.Blocked, []string{"no signature", "none found"}},
		{"vuln attestation is not a signature (legacy .att)", func(t *testing.T, reg *testenv.Registry, target, _ imageref.Ref) {
			if err := sigtest.AttestVuln(bg, reg, digestRef(target), key, sigtest.Legacy, sigtest.Scan{FinishedAt: timeNow()}); err != nil {
				t.Fatal(err)
			}
		}, verify.Blocked, []string{"no signature"}},
		{"attestation of an unknown predicate type is not a signature", func(t *testing.T, reg *testenv.Registry, target, _ imageref.Ref) {
			sigtest.MustAttest(t, reg, digestRef(target), key, sigtest.Bundle, "https://example.com/unknown/v9", map[string]string{"a": "b"})
		}, verify.Blocked, []string{"no signature"}},
		{"malformed bundle layer", func(t *testing.T, reg *testenv.Registry, target, _ imageref.Ref) {
			if err := sigtest.PushBundle(bg, reg, digestRef(target), []byte(`{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "dsseEnvelope": 7}`), sigtest.PredicateCosignSign); err != nil {
				t.Fatal(err)
			}
		}, verify.Blocked, []string{"sigstore bundle:"}},
		{"malformed legacy signature layer", func(t *testing.T, reg *testenv.Registry, target, _ imageref.Ref) {
			if err := sigtest.AppendLegacyLayer(bg, reg, digestRef(target), ".sig", []byte("not json"), sigtest.MediaSimpleSigning, map[string]string{sigtest.AnnSignature: "!!"}); err != nil {
				t.Fatal(err)
			}
		}, verify.Blocked, []string{"cosign signature annotation"}},
	}
	for _, tc := range tests {
		for _, referrers := range []bool{true, false} {
			name := tc.name + "/no referrers API"
			if referrers {
				name = tc.name + "/referrers API"
			}
			t.Run(name, func(t *testing.T) {
				var opts []testenv.RegistryOption
				if referrers {
					opts = append(opts, testenv.WithReferrersAPI())
				}
				reg := testenv.NewRegistry(t, opts...)
				target := pushRandom(t, reg, "demo/app:2.0")
				other := pushRandom(t, reg, "demo/app:1.0")
				sigtest.MustSign(t, reg, digestRef(other), key, sigtest.Bundle)
				sigtest.MustSign(t, reg, digestRef(other), key, sigtest.Legacy)
				tc.setup(t, reg, target, other)
				v := newVerifier(t, reg, imagePolicy(reg, keyAuthority("release", key)))
				wantDecision(t, v.Verify(ctx(t), target), tc.want, tc.frag...)
				// The other image stays verifiable: the test setup is sound.
				wantDecision(t, v.Verify(ctx(t), other), verify.Allowed)
			})
		}
	}
}

func TestOversizedArtifactsAreRejected(t *testing.T) {
	key := sigtest.MustKey(t, "")
	reg := testenv.NewRegistry(t, testenv.WithReferrersAPI())
	img := pushRandom(t, reg, "demo/app:1.0")
	sigtest.MustSign(t, reg, digestRef(img), key, sigtest.Bundle)
	sigtest.MustSign(t, reg, digestRef(img), key, sigtest.Legacy)
	// Every blob is served as 17 MiB of garbage: more than the 16 MiB limit.
	reg.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/blobs/") {
			return false
		}
		w.Header().Set("Content-Length", "17825792")
		w.WriteHeader(http.StatusOK)
		chunk := make([]byte, 1<<20)
		for i := 0; i < 17; i++ {
			if _, err := w.Write(chunk); err != nil {
				return true
			}
		}
		return true
	})
	v := newVerifier(t, reg, imagePolicy(reg, keyAuthority("release", key)))
	wantDecision(t, v.Verify(ctx(t), img), verify.Blocked, "exceeds the limit")
}

func TestRegistryDownIsUndecided(t *testing.T) {
	key := sigtest.MustKey(t, "")
	for _, fault := range []string{"503 on manifests", "503 on blobs", "429 on referrers", "connection refused"} {
		t.Run(fault, func(t *testing.T) {
			reg := testenv.NewRegistry(t, testenv.WithReferrersAPI())
			img := pushRandom(t, reg, "demo/app:1.0")
			sigtest.MustSign(t, reg, digestRef(img), key, sigtest.Bundle)
			v := newVerifier(t, reg, imagePolicy(reg, keyAuthority("release", key)))
			switch fault {
			case "connection refused":
				reg.Close()
			default:
				var code int
				var kind string
				switch fault {
				case "503 on manifests":
					code, kind = http.StatusServiceUnavailable, "/manifests/"
				case "503 on blobs":
					code, kind = http.StatusServiceUnavailable, "/blobs/"
				case "429 on referrers":
					code, kind = http.StatusTooManyRequests, "/referrers/"
				}
				reg.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
					if !strings.Contains(r.URL.Path, kind) {
						return false
					}
					w.WriteHeader(code)
					return true
				})
			}
			vd := v.Verify(ctx(t), img)
			wantDecision(t, vd, verify.Undecided, "could not decide")
			if vd.Deployable() {
				t.Errorf("Deployable: got true for an undecided verdict, want false")
			}
		})
	}
}

func TestVerifyPreconditions(t *testing.T) {
	key := sigtest.MustKey(t, "")
	reg := testenv.NewRegistry(t)
	img := pushRandom(t, reg, "demo/app:1.0")
	sigtest.MustSign(t, reg, digestRef(img), key, sigtest.Bundle)
	v := newVerifier(t, reg, verify.PolicySpec{Name: "demo", Images: []string{reg.Host + "/demo/*"}, Authorities: []verify.AuthoritySpec{keyAuthority("release", key)}})
	tests := []struct {
		name  string
		image imageref.Ref
		want  verify.Decision
		frag  string
	}{
		{"tag without digest", img.Tagged(), verify.Undecided, "has no digest"},
		{"no policy matches", imageref.MustParse(reg.Ref("other/app@" + img.Digest)), verify.Blocked, "no verification policy matches " + reg.Host + "/other/app; add one or set allowUnsigned for it"},
		{"sha512 digest", img.WithDigest("sha512:" + strings.Repeat("ab", 64)), verify.Blocked, "only sha256"},
		{"signed and pinned", img, verify.Allowed, "signed by release"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantDecision(t, v.Verify(ctx(t), tc.image), tc.want, tc.frag)
		})
	}
}

func TestDeployable(t *testing.T) {
	tests := []struct {
		decision verify.Decision
		mode     string
		want     bool
	}{
		{verify.Allowed, verify.ModeEnforce, true},
		{verify.Blocked, verify.ModeEnforce, false},
		{verify.Undecided, verify.ModeEnforce, false},
		{verify.Allowed, verify.ModeWarn, true},
		{verify.Blocked, verify.ModeWarn, true},
		{verify.Undecided, verify.ModeWarn, false},
	}
	for _, tc := range tests {
		if got := (verify.Verdict{Decision: tc.decision, Mode: tc.mode}).Deployable(); got != tc.want {
			t.Errorf("Deployable(%s, %s): got %v, want %v", tc.decision, tc.mode, got, tc.want)
		}
	}
}
