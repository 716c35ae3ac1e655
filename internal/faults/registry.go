package faults

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shipwatch/shipwatch/internal/testenv"
)

// Client says who sent a registry request. The fault rules select on it, so
// that a fault can hit the Docker engine's pull and spare shipwatch's own
// requests, or the other way round.
type Client string

// The clients of the test registry.
const (
	// Engine is the Docker engine (pulls, Swarm's distribution inspect).
	Engine Client = "engine"
	// Watcher is shipwatch's registry watcher (tag HEADs, tag lists).
	Watcher Client = "watcher"
	// Verifier is shipwatch's verifier (manifests by digest, referrers,
	// signature and attestation blobs).
	Verifier Client = "verifier"
	// Driver is the fault suite itself (pushes and tag moves during a run):
	// never faulted.
	Driver Client = "driver"
)

// driverAgent is the User-Agent of the suite's own registry requests.
const driverAgent = "shipwatch-faults-driver"

// ClientOf tells the client of a request from its User-Agent: the engine
// says "docker/…", the watcher "shipwatch", the verifier (go-containerregistry)
// anything else.
func ClientOf(r *http.Request) Client {
	ua := r.UserAgent()
	switch {
	case strings.Contains(ua, driverAgent):
		return Driver
	case strings.HasPrefix(ua, "docker/") || strings.Contains(ua, " docker/"):
		return Engine
	case ua == "shipwatch" || strings.HasPrefix(ua, "shipwatch "):
		return Watcher
	}
	return Verifier
}

// Fault is what happens to a request a Rule matches. Exactly one of the
// fields is usually set; Latency combines with the others.
type Fault struct {
	// Status answers with this HTTP status and a distribution error body.
	Status int
	// RetryAfter is sent with Status (429, 503): seconds or an HTTP date.
	RetryAfter string
	// Latency delays the request before anything else happens.
	Latency time.Duration
	// Hang holds the request until the client gives up (or HangMax passes,
	// then the connection is reset): a registry that accepts and never answers.
	Hang    bool
	HangMax time.Duration
	// Reset hijacks the connection and closes it with a TCP RST before any
	// answer (a registry that died, a proxy that dropped the connection).
	Reset bool
	// TruncateAfter lets the real answer through with its headers (and its
	// Content-Length) but cuts the body after this many bytes, then resets
	// the connection: a transfer broken mid-body. A negative value cuts
	// half-way through.
	TruncateAfter int
	// Truncate enables TruncateAfter (0 bytes is a valid cut).
	Truncate bool
}

func (f Fault) String() string {
	var parts []string
	if f.Latency > 0 {
		parts = append(parts, "latency "+f.Latency.String())
	}
	switch {
	case f.Status != 0 && f.RetryAfter != "":
		parts = append(parts, fmt.Sprintf("HTTP %d Retry-After %s", f.Status, f.RetryAfter))
	case f.Status != 0:
		parts = append(parts, fmt.Sprintf("HTTP %d", f.Status))
	case f.Hang:
		parts = append(parts, "hang")
	case f.Reset:
		parts = append(parts, "reset")
	case f.Truncate:
		parts = append(parts, fmt.Sprintf("truncate after %d bytes", f.TruncateAfter))
	}
	return strings.Join(parts, ", ")
}

// Rule matches requests and applies a Fault to them.
type Rule struct {
	// Name labels the rule in the fault log.
	Name string
	// Clients, Kinds (testenv.KindOf: manifest, blob, tags, referrers,
	// token, ping) and Methods restrict the match; empty matches any.
	Clients []Client
	Kinds   []string
	Methods []string
	// PathContains, when set, must be part of the request path.
	PathContains string
	// Times is how many requests the rule faults (0: unlimited).
	Times int
	// Skip lets this many matching requests through before faulting.
	Skip int
	// Fault is applied to the matched requests.
	Fault Fault
	// Before, when set, runs before the matched request is served normally
	// (Fault is ignored): a hook to change the registry between two
	// requests, like moving a tag or deleting a manifest.
	Before func()
	// After is Before, run after the request was served.
	After func()

	seen, hits int
}

func (r *Rule) matches(req *http.Request, c Client) bool {
	if len(r.Clients) > 0 && !has(r.Clients, c) {
		return false
	}
	if len(r.Kinds) > 0 && !has(r.Kinds, testenv.KindOf(req.URL.Path)) {
		return false
	}
	if len(r.Methods) > 0 && !has(r.Methods, req.Method) {
		return false
	}
	return r.PathContains == "" || strings.Contains(req.URL.Path, r.PathContains)
}

func has[T comparable](list []T, v T) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// Hit is one request a rule acted on.
type Hit struct {
	Time   time.Time
	Rule   string
	Client Client
	Method string
	Path   string
	Fault  string
}

// Injector is a fault-injecting middleware for a testenv.Registry: install
// it with Attach; add and remove rules while the agent runs.
type Injector struct {
	mu    sync.Mutex
	rules []*Rule
	hits  []Hit
	seen  map[Client]int
	all   []Hit // every request, faulted or not
}

// NewInjector returns an injector with no rules.
func NewInjector() *Injector { return &Injector{seen: map[Client]int{}} }

// Attach installs the injector in front of reg.
func (in *Injector) Attach(reg *testenv.Registry) { reg.Use(in.Middleware) }

// Add appends rules (first match wins).
func (in *Injector) Add(rules ...*Rule) {
	in.mu.Lock()
	in.rules = append(in.rules, rules...)
	in.mu.Unlock()
}

