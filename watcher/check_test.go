package watcher

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/shipwatch/shipwatch/config"
	"github.com/shipwatch/shipwatch/imageref"
	"github.com/shipwatch/shipwatch/internal/testenv"
)

// counts is what the registry served in one pass, by kind.
type counts struct{ ping, token, head, get, tags, total int }

func served(reg *testenv.Registry) counts {
	return counts{
		ping:  reg.Count("", "ping"),
		token: reg.Count("", "token"),
		head:  reg.Count(http.MethodHead, "manifest"),
		get:   reg.Count(http.MethodGet, "manifest"),
		tags:  reg.Count(http.MethodGet, "tags"),
		total: len(reg.Requests()),
	}
}

func TestCheckCountsDedupTokensAndPagination(t *testing.T) {
	reg := tokenRegistry(t, testenv.WithTagPageSize(2))
	web := reg.MustPush(t, "demo/web:1.4", testImage(t, "web"))
	api := map[string]string{}
	for _, tag := range []string{"1.0.0", "1.0.1", "1.1.0", "2.0.0", "1.1.1-rc.1", "latest"} {
		api[tag] = reg.MustPush(t, "demo/api:"+tag, testImage(t, "api "+tag))
	}
	dbOld := digestOf(t, testImage(t, "db old"))
	dbNew := reg.MustPush(t, "demo/db:5", testImage(t, "db new"))
	w := newWatcher(t, reg)

	tilde := MustCompilePolicy(PolicySpec{Mode: ModeSemver, Range: "~1.0"})
	caret := MustCompilePolicy(PolicySpec{Mode: ModeSemver, Range: "^1"})
	var reqs []Request
	for i := range 10 { // ten services on demo/web:1.4 cost one HEAD
		reqs = append(reqs, Request{Key: fmt.Sprintf("web%d", i), Image: ref(t, reg.Ref("demo/web:1.4")), Running: web, Policy: digestPolicy})
	}
	reqs = append(reqs,
		Request{Key: "api-tilde", Image: ref(t, reg.Ref("demo/api:1.0.0")), Running: api["1.0.0"], Policy: tilde},
		Request{Key: "api-caret", Image: ref(t, reg.Ref("demo/api:1.0.0")), Running: api["1.0.0"], Policy: caret},
		Request{Key: "api-newest", Image: ref(t, reg.Ref("demo/api:1.1.0")), Running: api["1.1.0"], Policy: caret},
		Request{Key: "db", Image: ref(t, reg.Ref("demo/db:5")), Running: dbOld, Policy: digestPolicy},
	)
	type want struct {
		change    Change
		candidate string // "" for none
		reason    string // substring
	}
	wants := map[string]want{
		"api-tilde":  {ChangeTag, reg.Ref("demo/api:1.0.1@" + api["1.0.1"]), "1.0.1 is the newest tag in ~1.0"},
		"api-caret":  {ChangeTag, reg.Ref("demo/api:1.1.0@" + api["1.1.0"]), "1.1.0 is the newest tag in ^1"},
		"api-newest": {ChangeNone, "", "tag 1.1.0 still at " + shortDigest(api["1.1.0"])},
		"db":         {ChangeDigest, reg.Ref("demo/db:5@" + dbNew), "tag 5 moved to " + shortDigest(dbNew)},
	}
	for i := range 10 {
		wants[fmt.Sprintf("web%d", i)] = want{ChangeNone, "", "tag 1.4 still at " + shortDigest(web)}
	}

	for pass, wantCounts := range []counts{
		// ping once; one token for the three repositories (the pass
		// announces them, so the first token request asks for all three);
		// one HEAD per unique repo:tag (web:1.4, api:1.0.1, api:1.1.0,
		// db:5); GETs only to validate the three candidates; 6 tags in
		// pages of 2.
		{ping: 1, token: 1, head: 4, get: 3, tags: 3, total: 12},
		// later passes: no ping, tokens cached, candidates cached.
		{ping: 0, token: 0, head: 4, get: 0, tags: 3, total: 7},
	} {
		reg.Reset()
		before := w.Stats()
		results := w.Check(ctxT(t), reqs)
		got := served(reg)
		if got != wantCounts {
			t.Errorf("pass %d: registry served %+v, want %+v", pass+1, got, wantCounts)
		}
		st := w.Stats().Sub(before)
		// The first ping also probes HTTPS on this plain-HTTP registry; the
		// registry never sees that attempt.
		probes := int64(got.ping)
		if st.Requests-st.Pings != int64(got.total-got.ping) || st.Pings != int64(got.ping)+probes || st.Errors != 0 ||
			st.ManifestHeads != int64(got.head) || st.ManifestGets != int64(got.get) || st.TagPages != int64(got.tags) || st.Tokens != int64(got.token) {
			t.Errorf("pass %d: Stats %+v disagree with the registry's count %+v", pass+1, st, got)
		}
		if len(results) != len(reqs) {
			t.Fatalf("pass %d: %d results, want %d", pass+1, len(results), len(reqs))
		}
		for i, r := range results {
			if r.Key != reqs[i].Key {
				t.Errorf("pass %d: result %d has key %q, want %q (same order as requests)", pass+1, i, r.Key, reqs[i].Key)
				continue
			}
			wt := wants[r.Key]
			if r.Err != nil {
				t.Errorf("pass %d: %s: Err = %v, want nil", pass+1, r.Key, r.Err)
			}
			if r.Change != wt.change {
				t.Errorf("pass %d: %s: Change = %s, want %s (reason %q)", pass+1, r.Key, r.Change, wt.change, r.Reason)
			}
			gotCand := ""
			if r.Candidate != (imageref.Ref{}) {
				gotCand = r.Candidate.String()
			}
			if gotCand != wt.candidate {
				t.Errorf("pass %d: %s: Candidate = %q, want %q", pass+1, r.Key, gotCand, wt.candidate)
			}
			if !strings.Contains(r.Reason, wt.reason) {
				t.Errorf("pass %d: %s: Reason = %q, want it to contain %q", pass+1, r.Key, r.Reason, wt.reason)
			}
			if want := reqs[i].Image.WithDigest(reqs[i].Running); r.Current != want {
				t.Errorf("pass %d: %s: Current = %s, want %s", pass+1, r.Key, r.Current, want)
			}
		}
	}
}

