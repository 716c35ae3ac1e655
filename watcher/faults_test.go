package watcher

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shipwatch/shipwatch/internal/testenv"
)

// failFirst answers the first n requests matching match with status (and
// headers), then lets the registry answer.
func failFirst(reg *testenv.Registry, n int32, match func(*http.Request) bool, status int, header map[string]string) *atomic.Int32 {
	var seen atomic.Int32
	reg.Intercept(func(rw http.ResponseWriter, req *http.Request) bool {
		if !match(req) || seen.Add(1) > n {
			return false
		}
		for k, v := range header {
			rw.Header().Set(k, v)
		}
		rw.WriteHeader(status)
		return true
	})
	return &seen
}

func headManifest(req *http.Request) bool { return isManifest(req, http.MethodHead) }

func TestServerErrorIsRetried(t *testing.T) {
	reg := tokenRegistry(t)
	d := reg.MustPush(t, "demo/app:1", testImage(t, "x"))
	w := newWatcher(t, reg)
	failFirst(reg, 1, headManifest, http.StatusInternalServerError, nil)
	before := w.Stats()
	r := checkOne(t, w, reg.Ref("demo/app:1"), d, digestPolicy)
	if r.Err != nil || r.Change != ChangeNone {
		t.Fatalf("500 then 200: change %s, err %v; want none, nil", r.Change, r.Err)
	}
	if got := w.Stats().Sub(before).Retries; got != 1 {
		t.Errorf("retries = %d, want 1", got)
	}
}

func TestServerErrorsGiveUpAfterFewAttempts(t *testing.T) {
	reg := tokenRegistry(t)
	d := reg.MustPush(t, "demo/app:1", testImage(t, "x"))
	w := newWatcher(t, reg)
	failFirst(reg, 1000, headManifest, http.StatusServiceUnavailable, nil)
	reg.Reset()
	r := checkOne(t, w, reg.Ref("demo/app:1"), d, digestPolicy)
	wantFailed(t, r, ErrUnavailable)
	if got := reg.Count(http.MethodHead, "manifest"); got != defaultRetry.attempts {
		t.Errorf("HEAD attempts = %d, want %d", got, defaultRetry.attempts)
	}
	for _, want := range []string{reg.Host + "/demo/app:1", "HTTP 503 after 4 attempts", "try again later"} {
		if !strings.Contains(r.Err.Error(), want) {
			t.Errorf("error %q does not contain %q", r.Err, want)
		}
	}
}

func TestTooManyRequestsObeysRetryAfter(t *testing.T) {
	reg := tokenRegistry(t)
	d := reg.MustPush(t, "demo/app:1", testImage(t, "x"))
	w := newWatcher(t, reg)
	if r := checkOne(t, w, reg.Ref("demo/app:1"), d, digestPolicy); r.Err != nil { // ping and token first
		t.Fatal(r.Err)
	}
	var first, second atomic.Int64
	reg.Intercept(func(rw http.ResponseWriter, req *http.Request) bool {
		if !headManifest(req) {
			return false
		}
		if first.CompareAndSwap(0, time.Now().UnixNano()) {
			rw.Header().Set("Retry-After", "1")
			rw.WriteHeader(http.StatusTooManyRequests)
			return true
		}
		second.CompareAndSwap(0, time.Now().UnixNano())
		return false
	})
	before := w.Stats()
	r := checkOne(t, w, reg.Ref("demo/app:1"), d, digestPolicy)
	if r.Err != nil || r.Change != ChangeNone {
		t.Fatalf("429 then 200: change %s, err %v; want none, nil", r.Change, r.Err)
	}
	if gap := time.Duration(second.Load() - first.Load()); second.Load() == 0 || gap < time.Second {
		t.Errorf("retried %s after the 429, want at least the 1s of Retry-After", gap)
	}
	if st := w.Stats().Sub(before); st.RateLimited != 1 || st.Retries != 1 {
		t.Errorf("stats %+v, want RateLimited 1 and Retries 1", st)
	}
}

