package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shipwatch/shipwatch/state"
)

// fakeBackend records what the API asked for and answers with canned values.
type fakeBackend struct {
	mu       sync.Mutex
	calls    []string
	args     []any
	hints    []Hint
	hintTime []time.Time
	trigger  chan Hint // every Trigger is also sent here when not nil

	err      error // returned by every call that returns an error
	notReady error
	block    chan struct{} // Rollout waits for it when not nil
	started  chan context.Context
}

var _ Backend = (*fakeBackend)(nil)

func (f *fakeBackend) record(call string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
	f.args = append(f.args, args)
}

func (f *fakeBackend) called() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeBackend) lastArgs() []any {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.args) == 0 {
		return nil
	}
	return f.args[len(f.args)-1].([]any)
}

func (f *fakeBackend) Targets(context.Context) (any, error) {
	f.record("Targets")
	return map[string]any{"targets": []string{"compose:shop/web"}}, f.err
}

func (f *fakeBackend) History(_ context.Context, target string, limit int) ([]state.Entry, error) {
	f.record("History", target, limit)
	if f.err != nil {
		return nil, f.err
	}
	return nil, nil
}

func (f *fakeBackend) Check(_ context.Context, targets []string) (any, error) {
	f.record("Check", targets)
	return map[string]any{"checked": len(targets)}, f.err
}

func (f *fakeBackend) Rollout(ctx context.Context, req RolloutRequest) (any, error) {
	f.record("Rollout", req)
	if f.started != nil {
		f.started <- ctx
	}
	if f.block != nil {
		<-f.block
	}
	return map[string]any{"outcome": "updated"}, f.err
}

func (f *fakeBackend) Rollback(_ context.Context, target, to string) (any, error) {
	f.record("Rollback", target, to)
	return map[string]any{"outcome": "rolled-back"}, f.err
}

func (f *fakeBackend) Approvals(context.Context) ([]state.Approval, error) {
	f.record("Approvals")
	return []state.Approval{{Target: "compose:shop/web", Candidate: "docker.io/acme/shop:1.5@" + appDigest}}, f.err
}

func (f *fakeBackend) Approve(_ context.Context, target, candidate, by string) (state.Approval, error) {
	f.record("Approve", target, candidate, by)
	return state.Approval{Target: target, Candidate: candidate, Approved: true, ApprovedBy: by}, f.err
}

func (f *fakeBackend) Quarantine(context.Context) ([]state.Quarantined, error) {
	f.record("Quarantine")
	return nil, f.err
}

func (f *fakeBackend) ClearQuarantine(_ context.Context, target, digest string) (int, error) {
	f.record("ClearQuarantine", target, digest)
	return 2, f.err
}

func (f *fakeBackend) Trigger(_ context.Context, h Hint) int {
	f.mu.Lock()
	f.hints = append(f.hints, h)
	f.hintTime = append(f.hintTime, time.Now())
	ch := f.trigger
	f.mu.Unlock()
	if ch != nil {
		ch <- h
	}
	return 1
}

func (f *fakeBackend) triggered() []Hint {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Hint(nil), f.hints...)
}

func (f *fakeBackend) Ready(context.Context) error { return f.notReady }

const (
	testToken  = "tok-3f9a1c7e5b2d4f6a8c0e"
	testSecret = "hook-8d6b4f2a0c9e7d5b3f1a"
)

// newTestServer builds a server on fake with the test token and secret.
func newTestServer(t *testing.T, fake *fakeBackend, mod func(*Options)) *Server {
	t.Helper()
	opts := Options{Listen: "0.0.0.0:8080", Token: testToken, WebhookSecret: testSecret, WebhookDelay: 10 * time.Millisecond, WebhookMinInterval: 10 * time.Millisecond}
	if mod != nil {
		mod(&opts)
	}
	s, err := New(fake, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// request is one call of a test.
type request struct {
	method, path string
	body         string
	header       map[string]string
	remote       string // client address, default 192.0.2.1:1234
	noAuth       bool   // do not send the test token
}

type response struct {
	code   int
	header http.Header
	body   string
}

// do runs r through the handler.
func do(t *testing.T, s *Server, r request) response {
	t.Helper()
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	req := httptest.NewRequest(r.method, r.path, body)
	req.RemoteAddr = "192.0.2.1:1234"
	if r.remote != "" {
		req.RemoteAddr = r.remote
	}
	if r.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if !r.noAuth {
		req.Header.Set("Authorization", "Bearer "+testToken)
	}
	for k, v := range r.header {
		if k == "Host" {
			req.Host = v
			continue
		}
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	return response{code: rec.Code, header: rec.Header(), body: rec.Body.String()}
}

// errorOf decodes an error answer, failing when it is not {"error": "..."}.
func errorOf(t *testing.T, r response) string {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	dec := json.NewDecoder(bytes.NewReader([]byte(r.body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || e.Error == "" {
		t.Fatalf("body %q: got no JSON {\"error\": ...}, want one (%v)", r.body, err)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("error content type: got %q, want application/json", ct)
	}
	return e.Error
}

// eventually waits for cond with a deadline (no sleeping as readiness).
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %s", what, timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