func TestCheckDigestPolicyFollowsTheTag(t *testing.T) {
	reg := tokenRegistry(t)
	d1 := reg.MustPush(t, "demo/app:1.4", testImage(t, "one"))
	w := newWatcher(t, reg)
	image := reg.Ref("demo/app:1.4")

	if r := checkOne(t, w, image, d1, digestPolicy); r.Err != nil || r.Change != ChangeNone {
		t.Fatalf("unchanged tag: change %s, err %v, want none and nil", r.Change, r.Err)
	}
	d2 := reg.MustPush(t, "demo/app:1.4", testImage(t, "two"))
	r := checkOne(t, w, image, d1, digestPolicy)
	if r.Err != nil || r.Change != ChangeDigest {
		t.Fatalf("moved tag: change %s, err %v, want digest and nil", r.Change, r.Err)
	}
	if got, want := r.Candidate.String(), reg.Ref("demo/app:1.4@"+d2); got != want {
		t.Errorf("Candidate = %s, want %s", got, want)
	}
	// Unknown running digest (a locally built image): no proposal, and say why.
	r = checkOne(t, w, image, "", digestPolicy)
	if r.Err != nil || r.Change != ChangeNone || !strings.Contains(r.Reason, "running digest is unknown") {
		t.Errorf("unknown running digest: change %s, err %v, reason %q; want none, nil, a reason about the unknown digest", r.Change, r.Err, r.Reason)
	}
}