func TestTooManyRequestsBeyondDeadlineFailsAtOnce(t *testing.T) {
	reg := tokenRegistry(t)
	d := reg.MustPush(t, "demo/app:1", testImage(t, "x"))
	w := newWatcher(t, reg)
	failFirst(reg, 1000, headManifest, http.StatusTooManyRequests, map[string]string{"Retry-After": "3600"})
	reg.Reset()
	start := time.Now()
	r := checkOne(t, w, reg.Ref("demo/app:1"), d, digestPolicy)
	wantFailed(t, r, ErrRateLimited)
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("took %s, want an immediate failure when Retry-After outlasts the deadline", el)
	}
	if got := reg.Count(http.MethodHead, "manifest"); got != 1 {
		t.Errorf("HEADs = %d, want 1 (no retry before Retry-After)", got)
	}
	if !strings.Contains(r.Err.Error(), "retry after 1h0m0s") {
		t.Errorf("error %q does not say how long the registry asked to wait", r.Err)
	}
	// The pause holds for the registry: the next check does not send at all.
	reg.Reset()
	wantFailed(t, checkOne(t, w, reg.Ref("demo/app:1"), d, digestPolicy), ErrRateLimited)
	if n := len(reg.Requests()); n != 0 {
		t.Errorf("during the pause the registry got %d requests, want 0", n)
	}
}

func TestMissingTagIsNotRetried(t *testing.T) {
	reg := tokenRegistry(t)
	reg.MustPush(t, "demo/app:1", testImage(t, "x"))
	w := newWatcher(t, reg)
	reg.Reset()
	r := checkOne(t, w, reg.Ref("demo/app:1.4"), "sha256:"+strings.Repeat("0", 64), digestPolicy)
	wantFailed(t, r, ErrNotFound)
	if want := "tag 1.4 not found in " + reg.Host + "/demo/app — was it deleted?"; !strings.Contains(r.Err.Error(), want) {
		t.Errorf("error %q does not contain %q", r.Err, want)
	}
	if got := reg.Count(http.MethodHead, "manifest"); got != 1 {
		t.Errorf("HEADs = %d, want 1 (404 is not retried)", got)
	}
}

func TestMissingRepositoryTagList(t *testing.T) {
	reg := tokenRegistry(t)
	w := newWatcher(t, reg)
	r := checkOne(t, w, reg.Ref("demo/none:1.0.0"), "", MustCompilePolicy(PolicySpec{Mode: ModeSemver}))
	wantFailed(t, r, ErrNotFound)
	if !strings.Contains(r.Err.Error(), "check the image name") {
		t.Errorf("error %q does not say what to check", r.Err)
	}
}

func TestBadCredentialsFailWithoutLeakingThem(t *testing.T) {
	const wrong = "wr0ng-Secret-Value-42"
	reg := tokenRegistry(t)
	d := reg.MustPush(t, "demo/app:1", testImage(t, "x"))
	var logs syncBuffer
	w := newWatcher(t, reg, func(o *Options) {
		o.Registries = []Registry{{Host: reg.Host, Username: testUser, Password: wrong}}
		o.Logger = debugLogger(&logs)
	})
	reg.Reset()
	r := checkOne(t, w, reg.Ref("demo/app:1"), d, digestPolicy)
	wantFailed(t, r, ErrUnauthorized)
	if want := "check credentials for " + reg.Host; !strings.Contains(r.Err.Error(), want) {
		t.Errorf("error %q does not contain %q", r.Err, want)
	}
	if got := reg.Count("", "token"); got != 1 {
		t.Errorf("token requests = %d, want 1 (401 is not retried)", got)
	}
	basic := base64.StdEncoding.EncodeToString([]byte(testUser + ":" + wrong))
	for _, out := range []string{r.Err.Error(), r.Reason, fmt.Sprintf("%+v", r), logs.String()} {
		for _, secret := range []string{wrong, basic} {
			if strings.Contains(out, secret) {
				t.Errorf("output %q contains a secret", out)
			}
		}
	}
}

func TestRegistryRejectingTokenFails(t *testing.T) {
	reg := tokenRegistry(t)
	d := reg.MustPush(t, "demo/app:1", testImage(t, "x"))
	w := newWatcher(t, reg)
	// The registry accepts the token request but rejects every token.
	failFirst(reg, 1000, headManifest, http.StatusUnauthorized, map[string]string{"WWW-Authenticate": `Bearer realm="http://` + reg.Host + `/token",service="testenv"`})
	reg.Reset()
	r := checkOne(t, w, reg.Ref("demo/app:1"), d, digestPolicy)
	wantFailed(t, r, ErrUnauthorized)
	if got := reg.Count(http.MethodHead, "manifest"); got != 2 {
		t.Errorf("HEADs = %d, want 2 (the second with a fresh token, then give up)", got)
	}
}

func TestForbidden(t *testing.T) {
	reg := tokenRegistry(t)
	d := reg.MustPush(t, "demo/app:1", testImage(t, "x"))
	w := newWatcher(t, reg)
	failFirst(reg, 1000, headManifest, http.StatusForbidden, nil)
	r := checkOne(t, w, reg.Ref("demo/app:1"), d, digestPolicy)
	wantFailed(t, r, ErrDenied)
	if !strings.Contains(r.Err.Error(), "may pull demo/app") {
		t.Errorf("error %q does not say what to check", r.Err)
	}
}

