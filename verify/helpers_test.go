package verify_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/rs/zerolog"

	"github.com/shipwatch/shipwatch/imageref"
	"github.com/shipwatch/shipwatch/internal/testenv"
	"github.com/shipwatch/shipwatch/verify"
	"github.com/shipwatch/shipwatch/verify/sigtest"
)

// staticKeychain hands the same credentials to every registry.
type staticKeychain struct{ auth authn.Authenticator }

func (k staticKeychain) Resolve(authn.Resource) (authn.Authenticator, error) { return k.auth, nil }

// pushRandom pushes a small random image as repoTag and returns its
// reference pinned by digest ("127.0.0.1:port/repo:tag@sha256:…").
func pushRandom(t testing.TB, reg *testenv.Registry, repoTag string) imageref.Ref {
	t.Helper()
	img, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	d := reg.MustPush(t, repoTag, img)
	return imageref.MustParse(reg.Ref(repoTag)).WithDigest(d)
}

// digestRef is repo@digest, what sigtest signs.
func digestRef(r imageref.Ref) string { return r.Repo() + "@" + r.Digest }

func keyAuthority(name string, k *sigtest.Key) verify.AuthoritySpec {
	return verify.AuthoritySpec{Name: name, Key: k.PublicKeyPEM()}
}

func newVerifier(t testing.TB, reg *testenv.Registry, policies ...verify.PolicySpec) *verify.Verifier {
	t.Helper()
	return newVerifierOpts(t, reg, verify.Options{Policies: policies})
}

func newVerifierOpts(t testing.TB, reg *testenv.Registry, o verify.Options) *verify.Verifier {
	t.Helper()
	if o.Transport == nil {
		o.Transport = reg.Transport()
	}
	if o.Keychain == nil {
		o.Keychain = staticKeychain{reg.Auth()}
	}
	o.Logger = zerolog.Nop()
	v, err := verify.New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return v
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

// wantDecision checks a verdict's decision and that some reason mentions
// every fragment.
func wantDecision(t testing.TB, vd verify.Verdict, want verify.Decision, fragments ...string) {
	t.Helper()
	if vd.Decision != want {
		t.Fatalf("decision: got %s, want %s\nverdict: %s", vd.Decision, want, vd.Summary())
	}
	all := vd.Summary()
	for _, r := range vd.Reasons {
		all += "\n" + r.Message
	}
	for _, f := range fragments {
		if !strings.Contains(all, f) {
			t.Errorf("reasons: got %q, want a mention of %q", all, f)
		}
	}
}

func imagePolicy(reg *testenv.Registry, authorities ...verify.AuthoritySpec) verify.PolicySpec {
	return verify.PolicySpec{Name: "test", Images: []string{reg.Host + "/**"}, Authorities: authorities}
}

func timeNow() time.Time { return time.Now() }