func TestCheckSemverNeverDowngradesAndFollowsNewestDigest(t *testing.T) {
	reg := tokenRegistry(t)
	for _, tag := range []string{"1.2.0", "1.3.0", "1.3.0-alpine"} {
		reg.MustPush(t, "demo/app:"+tag, testImage(t, tag))
	}
	running := reg.MustPush(t, "demo/app:1.4.0", testImage(t, "1.4.0"))
	w := newWatcher(t, reg)
	pol := MustCompilePolicy(PolicySpec{Mode: ModeSemver, Range: "^1"})

	r := checkOne(t, w, reg.Ref("demo/app:1.4.0"), running, pol)
	if r.Err != nil || r.Change != ChangeNone {
		t.Fatalf("newest running: change %s, err %v; want none, nil (older 1.3.0 must not be proposed)", r.Change, r.Err)
	}
	rebuilt := reg.MustPush(t, "demo/app:1.4.0", testImage(t, "1.4.0 rebuilt"))
	r = checkOne(t, w, reg.Ref("demo/app:1.4.0"), running, pol)
	if r.Change != ChangeDigest || r.Candidate.String() != reg.Ref("demo/app:1.4.0@"+rebuilt) {
		t.Errorf("rebuilt running tag: change %s candidate %s, want digest %s", r.Change, r.Candidate, reg.Ref("demo/app:1.4.0@"+rebuilt))
	}
	// A running tag that is outside the range is not followed, and nothing older is offered.
	narrow := MustCompilePolicy(PolicySpec{Mode: ModeSemver, Range: "~1.3"})
	r = checkOne(t, w, reg.Ref("demo/app:1.4.0"), running, narrow)
	if r.Err != nil || r.Change != ChangeNone || !strings.Contains(r.Reason, "outside ~1.3") {
		t.Errorf("running outside range: change %s, err %v, reason %q; want none, nil, a reason naming the range", r.Change, r.Err, r.Reason)
	}
}

func TestCheckSemverOnNonVersionTagFailsWithoutRequests(t *testing.T) {
	reg := tokenRegistry(t)
	w := newWatcher(t, reg)
	reg.Reset()
	r := checkOne(t, w, reg.Ref("demo/app:latest"), "", MustCompilePolicy(PolicySpec{Mode: ModeSemver}))
	wantFailed(t, r, ErrPolicyMismatch)
	if !strings.Contains(r.Err.Error(), `use mode "digest"`) {
		t.Errorf("error %q does not say what to do", r.Err)
	}
	if n := len(reg.Requests()); n != 0 {
		t.Errorf("registry got %d requests, want 0", n)
	}
}

func TestCheckFrozenAndExcludedSendNothing(t *testing.T) {
	reg := tokenRegistry(t)
	w := newWatcher(t, reg)
	reg.Reset()
	frozen := MustCompilePolicy(PolicySpec{Mode: ModeSemver, Frozen: true})
	excluded := MustCompilePolicy(PolicySpec{Exclude: []string{"^latest$"}})
	res := w.Check(ctxT(t), []Request{
		{Key: "frozen", Image: ref(t, reg.Ref("demo/app:1.0")), Policy: frozen},
		{Key: "excluded", Image: ref(t, reg.Ref("demo/app:latest")), Policy: excluded},
	})
	for i, want := range []string{"frozen by policy", "tag latest is excluded by policy"} {
		if r := res[i]; r.Err != nil || r.Change != ChangeNone || !strings.Contains(r.Reason, want) {
			t.Errorf("%s: change %s, err %v, reason %q; want none, nil, %q", r.Key, r.Change, r.Err, r.Reason, want)
		}
	}
	if n := len(reg.Requests()); n != 0 {
		t.Errorf("registry got %d requests, want 0", n)
	}
}