func TestTimeoutsAreRetriedThenFail(t *testing.T) {
	reg := testenv.NewRegistry(t)
	d := reg.MustPush(t, "demo/app:1", testImage(t, "x"))
	w := newWatcher(t, reg, func(o *Options) { o.Timeout = 100 * time.Millisecond })
	if r := checkOne(t, w, reg.Ref("demo/app:1"), d, digestPolicy); r.Err != nil { // ping first
		t.Fatal(r.Err)
	}
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	reg.Intercept(func(rw http.ResponseWriter, req *http.Request) bool {
		if !headManifest(req) {
			return false
		}
		select { // hang until the client gives up
		case <-req.Context().Done():
		case <-release:
		}
		return true
	})
	reg.Reset()
	r := checkOne(t, w, reg.Ref("demo/app:1"), d, digestPolicy)
	wantFailed(t, r, ErrUnavailable)
	if !errors.Is(r.Err, context.DeadlineExceeded) {
		t.Errorf("error %v does not wrap context.DeadlineExceeded", r.Err)
	}
	if !strings.Contains(r.Err.Error(), "no answer within 100ms, 4 attempts") {
		t.Errorf("error %q does not say it timed out", r.Err)
	}
	testenv.Eventually(t, 5*time.Second, 10*time.Millisecond, func() (bool, string) {
		n := reg.Count(http.MethodHead, "manifest")
		return n == defaultRetry.attempts, fmt.Sprintf("HEAD attempts = %d, want %d", n, defaultRetry.attempts)
	})
}

func TestCancelledCheckStopsAtOnce(t *testing.T) {
	reg := testenv.NewRegistry(t)
	d := reg.MustPush(t, "demo/app:1", testImage(t, "x"))
	w := newWatcher(t, reg)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res := w.Check(ctx, []Request{{Key: "x", Image: ref(t, reg.Ref("demo/app:1")), Running: d, Policy: digestPolicy}})
	wantFailed(t, res[0], context.Canceled)
}

// serveManifest makes the registry answer HEAD and GET of the tag and of
// the body's digest with body, as contentType, whatever body is.
func serveManifest(reg *testenv.Registry, tag, contentType string, body []byte, getBody []byte) string {
	sum := sha256.Sum256(body)
	d := "sha256:" + hex.EncodeToString(sum[:])
	reg.Intercept(func(rw http.ResponseWriter, req *http.Request) bool {
		if !isManifest(req, "") || !(strings.HasSuffix(req.URL.Path, "/"+tag) || strings.HasSuffix(req.URL.Path, "/"+d)) {
			return false
		}
		rw.Header().Set("Content-Type", contentType)
		rw.Header().Set("Docker-Content-Digest", d)
		b := body
		if req.Method == http.MethodGet && getBody != nil {
			b = getBody
		}
		rw.Header().Set("Content-Length", strconv.Itoa(len(b)))
		if req.Method == http.MethodGet {
			_, _ = rw.Write(b)
		}
		return true
	})
	return d
}

func TestBrokenManifestsAreNeverAnUpdate(t *testing.T) {
	valid := []byte(`{"schemaVersion":2,"mediaType":"` + MediaTypeOCIManifest + `","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:` + strings.Repeat("a", 64) + `","size":2},"layers":[]}`)
	old := "sha256:" + strings.Repeat("0", 64)
	for _, tc := range []struct {
		name        string
		contentType string
		body        []byte // what HEAD describes
		getBody     []byte // what GET sends (nil: body)
		kind        error
		text        string
	}{
		{"truncated", MediaTypeOCIManifest, valid, valid[:len(valid)/2], ErrInvalidResponse, "truncated or corrupted response"},
		{"not JSON", MediaTypeOCIManifest, valid[:len(valid)-7], nil, ErrInvalidResponse, "not valid JSON"},
		{"schema 1", "application/vnd.docker.distribution.manifest.v1+prettyjws", valid, nil, ErrInvalidResponse, "unsupported manifest media type"},
		{"media type mismatch", MediaTypeOCIIndex, valid, nil, ErrInvalidResponse, "body says media type"},
		{"empty index", MediaTypeOCIIndex, []byte(`{"schemaVersion":2,"manifests":[]}`), nil, ErrInvalidResponse, "index lists no manifests"},
		{"bad child digest", MediaTypeOCIIndex, []byte(`{"schemaVersion":2,"manifests":[{"digest":"sha256:xyz"}]}`), nil, ErrInvalidResponse, "not a digest"},
		{"no config", MediaTypeDockerManifest, []byte(`{"schemaVersion":2,"layers":[]}`), nil, ErrInvalidResponse, "has no config"},
		{"oversized HEAD", MediaTypeOCIManifest, []byte(strings.Repeat(" ", maxManifestSize+1)), nil, ErrTooLarge, "the limit is 4194304"},
		{"oversized GET", MediaTypeOCIManifest, valid, []byte(strings.Repeat(" ", maxManifestSize+1)), ErrTooLarge, "more than 4194304 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := testenv.NewRegistry(t)
			w := newWatcher(t, reg)
			serveManifest(reg, "1", tc.contentType, tc.body, tc.getBody)
			r := checkOne(t, w, reg.Ref("demo/app:1"), old, digestPolicy)
			wantFailed(t, r, tc.kind)
			if !strings.Contains(r.Err.Error(), tc.text) {
				t.Errorf("error %q does not contain %q", r.Err, tc.text)
			}
		})
	}
}

