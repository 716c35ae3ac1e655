package watcher

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shipwatch/shipwatch/internal/testenv"
)

// batchEstate pushes n repositories (demo/r00:1 …) to reg and returns one
// digest-policy request per repository, each running the pushed digest.
func batchEstate(t *testing.T, reg *testenv.Registry, n int) []Request {
	t.Helper()
	img := testImage(t, "batch")
	var reqs []Request
	for i := range n {
		name := fmt.Sprintf("demo/r%02d:1", i)
		d := reg.MustPush(t, name, img)
		reqs = append(reqs, Request{Key: name, Image: ref(t, reg.Ref(name)), Running: d, Policy: digestPolicy})
	}
	return reqs
}

// checkAll runs one pass and fails the test on any error or change.
func checkAll(t *testing.T, w *Watcher, reqs []Request) {
	t.Helper()
	for _, r := range w.Check(ctxT(t), reqs) {
		if r.Err != nil || r.Change != ChangeNone {
			t.Fatalf("%s: change %s, err %v; want none, nil", r.Key, r.Change, r.Err)
		}
	}
}

// unauthorizedHeads counts the manifest requests the registry answered 401.
func unauthorizedHeads(reg *testenv.Registry) int {
	n := 0
	for _, q := range reg.Requests() {
		if q.Kind == "manifest" && q.Status == http.StatusUnauthorized {
			n++
		}
	}
	return n
}

// A pass's token renewals go out in batches of up to maxBatchScopes
// repositories when the registry grants several scopes per token, as the
// distribution token spec allows, and every request still succeeds.
func TestTokensAreBatched(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []testenv.RegistryOption
	}{
		{"jwt", nil},
		{"opaque", []testenv.RegistryOption{testenv.WithOpaqueTokens()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := tokenRegistry(t, tc.opts...)
			reqs := batchEstate(t, reg, 30)
			w := newWatcher(t, reg)
			var clock atomic.Int64
			clock.Store(time.Now().UnixNano())
			w.now = func() time.Time { return time.Unix(0, clock.Load()) }
			for pass, advance := range []time.Duration{0, 5 * time.Minute} {
				clock.Add(int64(advance))
				reg.Reset()
				checkAll(t, w, reqs)
				// 30 scopes: one batch of 25 and one of 5.
				if got := reg.Count("", "token"); got != 2 {
					t.Errorf("pass %d: %d token requests for 30 repositories, want 2", pass+1, got)
				}
				if got := unauthorizedHeads(reg); got != 0 {
					t.Errorf("pass %d: %d manifest requests refused, want 0", pass+1, got)
				}
			}
		})
	}
}

// A registry that grants only the first scope of a request: with JWT
// tokens the watcher reads the grants and asks for each other scope alone,
// without a refused request; with opaque tokens it learns from the first
// refusal and stops batching. Every check succeeds either way, and later
// passes cost no more token requests than one per repository.
func TestTokenBatchesFallBackToOneScope(t *testing.T) {
	for _, tc := range []struct {
		name      string
		opts      []testenv.RegistryOption
		refusals  int // at most, first pass
		firstPass int // token requests at most, first pass
	}{
		{"jwt", nil, 0, 10},
		{"opaque", []testenv.RegistryOption{testenv.WithOpaqueTokens()}, 9, 11},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := tokenRegistry(t, append(tc.opts, testenv.WithFirstScopeOnly())...)
			reqs := batchEstate(t, reg, 10)
			w := newWatcher(t, reg)
			var clock atomic.Int64
			clock.Store(time.Now().UnixNano())
			w.now = func() time.Time { return time.Unix(0, clock.Load()) }

			reg.Reset()
			checkAll(t, w, reqs)
			if got := reg.Count("", "token"); got < 10 || got > tc.firstPass {
				t.Errorf("first pass: %d token requests, want 10..%d", got, tc.firstPass)
			}
			if got := unauthorizedHeads(reg); got > tc.refusals {
				t.Errorf("first pass: %d manifest requests refused, want at most %d", got, tc.refusals)
			}

			clock.Add(int64(5 * time.Minute))
			reg.Reset()
			checkAll(t, w, reqs)
			if got := reg.Count("", "token"); got != 10 {
				t.Errorf("after expiry: %d token requests, want 10 (one per repository)", got)
			}
			if got := unauthorizedHeads(reg); got != 0 {
				t.Errorf("after expiry: %d manifest requests refused, want 0", got)
			}
		})
	}
}