func TestCheckBadRequestsFail(t *testing.T) {
	w, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	res := w.Check(ctxT(t), []Request{
		{Key: "nopolicy", Image: imageref.MustParse("127.0.0.1:1/a:1")},
		{Key: "baddigest", Image: imageref.MustParse("127.0.0.1:1/a:1"), Running: "sha256:nope", Policy: digestPolicy},
		{Key: "digestonly", Image: imageref.Ref{Domain: "127.0.0.1:1", Path: "a", Digest: "sha256:" + strings.Repeat("a", 64)}, Policy: digestPolicy},
	})
	for _, r := range res {
		wantFailed(t, r, nil)
	}
}

func TestCheckMultiArchIndex(t *testing.T) {
	reg := tokenRegistry(t)
	amd := v1.Platform{OS: "linux", Architecture: "amd64"}
	arm := v1.Platform{OS: "linux", Architecture: "arm64"}
	idx1, plat1 := testIndex(t, "v1", amd, arm)
	index1, err := reg.PushIndex("demo/multi:1", idx1)
	if err != nil {
		t.Fatal(err)
	}
	w := newWatcher(t, reg)
	image := reg.Ref("demo/multi:1")

	// Running the index digest (pulled by tag): plain equality, no GET.
	reg.Reset()
	if r := checkOne(t, w, image, index1, digestPolicy); r.Err != nil || r.Change != ChangeNone {
		t.Errorf("running index: change %s, err %v; want none, nil", r.Change, r.Err)
	}
	if n := reg.Count(http.MethodGet, "manifest"); n != 0 {
		t.Errorf("running index: %d manifest GETs, want 0", n)
	}

	// Running this platform's manifest out of the index: unchanged; one GET
	// of the index the first time, none after (content under a digest is fixed).
	for pass, wantGets := range []int{1, 0} {
		reg.Reset()
		r := checkOne(t, w, image, plat1["linux/amd64"], digestPolicy)
		if r.Err != nil || r.Change != ChangeNone {
			t.Errorf("pass %d, running platform manifest: change %s, err %v; want none, nil", pass+1, r.Change, r.Err)
		}
		if !strings.Contains(r.Reason, "linux/amd64 image") {
			t.Errorf("pass %d: Reason = %q, want it to name the platform image", pass+1, r.Reason)
		}
		if n := reg.Count(http.MethodGet, "manifest"); n != wantGets {
			t.Errorf("pass %d: %d manifest GETs, want %d", pass+1, n, wantGets)
		}
	}

	// The tag moves to an index whose amd64 image differs: changed, and the
	// candidate is the index (what the tag points at), not the platform image.
	idx2, _ := testIndex(t, "v2", amd, arm)
	index2, err := reg.PushIndex("demo/multi:1", idx2)
	if err != nil {
		t.Fatal(err)
	}
	r := checkOne(t, w, image, plat1["linux/amd64"], digestPolicy)
	if r.Err != nil || r.Change != ChangeDigest || r.Candidate.String() != reg.Ref("demo/multi:1@"+index2) {
		t.Errorf("moved index: change %s, candidate %s, err %v; want digest, %s, nil", r.Change, r.Candidate, r.Err, reg.Ref("demo/multi:1@"+index2))
	}

	// An index without this platform is never proposed.
	w390 := newWatcher(t, reg, func(o *Options) { o.Platform = "linux/s390x" })
	wantFailed(t, checkOne(t, w390, image, index1, digestPolicy), ErrNoPlatform)
}

