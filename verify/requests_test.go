package verify_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"

	"github.com/shipwatch/shipwatch/imageref"
	"github.com/shipwatch/shipwatch/internal/testenv"
	"github.com/shipwatch/shipwatch/verify"
	"github.com/shipwatch/shipwatch/verify/sigtest"
)

func requestLog(reqs []testenv.Request) string {
	var parts []string
	for _, r := range reqs {
		parts = append(parts, fmt.Sprintf("%s %s %d", r.Method, r.Kind, r.Status))
	}
	return strings.Join(parts, ", ")
}

// TestRequestBudget pins the registry requests of one verification of a new
// digest once the token is cached (design: at most 2 beyond discovery of
// the signature manifest) and of a cached digest (none).
func TestRequestBudget(t *testing.T) {
	key := sigtest.MustKey(t, "")
	tests := []struct {
		name      string
		referrers bool
		format    sigtest.Format
		// want is the request log of a new digest; the discovery part ends
		// with the first listing or manifest that names the signature.
		want string
	}{
		{"bundle via referrers API", true, sigtest.Bundle, "GET referrers 200, GET manifest 200, GET blob 200"},
		{"bundle via fallback tag", false, sigtest.Bundle, "GET manifest 200, GET manifest 200, GET blob 200"},
		{"legacy .sig, registry with referrers API", true, sigtest.Legacy, "GET referrers 200, GET manifest 200, GET blob 200"},
		{"legacy .sig, registry without referrers API", false, sigtest.Legacy, "GET manifest 404, GET manifest 200, GET blob 200"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := []testenv.RegistryOption{testenv.WithTokenAuth("robot", "s3cret")}
			if tc.referrers {
				opts = append(opts, testenv.WithReferrersAPI())
			}
			reg := testenv.NewRegistry(t, opts...)
			first := pushRandom(t, reg, "demo/app:1.0")
			second := pushRandom(t, reg, "demo/app:2.0")
			sigtest.MustSign(t, reg, digestRef(first), key, tc.format)
			sigtest.MustSign(t, reg, digestRef(second), key, tc.format)
			v := newVerifier(t, reg, imagePolicy(reg, keyAuthority("release", key)))

			// The first verification pays for the ping and the token.
			wantDecision(t, v.Verify(ctx(t), first), verify.Allowed)
			reg.Reset()

			vd := v.Verify(ctx(t), second)
			wantDecision(t, vd, verify.Allowed)
			if got := requestLog(reg.Requests()); got != tc.want {
				t.Errorf("requests for a new digest: got %q, want %q", got, tc.want)
			}
			if n := reg.Count("", "ping") + reg.Count("", "token"); n != 0 {
				t.Errorf("ping and token requests: got %d, want 0 (the transport and its token are reused)", n)
			}
			if n := reg.Conns(); n > 1 {
				t.Errorf("new connections: got %d, want at most 1 (keep-alive)", n)
			}
			if vd.Cached {
				t.Errorf("cached: got true for a new digest")
			}

			reg.Reset()
			vd = v.Verify(ctx(t), second)
			wantDecision(t, vd, verify.Allowed)
			if n := len(reg.Requests()); n != 0 || !vd.Cached {
				t.Errorf("cached digest: got %d requests (%s) and cached=%v, want 0 and true", n, requestLog(reg.Requests()), vd.Cached)
			}
		})
	}
}