// A token endpoint that refuses a request with several scopes (here 414,
// as a server with a short URL limit would) makes the watcher ask for one
// scope per request from then on; no check fails.
func TestTokenBatchRefusedByTheServer(t *testing.T) {
	reg := tokenRegistry(t)
	reqs := batchEstate(t, reg, 6)
	var refused atomic.Int64
	reg.Use(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/token" && len(r.URL.Query()["scope"]) > 1 {
				refused.Add(1)
				http.Error(w, "request URI too long", http.StatusRequestURITooLong)
				return
			}
			next.ServeHTTP(w, r)
		})
	})
	w := newWatcher(t, reg)
	reg.Reset()
	checkAll(t, w, reqs)
	if refused.Load() != 1 {
		t.Errorf("%d batch token requests refused, want 1 (then one scope per request)", refused.Load())
	}
	if got := reg.Count("", "token"); got != 7 {
		t.Errorf("%d token requests, want 7 (the refused batch, then one per repository)", got)
	}
}

func TestTokenScopes(t *testing.T) {
	enc := base64.RawURLEncoding.EncodeToString
	jwt := func(claims string) string {
		return enc([]byte(`{"alg":"ES256"}`)) + "." + enc([]byte(claims)) + ".c2ln"
	}
	for _, tc := range []struct {
		name   string
		token  string
		scopes []string
		ok     bool
	}{
		{"grants", jwt(`{"access":[{"type":"repository","name":"o/a","actions":["pull"]},{"type":"repository","name":"o/b","actions":["push","pull"]},{"type":"repository","name":"o/c","actions":["push"]},{"type":"registry","name":"catalog","actions":["*"]},{"type":"repository","name":"o/d","actions":["*"]}]}`),
			[]string{"repository:o/a:pull", "repository:o/b:pull", "repository:o/d:pull"}, true},
		{"empty access", jwt(`{"access":[]}`), []string{}, true},
		{"padded payload", enc([]byte(`{}`)) + "." + base64.URLEncoding.EncodeToString([]byte(`{"access":[{"type":"repository","name":"o/a","actions":["pull"]}]}`)) + ".x",
			[]string{"repository:o/a:pull"}, true},
		{"no access claim", jwt(`{"sub":"u"}`), nil, false},
		{"opaque", "djE6b3JnL3JlcG86MTIz", nil, false},
		{"not base64", "a.!!!.c", nil, false},
		{"not JSON", jwt(`access`), nil, false},
		{"access of the wrong type", jwt(`{"access":"all"}`), nil, false},
	} {
		got, ok := tokenScopes(tc.token)
		if ok != tc.ok || !slices.Equal(got, tc.scopes) {
			t.Errorf("%s: tokenScopes = %q, %v; want %q, %v", tc.name, got, ok, tc.scopes, tc.ok)
		}
	}
}

// recordingFetch is a token fetch that records the scopes of every request
// and grants them all (an opaque token per request: t1, t2, …).
type recordingFetch struct {
	mu    sync.Mutex
	asked [][]string
}

func (f *recordingFetch) fetch(_ context.Context, s []string) (tokenGrant, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, s)
	return tokenGrant{token: fmt.Sprintf("t%d", len(f.asked)), expires: time.Now().Add(time.Minute)}, nil
}

func (f *recordingFetch) requests() [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.asked)
}

// announcedAuth is a token cache with n scopes (o/r00 …) announced.
func announcedAuth(n int) (*auth, []string) {
	a := newAuth(nil, nil, "reg.example", time.Now)
	var scopes []string
	for i := range n {
		scopes = append(scopes, pullScope(fmt.Sprintf("o/r%02d", i)))
	}
	a.expect(scopes)
	return a, scopes
}