func TestCheckTokensExpireAndAreRenewed(t *testing.T) {
	reg := tokenRegistry(t)
	d := reg.MustPush(t, "demo/app:1", testImage(t, "x"))
	reg.MustPush(t, "demo/other:1", testImage(t, "y"))
	w := newWatcher(t, reg)
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	w.now = func() time.Time { return time.Unix(0, clock.Load()) }
	reqs := []Request{
		{Key: "a", Image: ref(t, reg.Ref("demo/app:1")), Running: d, Policy: digestPolicy},
		{Key: "b", Image: ref(t, reg.Ref("demo/other:1")), Running: d, Policy: digestPolicy},
	}
	// testenv issues 5-minute tokens; the watcher renews them 30 s early,
	// both repositories' in one request.
	for _, step := range []struct {
		advance    time.Duration
		wantTokens int
	}{{0, 1}, {4 * time.Minute, 0}, {2 * time.Minute, 1}, {time.Second, 0}} {
		clock.Add(int64(step.advance))
		reg.Reset()
		for _, r := range w.Check(ctxT(t), reqs) {
			if r.Err != nil {
				t.Fatalf("%s: %v", r.Key, r.Err)
			}
		}
		if got := reg.Count("", "token"); got != step.wantTokens {
			t.Errorf("after +%s: %d token requests, want %d", step.advance, got, step.wantTokens)
		}
		if got := reg.Count("", "ping"); got != 0 && step.advance != 0 {
			t.Errorf("after +%s: %d pings, want 0 (one per lifetime)", step.advance, got)
		}
	}
}