// TestCacheKeyIncludesTrust checks that a verifier with other keys does not
// reuse evidence from a shared cache.
func TestCacheKeyIncludesTrust(t *testing.T) {
	key := sigtest.MustKey(t, "")
	other := sigtest.MustKey(t, "")
	reg := testenv.NewRegistry(t, testenv.WithReferrersAPI())
	img := pushRandom(t, reg, "demo/app:1.0")
	sigtest.MustSign(t, reg, digestRef(img), key, sigtest.Bundle)
	cache := verify.NewCache(10)
	v1 := newVerifierOpts(t, reg, verify.Options{Policies: []verify.PolicySpec{imagePolicy(reg, keyAuthority("release", key))}, Cache: cache})
	wantDecision(t, v1.Verify(ctx(t), img), verify.Allowed)
	if cache.Len() != 1 {
		t.Fatalf("cache entries: got %d, want 1", cache.Len())
	}
	// Same policy name and authority name, different key: a reload with
	// a rotated key must not reuse the old result.
	v2 := newVerifierOpts(t, reg, verify.Options{Policies: []verify.PolicySpec{imagePolicy(reg, keyAuthority("release", other))}, Cache: cache})
	vd := v2.Verify(ctx(t), img)
	wantDecision(t, vd, verify.Blocked)
	if vd.Cached {
		t.Errorf("cached: got true after a key change, want false")
	}
	// The same configuration again shares the cached evidence.
	v3 := newVerifierOpts(t, reg, verify.Options{Policies: []verify.PolicySpec{imagePolicy(reg, keyAuthority("release", key))}, Cache: cache})
	reg.Reset()
	if vd := v3.Verify(ctx(t), img); !vd.Cached || reg.Count("", "") != 0 {
		t.Errorf("reloaded verifier: got cached=%v with %d requests, want cached with 0", vd.Cached, reg.Count("", ""))
	}
}

