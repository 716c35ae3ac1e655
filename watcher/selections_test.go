package watcher

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/shipwatch/shipwatch/internal/testenv"
)

// TestSelectionIsKeptWhileTheTagListIsUnchanged: a tag-following check
// whose tag list is byte for byte the previous one reuses the previous
// selection; a new tag, another running tag, another policy or a list
// that no longer decodes each make it select again.
func TestSelectionIsKeptWhileTheTagListIsUnchanged(t *testing.T) {
	reg := tokenRegistry(t)
	running := reg.MustPush(t, "demo/app:1.0.0", testImage(t, "1.0.0"))
	reg.MustPush(t, "demo/app:1.1.0", testImage(t, "1.1.0"))
	w := newWatcher(t, reg)
	pol := MustCompilePolicy(PolicySpec{Mode: ModeSemver, Range: "^1"})
	check := func(tag, digest string, pol *Policy, wantTag string, wantReused int64) Result {
		t.Helper()
		before := w.Stats()
		r := checkOne(t, w, reg.Ref("demo/app:"+tag), digest, pol)
		if r.Err != nil {
			t.Fatalf("running %s: %v", tag, r.Err)
		}
		got := ""
		if r.HasUpdate() {
			got = r.Candidate.Tag
		}
		if got != wantTag {
			t.Errorf("running %s: candidate tag %q (reason %q), want %q", tag, got, r.Reason, wantTag)
		}
		if n := w.Stats().Sub(before).SelectionsReused; n != wantReused {
			t.Errorf("running %s: %d selections reused, want %d", tag, n, wantReused)
		}
		return r
	}
	first := check("1.0.0", running, pol, "1.1.0", 0)
	again := check("1.0.0", running, pol, "1.1.0", 1)
	if again.Reason != first.Reason || again.Candidate != first.Candidate {
		t.Errorf("the kept selection answered %q %s, the first %q %s", again.Reason, again.Candidate, first.Reason, first.Candidate)
	}

	reg.MustPush(t, "demo/app:1.2.0", testImage(t, "1.2.0"))
	check("1.0.0", running, pol, "1.2.0", 0)
	check("1.0.0", running, pol, "1.2.0", 1)

	// Another policy on the same list selects for itself.
	check("1.0.0", running, MustCompilePolicy(PolicySpec{Mode: ModeSemver, Range: "~1.1"}), "1.1.0", 0)
	// So does another running tag.
	newest := digestOf(t, testImage(t, "1.2.0"))
	check("1.2.0", newest, pol, "", 0)

	// A page that no longer decodes fails the check: the kept selection
	// is not an answer for a list it was not made from.
	var broken atomic.Bool
	broken.Store(true)
	reg.Intercept(func(rw http.ResponseWriter, req *http.Request) bool {
		if broken.Load() && req.Method == http.MethodGet && strings.HasSuffix(req.URL.Path, "/tags/list") {
			rw.Header().Set("Content-Type", "application/json")
			_, _ = rw.Write([]byte(`{"name":"demo/app","tags":["1.0.0","1.1.0","1.2.0"`))
			return true
		}
		return false
	})
	wantFailed(t, checkOne(t, w, reg.Ref("demo/app:1.0.0"), running, pol), ErrInvalidResponse)
	broken.Store(false)
	check("1.0.0", running, pol, "1.2.0", 1)
}

// TestMirrorWithABrokenTagListFallsBackToTheRegistry: a mirror's tag list
// is decoded before it is taken, so a broken one is passed over as a
// mirror that does not answer would be.
func TestMirrorWithABrokenTagListFallsBackToTheRegistry(t *testing.T) {
	origin := tokenRegistry(t)
	mirror := testenv.NewRegistry(t)
	for _, tag := range []string{"1.0.0", "1.1.0"} {
		img := testImage(t, tag)
		origin.MustPush(t, "demo/app:"+tag, img)
		mirror.MustPush(t, "demo/app:"+tag, img)
	}
	running := digestOf(t, testImage(t, "1.0.0"))
	w := newWatcher(t, origin, func(o *Options) {
		o.Registries[0].Mirrors = []string{"http://" + mirror.Host}
	})
	mirror.Intercept(func(rw http.ResponseWriter, req *http.Request) bool {
		if req.Method == http.MethodGet && strings.HasSuffix(req.URL.Path, "/tags/list") {
			_, _ = rw.Write([]byte(`{"name":"demo/app","tags":[`))
			return true
		}
		return false
	})
	origin.Reset()
	pol := MustCompilePolicy(PolicySpec{Mode: ModeSemver})
	r := checkOne(t, w, origin.Ref("demo/app:1.0.0"), running, pol)
	if r.Err != nil || r.Candidate.Tag != "1.1.0" {
		t.Fatalf("broken mirror list: candidate %q, err %v; want 1.1.0 from the registry's list", r.Candidate.Tag, r.Err)
	}
	if n := origin.Count(http.MethodGet, "tags"); n != 1 {
		t.Errorf("registry tag-list GETs = %d, want 1 after the mirror's broken list", n)
	}
}