func TestCheckRevokedTokenIsReplacedOnce(t *testing.T) {
	reg := tokenRegistry(t)
	d := reg.MustPush(t, "demo/app:1", testImage(t, "x"))
	w := newWatcher(t, reg)
	if r := checkOne(t, w, reg.Ref("demo/app:1"), d, digestPolicy); r.Err != nil {
		t.Fatal(r.Err)
	}
	var rejected atomic.Bool
	reg.Intercept(func(rw http.ResponseWriter, req *http.Request) bool {
		if isManifest(req, http.MethodHead) && rejected.CompareAndSwap(false, true) {
			rw.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="http://%s/token",service="testenv"`, req.Host))
			rw.WriteHeader(http.StatusUnauthorized)
			return true
		}
		return false
	})
	reg.Reset()
	r := checkOne(t, w, reg.Ref("demo/app:1"), d, digestPolicy)
	if r.Err != nil || r.Change != ChangeNone {
		t.Fatalf("after a revoked token: change %s, err %v; want none, nil", r.Change, r.Err)
	}
	if got, want := served(reg), (counts{token: 1, head: 2, total: 3}); got != want {
		t.Errorf("registry served %+v, want %+v (one new token, the HEAD again)", got, want)
	}
}

func TestCheckOverHTTP2UsesOneConnection(t *testing.T) {
	reg := testenv.NewRegistry(t, testenv.WithTLS(), testenv.WithTokenAuth(testUser, testPass))
	img := testImage(t, "x")
	d := digestOf(t, img)
	var reqs []Request
	for i := range 40 {
		name := fmt.Sprintf("demo/app%02d:1", i)
		reg.MustPush(t, name, img)
		reqs = append(reqs, Request{Key: name, Image: ref(t, reg.Ref(name)), Running: d, Policy: digestPolicy})
	}
	w := newWatcher(t, reg)
	for pass, wantConns := range []int64{1, 0} {
		reg.Reset()
		before := w.Stats()
		for _, r := range w.Check(ctxT(t), reqs) {
			if r.Err != nil || r.Change != ChangeNone {
				t.Fatalf("%s: change %s, err %v", r.Key, r.Change, r.Err)
			}
		}
		if got := reg.Conns(); got != wantConns {
			t.Errorf("pass %d: registry accepted %d connections, want %d", pass+1, got, wantConns)
		}
		if got := w.Stats().Sub(before).NewConns; got != wantConns {
			t.Errorf("pass %d: Stats.NewConns = %d, want %d", pass+1, got, wantConns)
		}
	}
}

// TestConnectionsOutliveTheDefaultSchedule: with Go's 90 s default, each
// pass of an agent on its default schedule dialled a new TLS connection.
func TestConnectionsOutliveTheDefaultSchedule(t *testing.T) {
	reg := testenv.NewRegistry(t, testenv.WithTLS())
	w := newWatcher(t, reg)
	rt, ok := w.newTransport(reg.Host, 4).(*http.Transport)
	if !ok {
		t.Fatalf("the registry transport is a %T, want an *http.Transport", rt)
	}
	sched, err := config.CronParser.Parse(config.Default().Schedule)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if interval := sched.Next(now).Sub(now); rt.IdleConnTimeout <= interval {
		t.Errorf("idle connections are kept %s, want longer than the default schedule's %s between passes", rt.IdleConnTimeout, interval)
	}
}

func TestCheckBoundsConcurrencyPerRegistry(t *testing.T) {
	reg := testenv.NewRegistry(t)
	img := testImage(t, "x")
	d := digestOf(t, img)
	var reqs []Request
	for i := range 12 {
		name := fmt.Sprintf("demo/app%02d:1", i)
		reg.MustPush(t, name, img)
		reqs = append(reqs, Request{Key: name, Image: ref(t, reg.Ref(name)), Running: d, Policy: digestPolicy})
	}
	var mu sync.Mutex
	inFlight, peak := 0, 0
	reg.Intercept(func(rw http.ResponseWriter, req *http.Request) bool {
		mu.Lock()
		inFlight++
		peak = max(peak, inFlight)
		mu.Unlock()
		time.Sleep(20 * time.Millisecond) // emulated latency, so that requests overlap
		mu.Lock()
		inFlight--
		mu.Unlock()
		return false
	})
	w := newWatcher(t, reg, func(o *Options) {
		o.Registries = []Registry{{Host: reg.Host, Concurrency: 3}}
		o.Concurrency = 10
	})
	for _, r := range w.Check(ctxT(t), reqs) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	if peak > 3 || peak < 2 {
		t.Errorf("peak requests in flight = %d, want 2..3 (bound 3)", peak)
	}
}

func TestCheckRateLimit(t *testing.T) {
	reg := testenv.NewRegistry(t)
	img := testImage(t, "x")
	d := digestOf(t, img)
	var reqs []Request
	for i := range 6 {
		name := fmt.Sprintf("demo/app%02d:1", i)
		reg.MustPush(t, name, img)
		reqs = append(reqs, Request{Key: name, Image: ref(t, reg.Ref(name)), Running: d, Policy: digestPolicy})
	}
	w := newWatcher(t, reg, func(o *Options) { o.Registries = []Registry{{Host: reg.Host, RateLimit: 20}} })
	reg.Reset()
	start := time.Now()
	for _, r := range w.Check(ctxT(t), reqs) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	// 1 ping + 6 HEADs at 20/s with a burst of 1: at least 6 gaps of 50 ms.
	n := len(reg.Requests())
	if minimum := time.Duration(n-1) * 50 * time.Millisecond; time.Since(start) < minimum-5*time.Millisecond {
		t.Errorf("%d requests took %s, want at least %s at 20 requests/s", n, time.Since(start), minimum)
	}
}

func TestResolve(t *testing.T) {
	reg := tokenRegistry(t)
	d := reg.MustPush(t, "demo/app:2.1", testImage(t, "x"))
	w := newWatcher(t, reg)
	reg.Reset()
	got, err := w.Resolve(ctxT(t), ref(t, reg.Ref("demo/app:2.1")))
	if err != nil || got != d {
		t.Fatalf("Resolve = %q, %v; want %q, nil", got, err, d)
	}
	if n := reg.Count(http.MethodGet, "manifest"); n != 0 {
		t.Errorf("Resolve sent %d manifest GETs, want 0", n)
	}
	if n := reg.Count(http.MethodHead, "manifest"); n != 1 {
		t.Errorf("Resolve sent %d manifest HEADs, want 1", n)
	}
	got, err = w.Resolve(ctxT(t), ref(t, reg.Ref("demo/app@"+d)))
	if err != nil || got != d {
		t.Errorf("Resolve by digest = %q, %v; want %q, nil", got, err, d)
	}
	_, err = w.Resolve(ctxT(t), ref(t, reg.Ref("demo/app:9.9")))
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "tag 9.9 not found in "+reg.Host+"/demo/app — was it deleted?") {
		t.Errorf("Resolve of a missing tag: err = %v, want ErrNotFound saying the tag was not found", err)
	}
}

func TestMirrorsAreTriedFirst(t *testing.T) {
	origin := tokenRegistry(t)
	mirror := testenv.NewRegistry(t)
	img := testImage(t, "x")
	d := origin.MustPush(t, "demo/app:1", img)
	mirror.MustPush(t, "demo/app:1", img)
	w := newWatcher(t, origin, func(o *Options) {
		o.Registries[0].Mirrors = []string{"http://" + mirror.Host}
	})
	origin.Reset()
	mirror.Reset()
	if r := checkOne(t, w, origin.Ref("demo/app:1"), d, digestPolicy); r.Err != nil || r.Change != ChangeNone {
		t.Fatalf("via mirror: change %s, err %v", r.Change, r.Err)
	}
	if m, o := mirror.Count(http.MethodHead, "manifest"), len(origin.Requests()); m != 1 || o != 0 {
		t.Errorf("mirror HEADs %d, origin requests %d; want 1 and 0", m, o)
	}
	mirror.Intercept(func(rw http.ResponseWriter, req *http.Request) bool {
		http.Error(rw, "down", http.StatusServiceUnavailable)
		return true
	})
	if r := checkOne(t, w, origin.Ref("demo/app:1"), d, digestPolicy); r.Err != nil || r.Change != ChangeNone {
		t.Fatalf("mirror down: change %s, err %v; want the origin to answer", r.Change, r.Err)
	}
	if n := origin.Count(http.MethodHead, "manifest"); n != 1 {
		t.Errorf("origin HEADs = %d, want 1 after the mirror failed", n)
	}
}

// A registry that answers slowly holds only its own checks: the checks of
// another registry in the same pass go on. The slow registry's requests
// are queued first and outnumber the workers a pass starts, so a pool
// shared by all registries would be filled with them and the fast
// registry would not be asked until the slow one let go.
func TestSlowRegistryDoesNotHoldOtherRegistries(t *testing.T) {
	slow, fast := testenv.NewRegistry(t), testenv.NewRegistry(t)
	img := testImage(t, "x")
	d := digestOf(t, img)
	var reqs []Request
	add := func(reg *testenv.Registry, n int) {
		for i := range n {
			name := fmt.Sprintf("demo/app%02d:1", i)
			reg.MustPush(t, name, img)
			reqs = append(reqs, Request{Key: reg.Host + "/" + name, Image: ref(t, reg.Ref(name)), Running: d, Policy: digestPolicy})
		}
	}
	add(slow, 40)
	add(fast, 5)
	fastDone := make(chan struct{})
	var fastHeads atomic.Int32
	fast.Intercept(func(rw http.ResponseWriter, req *http.Request) bool {
		if isManifest(req, http.MethodHead) && fastHeads.Add(1) == 5 {
			close(fastDone)
		}
		return false
	})
	var starved atomic.Bool
	var servedThen atomic.Int32
	slow.Intercept(func(rw http.ResponseWriter, req *http.Request) bool {
		if isManifest(req, http.MethodHead) && !starved.Load() {
			select {
			case <-fastDone:
			case <-time.After(3 * time.Second):
				if starved.CompareAndSwap(false, true) {
					servedThen.Store(fastHeads.Load())
				}
			}
		}
		return false
	})
	w := newWatcher(t, slow, func(o *Options) {
		o.Registries = []Registry{{Host: slow.Host, Concurrency: 1}, {Host: fast.Host}}
		o.Concurrency = 4
	})
	for _, r := range w.Check(ctxT(t), reqs) {
		if r.Err != nil {
			t.Fatalf("%s: %v", r.Key, r.Err)
		}
	}
	if starved.Load() {
		t.Errorf("the fast registry's HEADs waited for the slow registry (%d of 5 served when the slow registry gave up waiting)", servedThen.Load())
	}
}