func TestBrokenTagListsAreNeverAnUpdate(t *testing.T) {
	semverAny := MustCompilePolicy(PolicySpec{Mode: ModeSemver})
	for _, tc := range []struct {
		name   string
		header map[string]string
		body   string
		kind   error
		text   string
	}{
		{"truncated", nil, `{"name":"demo/app","tags":["1.0.0","1.0`, ErrInvalidResponse, "not valid JSON"},
		{"oversized", nil, `{"tags":["` + strings.Repeat("1", maxTagPageSize) + `"]}`, ErrTooLarge, "more than"},
		{"link elsewhere", map[string]string{"Link": `<https://evil.example/v2/demo/app/tags/list?last=1.0.0>; rel="next"`}, `{"tags":["1.0.0"]}`, ErrInvalidResponse, "not to the registry"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := testenv.NewRegistry(t)
			reg.MustPush(t, "demo/app:1.0.0", testImage(t, "x"))
			w := newWatcher(t, reg)
			reg.Intercept(func(rw http.ResponseWriter, req *http.Request) bool {
				if !strings.HasSuffix(req.URL.Path, "/tags/list") {
					return false
				}
				for k, v := range tc.header {
					rw.Header().Set(k, v)
				}
				_, _ = rw.Write([]byte(tc.body))
				return true
			})
			r := checkOne(t, w, reg.Ref("demo/app:1.0.0"), "", semverAny)
			wantFailed(t, r, tc.kind)
			if !strings.Contains(r.Err.Error(), tc.text) {
				t.Errorf("error %q does not contain %q", r.Err, tc.text)
			}
		})
	}
}

func TestUnreachableRegistry(t *testing.T) {
	reg := testenv.NewRegistry(t)
	host := reg.Host
	reg.Close()
	w := newWatcher(t, reg)
	r := checkOne(t, w, host+"/demo/app:1", "", digestPolicy)
	wantFailed(t, r, ErrUnavailable)
	if !strings.Contains(r.Err.Error(), "registry "+host) || !strings.Contains(r.Err.Error(), "check the network") {
		t.Errorf("error %q does not name the registry and what to do", r.Err)
	}
}

func TestHeadWithoutDigestFallsBackToGet(t *testing.T) {
	reg := testenv.NewRegistry(t)
	img := testImage(t, "x")
	d := reg.MustPush(t, "demo/app:1", img)
	body, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	mt, _ := img.MediaType()
	w := newWatcher(t, reg)
	// A registry that does not send Docker-Content-Digest on HEAD.
	reg.Intercept(func(rw http.ResponseWriter, req *http.Request) bool {
		if !isManifest(req, "") {
			return false
		}
		rw.Header().Set("Content-Type", string(mt))
		rw.Header().Set("Content-Length", strconv.Itoa(len(body)))
		if req.Method == http.MethodGet {
			_, _ = rw.Write(body)
		}
		return true
	})
	reg.Reset()
	r := checkOne(t, w, reg.Ref("demo/app:1"), d, digestPolicy)
	if r.Err != nil || r.Change != ChangeNone {
		t.Fatalf("HEAD without digest: change %s, err %v; want none, nil", r.Change, r.Err)
	}
	if h, g := reg.Count(http.MethodHead, "manifest"), reg.Count(http.MethodGet, "manifest"); h != 1 || g != 1 {
		t.Errorf("HEADs %d, GETs %d; want 1 and 1 (the digest is computed from the manifest)", h, g)
	}
}