// Remove takes rule out.
func (in *Injector) Remove(rule *Rule) {
	in.mu.Lock()
	defer in.mu.Unlock()
	for i, r := range in.rules {
		if r == rule {
			in.rules = append(in.rules[:i], in.rules[i+1:]...)
			return
		}
	}
}

// Requests returns every request the registry received from client whose
// path contains substr (empty: any), faulted or not, in order.
func (in *Injector) Requests(c Client, substr string) []Hit {
	in.mu.Lock()
	defer in.mu.Unlock()
	var out []Hit
	for _, h := range in.all {
		if h.Client == c && strings.Contains(h.Path, substr) {
			out = append(out, h)
		}
	}
	return out
}

// Clear removes every rule.
func (in *Injector) Clear() {
	in.mu.Lock()
	in.rules = nil
	in.mu.Unlock()
}

// Hits returns the requests the rules acted on.
func (in *Injector) Hits() []Hit {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]Hit(nil), in.hits...)
}

// Seen returns how many requests each client sent.
func (in *Injector) Seen(c Client) int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.seen[c]
}

// pick finds the rule for req and counts it.
func (in *Injector) pick(req *http.Request) (*Rule, Client) {
	c := ClientOf(req)
	in.mu.Lock()
	defer in.mu.Unlock()
	in.seen[c]++
	in.all = append(in.all, Hit{Time: time.Now(), Client: c, Method: req.Method, Path: req.URL.Path})
	if c == Driver {
		return nil, c
	}
	for _, r := range in.rules {
		if !r.matches(req, c) {
			continue
		}
		r.seen++
		if r.seen <= r.Skip {
			return nil, c
		}
		if r.Times > 0 && r.hits >= r.Times {
			continue
		}
		r.hits++
		desc := r.Fault.String()
		switch {
		case r.Before != nil:
			desc = "hook before the request"
		case r.After != nil:
			desc = "hook after the request"
		}
		in.hits = append(in.hits, Hit{Time: time.Now(), Rule: r.Name, Client: c, Method: req.Method, Path: req.URL.Path, Fault: desc})
		return r, c
	}
	return nil, c
}

// Middleware applies the rules to every request before next serves it.
func (in *Injector) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		rule, _ := in.pick(req)
		if rule == nil {
			next.ServeHTTP(w, req)
			return
		}
		if rule.Before != nil || rule.After != nil {
			if rule.Before != nil {
				rule.Before()
			}
			next.ServeHTTP(w, req)
			if rule.After != nil {
				rule.After()
			}
			return
		}
		f := rule.Fault
		if f.Latency > 0 {
			select {
			case <-time.After(f.Latency):
			case <-req.Context().Done():
				return
			}
		}
		switch {
		case f.Status != 0:
			if f.RetryAfter != "" {
				w.Header().Set("Retry-After", f.RetryAfter)
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(f.Status)
			fmt.Fprintf(w, `{"errors":[{"code":%q,"message":"injected fault"}]}`+"\n", codeFor(f.Status))
		case f.Hang:
			limit := f.HangMax
			if limit <= 0 {
				limit = 2 * time.Minute
			}
			select {
			case <-req.Context().Done():
			case <-time.After(limit):
				reset(w)
			}
		case f.Reset:
			reset(w)
		case f.Truncate:
			next.ServeHTTP(&truncWriter{ResponseWriter: w, after: f.TruncateAfter}, req)
		default:
			next.ServeHTTP(w, req)
		}
	})
}

func codeFor(status int) string {
	switch status {
	case http.StatusUnauthorized:
		return "UNAUTHORIZED"
	case http.StatusNotFound:
		return "MANIFEST_UNKNOWN"
	case http.StatusTooManyRequests:
		return "TOOMANYREQUESTS"
	}
	return "UNAVAILABLE"
}

// reset closes the request's connection with a TCP RST (linger 0), so the
// client sees "connection reset by peer" rather than a clean EOF.
func reset(w http.ResponseWriter) {
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler) // the server drops the connection
	}
	if buf != nil && buf.Writer.Buffered() > 0 {
		_ = buf.Flush()
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// truncWriter passes the answer through and cuts its body after a number
// of bytes (half of Content-Length when negative), then resets the connection.
type truncWriter struct {
	http.ResponseWriter
	after   int
	written int
	status  int
	cut     bool
}

func (t *truncWriter) WriteHeader(code int) {
	t.status = code
	if t.after < 0 {
		n, _ := strconv.Atoi(t.Header().Get("Content-Length"))
		t.after = n / 2
	}
	t.ResponseWriter.WriteHeader(code)
}

func (t *truncWriter) Write(p []byte) (int, error) {
	if t.status == 0 {
		t.WriteHeader(http.StatusOK)
	}
	if t.cut {
		return len(p), nil // swallow the rest; the connection is gone
	}
	room := t.after - t.written
	if room >= len(p) {
		t.written += len(p)
		return t.ResponseWriter.Write(p)
	}
	if room > 0 {
		_, _ = t.ResponseWriter.Write(p[:room])
		t.written += room
	}
	t.cut = true
	http.NewResponseController(t.ResponseWriter).Flush() //nolint:errcheck
	reset(t.ResponseWriter)
	return len(p), nil
}

// Unwrap lets http.ResponseController reach the connection.
func (t *truncWriter) Unwrap() http.ResponseWriter { return t.ResponseWriter }
