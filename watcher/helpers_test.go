package watcher

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/rs/zerolog"

	"github.com/shipwatch/shipwatch/imageref"
	"github.com/shipwatch/shipwatch/internal/testenv"
)

// The credentials of the token-auth test registries.
const (
	testUser = "alice"
	testPass = "s3cret-Pa55-do-not-leak"
)

// testImage is a tiny image (no layers) whose digest depends on label:
// watcher tests need distinct digests, not runnable images.
func testImage(tb testing.TB, label string) v1.Image {
	return testImageFor(tb, "linux", "amd64", label)
}

func testImageFor(tb testing.TB, os, arch, label string) v1.Image {
	tb.Helper()
	img, err := newTestImage(os, arch, label)
	if err != nil {
		tb.Fatal(err)
	}
	return img
}

func newTestImage(os, arch, label string) (v1.Image, error) {
	cf := &v1.ConfigFile{OS: os, Architecture: arch, Config: v1.Config{Labels: map[string]string{"test": label}}}
	return mutate.ConfigFile(empty.Image, cf)
}

// testIndex is a multi-platform index with one image per platform.
func testIndex(tb testing.TB, label string, platforms ...v1.Platform) (v1.ImageIndex, map[string]string) {
	tb.Helper()
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	digests := map[string]string{}
	for _, p := range platforms {
		img := testImageFor(tb, p.OS, p.Architecture, label)
		d, err := img.Digest()
		if err != nil {
			tb.Fatal(err)
		}
		pp := p
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &pp}})
		digests[p.OS+"/"+p.Architecture] = d.String()
	}
	return idx, digests
}

func digestOf(tb testing.TB, img v1.Image) string {
	tb.Helper()
	d, err := img.Digest()
	if err != nil {
		tb.Fatal(err)
	}
	return d.String()
}

// tokenRegistry is a plain-HTTP registry that requires bearer tokens, as
// Docker Hub and GHCR do.
func tokenRegistry(tb testing.TB, opts ...testenv.RegistryOption) *testenv.Registry {
	return testenv.NewRegistry(tb, append([]testenv.RegistryOption{testenv.WithTokenAuth(testUser, testPass)}, opts...)...)
}

// newWatcher returns a watcher for reg with its credentials, no keychain,
// platform linux/amd64 and fast retries; edit adjusts the options.
func newWatcher(tb testing.TB, reg *testenv.Registry, edit ...func(*Options)) *Watcher {
	tb.Helper()
	opts := Options{
		Registries: []Registry{{Host: reg.Host, Username: testUser, Password: testPass}},
		Keychain:   authn.NewMultiKeychain(),
		Transport:  reg.Transport(),
		Platform:   "linux/amd64",
		Timeout:    5 * time.Second,
	}
	for _, f := range edit {
		f(&opts)
	}
	w, err := New(opts)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	w.retry.base, w.retry.max = 5*time.Millisecond, 20*time.Millisecond
	return w
}

func ref(tb testing.TB, s string) imageref.Ref {
	tb.Helper()
	r, err := imageref.Parse(s)
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

func ctxT(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	tb.Cleanup(cancel)
	return ctx
}

// checkOne runs Check for one request.
func checkOne(tb testing.TB, w *Watcher, image, running string, pol *Policy) Result {
	tb.Helper()
	res := w.Check(ctxT(tb), []Request{{Key: "t", Image: ref(tb, image), Running: running, Policy: pol}})
	if len(res) != 1 {
		tb.Fatalf("Check returned %d results, want 1", len(res))
	}
	return res[0]
}

var digestPolicy = MustCompilePolicy(PolicySpec{Mode: ModeDigest})

// wantFailed fails unless r failed with an error matching kind and
// proposes nothing.
func wantFailed(tb testing.TB, r Result, kind error) {
	tb.Helper()
	if r.Err == nil {
		tb.Fatalf("Err = nil (change %s, reason %q), want an error wrapping %v", r.Change, r.Reason, kind)
	}
	if kind != nil && !errors.Is(r.Err, kind) {
		tb.Errorf("Err = %v, want one wrapping %v", r.Err, kind)
	}
	if r.HasUpdate() || r.Change != ChangeNone || r.Candidate != (imageref.Ref{}) {
		tb.Errorf("failed check proposes change %s candidate %q, want none", r.Change, r.Candidate)
	}
	if !strings.HasPrefix(r.Reason, "failed to check") {
		tb.Errorf("Reason = %q, want it to start with \"failed to check\"", r.Reason)
	}
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func debugLogger(buf *syncBuffer) zerolog.Logger {
	return zerolog.New(buf).Level(zerolog.DebugLevel)
}

// isManifest reports whether req is a manifest request with method m ("" any).
func isManifest(req *http.Request, m string) bool {
	return strings.Contains(req.URL.Path, "/manifests/") && (m == "" || req.Method == m)
}