// A batch takes the scopes announced right after the one asked for, in
// the pass's order, so that requests sent close together share a token;
// a batch granted whole makes the next batch be asked for at once, before
// any caller needs it.
func TestTokenBatchFollowsTheAnnouncedOrder(t *testing.T) {
	a, scopes := announcedAuth(40)
	f := &recordingFetch{}
	if _, err := a.token(context.Background(), scopes[30], true, f.fetch); err != nil {
		t.Fatal(err)
	}
	// From r30 on, wrapping round to the start of the announcement.
	want := append(append([]string{}, scopes[30:]...), scopes[:15]...)
	if asked := f.requests(); len(asked) == 0 || !slices.Equal(asked[0], want) {
		t.Fatalf("token requests asked for %q, want the first for %q", asked, want)
	}
	// The rest is asked for without a caller asking: the prefetch.
	testenv.Eventually(t, 10*time.Second, time.Millisecond, func() (bool, string) {
		asked := f.requests()
		return len(asked) == 2, fmt.Sprintf("token requests %q, want a second, prefetched one", asked)
	})
	if tok, err := a.token(context.Background(), scopes[15], true, f.fetch); err != nil || tok != "t2" {
		t.Fatalf("token for r15 = %q, %v; want the prefetched t2", tok, err)
	}
	if asked := f.requests(); len(asked) != 2 || !slices.Equal(asked[1], scopes[15:30]) {
		t.Fatalf("token requests %q, want the second for %q and no third", asked, scopes[15:30])
	}
	for i, s := range scopes {
		tok, ok := a.validLocked(s)
		if wantTok := map[bool]string{true: "t1", false: "t2"}[i >= 30 || i < 15]; !ok || tok != wantTok {
			t.Errorf("%s: cached token %q, %v; want %q", s, tok, ok, wantTok)
		}
	}
}

// No batch is prefetched after one the registry did not grant whole: it
// grants one scope per request, and a prefetch would cost a request
// without saving one.
func TestTokenPrefetchNeedsAWholeGrant(t *testing.T) {
	a, scopes := announcedAuth(40)
	var calls atomic.Int64
	fetch := func(_ context.Context, s []string) (tokenGrant, error) {
		calls.Add(1)
		return tokenGrant{token: "one", expires: time.Now().Add(time.Minute), scopes: s[:1]}, nil
	}
	if _, err := a.token(context.Background(), scopes[0], true, fetch); err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	inflight := len(a.inflight)
	a.mu.Unlock()
	if n := calls.Load(); n != 1 || inflight != 0 {
		t.Errorf("after a partial grant: %d token requests, %d scopes in flight; want 1 and 0", n, inflight)
	}
}

// A caller waiting for a token request that another, cancelled check made
// is not failed by that cancellation: it asks again itself.
func TestTokenWaiterOutlivesACancelledFetcher(t *testing.T) {
	a := newAuth(nil, nil, "reg.example", time.Now)
	a.expect([]string{"repository:o/a:pull", "repository:o/b:pull"})
	started, release := make(chan struct{}), make(chan struct{})
	var calls atomic.Int64
	fetch := func(ctx context.Context, s []string) (tokenGrant, error) {
		if calls.Add(1) == 1 {
			close(started)
			<-release
			return tokenGrant{}, &Error{Kind: ErrUnavailable, Cause: ctx.Err()}
		}
		return tokenGrant{token: "fresh", expires: time.Now().Add(time.Minute)}, nil
	}
	cancelled, cancel := context.WithCancel(context.Background())
	firstErr := make(chan error, 1)
	go func() {
		_, err := a.token(cancelled, "repository:o/a:pull", true, fetch)
		firstErr <- err
	}()
	<-started
	waiting := make(chan struct{})
	a.mu.Lock()
	a.onWait = func(string) { close(waiting) }
	a.mu.Unlock()
	waiterTok := make(chan string, 1)
	go func() {
		tok, err := a.token(context.Background(), "repository:o/b:pull", true, fetch)
		if err != nil {
			tok = "error: " + err.Error()
		}
		waiterTok <- tok
	}()
	<-waiting // the waiter joined the batch in flight, before it fails
	cancel()
	close(release)
	if err := <-firstErr; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled caller: err %v, want context.Canceled", err)
	}
	if tok := <-waiterTok; tok != "fresh" {
		t.Errorf("waiter got %q, want the token of its own request", tok)
	}
}