// TestConcurrentVerify shares one Verifier between goroutines (run with
// -race): one transport per repository, one cache.
func TestConcurrentVerify(t *testing.T) {
	key := sigtest.MustKey(t, "")
	reg := testenv.NewRegistry(t, testenv.WithReferrersAPI(), testenv.WithTokenAuth("u", "p"))
	var images []imageref.Ref
	for i := 0; i < 20; i++ {
		img := pushRandom(t, reg, fmt.Sprintf("demo/app:%d", i))
		if i%2 == 0 {
			sigtest.MustSign(t, reg, digestRef(img), key, sigtest.Bundle)
		}
		images = append(images, img)
	}
	v := newVerifier(t, reg, imagePolicy(reg, keyAuthority("release", key)))
	var wg sync.WaitGroup
	errs := make(chan string, 8*len(images))
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i, img := range images {
				want := verify.Blocked
				if i%2 == 0 {
					want = verify.Allowed
				}
				if vd := v.Verify(context.Background(), img); vd.Decision != want {
					errs <- fmt.Sprintf("image %d: got %s, want %s: %s", i, vd.Decision, want, vd.Summary())
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// TestUnrelatedReferrersAreNotOpened: an SBOM attached to the image costs no
// request beyond the referrers listing.
func TestUnrelatedReferrersAreNotOpened(t *testing.T) {
	key := sigtest.MustKey(t, "")
	reg := testenv.NewRegistry(t, testenv.WithReferrersAPI())
	img := pushRandom(t, reg, "demo/app:1.0")
	repo, err := name.NewRepository(img.Repo())
	if err != nil {
		t.Fatal(err)
	}
	opts := []remote.Option{remote.WithAuth(reg.Auth()), remote.WithTransport(reg.Transport())}
	sbom := static.NewLayer([]byte(`{"spdxVersion":"SPDX-2.3"}`), "application/spdx+json")
	if err := remote.WriteLayer(repo, sbom, opts...); err != nil {
		t.Fatal(err)
	}
	sd, _ := sbom.Digest()
	desc, err := remote.Head(repo.Digest(img.Digest), opts...)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"artifactType":  "application/spdx+json",
		"config":        map[string]any{"mediaType": "application/spdx+json", "digest": sd.String(), "size": 26},
		"layers":        []any{map[string]any{"mediaType": "application/spdx+json", "digest": sd.String(), "size": 26}},
		"subject":       map[string]any{"mediaType": desc.MediaType, "digest": desc.Digest.String(), "size": desc.Size},
	}
	if err := sigtest.PushReferrerManifest(context.Background(), reg, repo, m); err != nil {
		t.Fatal(err)
	}
	sigtest.MustSign(t, reg, digestRef(img), key, sigtest.Bundle)
	idx, err := remote.Referrers(repo.Digest(img.Digest), opts...)
	if err != nil {
		t.Fatal(err)
	}
	if im, err := idx.IndexManifest(); err != nil || len(im.Manifests) != 2 {
		t.Fatalf("referrers: got %v (%v), want the SBOM and the signature", im, err)
	}
	v := newVerifier(t, reg, imagePolicy(reg, keyAuthority("release", key)))
	reg.Reset()
	wantDecision(t, v.Verify(ctx(t), img), verify.Allowed)
	// The referrers listing, then only the bundle's manifest and blob.
	if got := reg.Count("GET", "manifest") + reg.Count("GET", "blob"); got != 2 {
		t.Errorf("manifest and blob requests: got %d (%s), want 2 (the SBOM is not opened)", got, requestLog(reg.Requests()))
	}
}

// TestOneReferrers404DoesNotHideSignatures: a 404 from the referrers API
// (a proxy, a lagging replica) looks like a registry without the API, but
// must not hide the signature attached through it: a verification that
// finds no evidence asks the API once more. Found by the fault suite (class
// registry-4xx): the 404 was remembered for an hour and a signed candidate
// stayed blocked.
func TestOneReferrers404DoesNotHideSignatures(t *testing.T) {
	key := sigtest.MustKey(t, "")
	reg := testenv.NewRegistry(t, testenv.WithReferrersAPI())
	img := pushRandom(t, reg, "demo/app:1.0")
	sigtest.MustSign(t, reg, digestRef(img), key, sigtest.Bundle)
	v := newVerifier(t, reg, imagePolicy(reg, keyAuthority("release", key)))

	var once sync.Once
	reg.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		hit := false
		if strings.Contains(r.URL.Path, "/referrers/") {
			once.Do(func() { hit = true })
		}
		if hit {
			http.NotFound(w, r)
		}
		return hit
	})
	reg.Reset()
	wantDecision(t, v.Verify(ctx(t), img), verify.Allowed)
	// The API (404), the fallback and .sig tags (none), the API once more.
	if got, want := requestLog(reg.Requests()), "GET referrers 404, GET manifest 404, GET manifest 404, GET referrers 200, GET manifest 200, GET blob 200"; !strings.HasSuffix(got, want) {
		t.Errorf("requests around the spurious 404: got %q, want it to end with %q", got, want)
	}

	// The API answered in the end: the next digest asks it first, as before.
	img2 := pushRandom(t, reg, "demo/app:2.0")
	sigtest.MustSign(t, reg, digestRef(img2), key, sigtest.Bundle)
	reg.Reset()
	wantDecision(t, v.Verify(ctx(t), img2), verify.Allowed)
	if got, want := requestLog(reg.Requests()), "GET referrers 200, GET manifest 200, GET blob 200"; got != want {
		t.Errorf("requests for the next digest: got %q, want %q", got, want)
	}
}

// TestNoReferrersAPIUnsignedCostsOneMoreRequest pins the price of that
// second look on a registry that really has no referrers API: an unsigned
// image costs one more request (the API's 404), not a second fallback tag.
func TestNoReferrersAPIUnsignedCostsOneMoreRequest(t *testing.T) {
	key := sigtest.MustKey(t, "")
	reg := testenv.NewRegistry(t)
	signed := pushRandom(t, reg, "demo/app:1.0")
	sigtest.MustSign(t, reg, digestRef(signed), key, sigtest.Bundle)
	unsigned := pushRandom(t, reg, "demo/app:2.0")
	v := newVerifier(t, reg, imagePolicy(reg, keyAuthority("release", key)))
	wantDecision(t, v.Verify(ctx(t), signed), verify.Allowed)

	reg.Reset()
	wantDecision(t, v.Verify(ctx(t), unsigned), verify.Blocked)
	if got, want := requestLog(reg.Requests()), "GET manifest 404, GET manifest 404, GET referrers 404"; got != want {
		t.Errorf("requests for an unsigned image: got %q, want %q (fallback tag, .sig tag, the API once more)", got, want)
	}
}
