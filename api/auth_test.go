package api

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/shipwatch/shipwatch/metrics"
)

func TestTokenAuth(t *testing.T) {
	m := metrics.New()
	s := newTestServer(t, &fakeBackend{}, func(o *Options) { o.Metrics = m })
	tests := []struct {
		name     string
		header   map[string]string
		wantCode int
		wantMsg  string
	}{
		{"no token", map[string]string{"Authorization": ""}, 401, "missing token"},
		{"wrong token", map[string]string{"Authorization": "Bearer " + testToken + "x"}, 401, "wrong token"},
		{"token prefix", map[string]string{"Authorization": "Bearer " + testToken[:10]}, 401, "wrong token"},
		{"basic auth", map[string]string{"Authorization": "Basic " + testToken}, 401, "missing token"},
		{"token in another header", map[string]string{"Authorization": "", "X-Shipwatch-Token": testToken}, 401, "missing token"},
		{"right token", nil, 200, ""},
		{"right token, lower-case scheme", map[string]string{"Authorization": "bearer " + testToken}, 200, ""},
	}
	failures := 0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, s, request{method: "GET", path: "/v1/targets", header: tt.header, remote: fmt.Sprintf("192.0.2.%d:1", len(tt.name))})
			if r.code != tt.wantCode {
				t.Fatalf("status: got %d, want %d (%s)", r.code, tt.wantCode, r.body)
			}
			if tt.wantCode == 401 {
				failures++
				if msg := errorOf(t, r); !strings.Contains(msg, tt.wantMsg) {
					t.Errorf("error: got %q, want it to contain %q", msg, tt.wantMsg)
				}
				if got := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
					t.Errorf("WWW-Authenticate: got %q, want Bearer …", got)
				}
				if strings.Contains(r.body, testToken[:10]) {
					t.Errorf("body %q echoes the token", r.body)
				}
			}
		})
	}
	if got := gauge(t, m, "shipwatch_api_auth_failures_total", nil); got != float64(failures) {
		t.Errorf("shipwatch_api_auth_failures_total: got %v, want %d", got, failures)
	}
	// /healthz needs no token (container health checks); /metrics does.
	if r := do(t, s, request{method: "GET", path: "/healthz", noAuth: true}); r.code != 200 {
		t.Errorf("GET /healthz without token: got %d, want 200", r.code)
	}
	if r := do(t, s, request{method: "GET", path: "/metrics", noAuth: true}); r.code != 401 {
		t.Errorf("GET /metrics without token: got %d, want 401", r.code)
	}
}

func TestAuthFailuresAreRateLimitedPerClient(t *testing.T) {
	s := newTestServer(t, &fakeBackend{}, func(o *Options) { o.AuthFailures = 3; o.AuthFailureRefill = time.Hour })
	bad := map[string]string{"Authorization": "Bearer wrong-token-0000000000"}
	for i := range 3 {
		if r := do(t, s, request{method: "GET", path: "/v1/targets", header: bad, remote: "198.51.100.7:1000"}); r.code != 401 {
			t.Fatalf("failure %d: got %d, want 401", i+1, r.code)
		}
	}
	r := do(t, s, request{method: "GET", path: "/v1/targets", header: bad, remote: "198.51.100.7:1001"})
	if r.code != 429 {
		t.Fatalf("fourth failure: got %d, want 429", r.code)
	}
	errorOf(t, r)
	if got := r.header.Get("Retry-After"); got == "" || got == "0" {
		t.Errorf("Retry-After: got %q, want a positive number of seconds", got)
	}
	// Locked out even with the right token: no more guesses from there.
	if r := do(t, s, request{method: "GET", path: "/v1/targets", remote: "198.51.100.7:1002"}); r.code != 429 {
		t.Errorf("right token from a locked-out client: got %d, want 429", r.code)
	}
	// Webhook guesses from the same address are refused as well.
	if r := do(t, s, request{method: "POST", path: "/v1/webhooks/dockerhub?token=" + testSecret, body: "{}", remote: "198.51.100.7:1003"}); r.code != 429 {
		t.Errorf("webhook from a locked-out client: got %d, want 429", r.code)
	}
	// Another client is not affected.
	if r := do(t, s, request{method: "GET", path: "/v1/targets", remote: "198.51.100.8:1000"}); r.code != 200 {
		t.Errorf("right token from another client: got %d, want 200", r.code)
	}
}

func TestLimiterRefillsAndStaysBounded(t *testing.T) {
	now := time.Unix(0, 0)
	l := newLimiter(2, time.Minute, func() time.Time { return now })
	l.fail("a")
	l.fail("a")
	if wait, ok := l.allowed("a"); ok || wait != time.Minute {
		t.Fatalf("after 2 failures: got allowed=%t wait=%s, want false 1m0s", ok, wait)
	}
	now = now.Add(30 * time.Second)
	if wait, ok := l.allowed("a"); ok || wait != 30*time.Second {
		t.Fatalf("30s later: got allowed=%t wait=%s, want false 30s", ok, wait)
	}
	now = now.Add(30 * time.Second)
	if _, ok := l.allowed("a"); !ok {
		t.Fatalf("a minute later: got not allowed, want allowed")
	}

	// Many addresses: the table never grows past its bound, and once it is
	// full of recent offenders, new addresses share the overflow bucket.
	for i := range maxLimiterEntries + 100 {
		ip := fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)
		l.fail(ip)
		l.fail(ip)
	}
	if got := len(l.buckets); got > maxLimiterEntries {
		t.Errorf("buckets: got %d, want at most %d", got, maxLimiterEntries)
	}
	if _, ok := l.allowed("203.0.113.9"); ok {
		t.Errorf("new address while the table is full of offenders: got allowed, want the drained overflow bucket to refuse")
	}
	now = now.Add(time.Hour)
	l.fail("203.0.113.10")
	if _, ok := l.buckets["203.0.113.10"]; !ok {
		t.Errorf("after the offenders' buckets refilled: got no bucket of its own for a new address, want one")
	}
}

func TestTokenlessLoopbackRefusesForeignHostNames(t *testing.T) {
	s, err := New(&fakeBackend{}, Options{Listen: "127.0.0.1:8080"})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer s.Close()
	tests := []struct {
		host string
		want int
	}{
		{"127.0.0.1:8080", 200},
		{"localhost:8080", 200},
		{"[::1]:8080", 200},
		{"attacker.example.com:8080", 403},
	}
	for _, tt := range tests {
		req := request{method: "GET", path: "/v1/targets", noAuth: true}
		rec := do(t, s, withHost(req, tt.host))
		if rec.code != tt.want {
			t.Errorf("Host %s: got %d, want %d", tt.host, rec.code, tt.want)
		}
	}
}

func withHost(r request, host string) request {
	if r.header == nil {
		r.header = map[string]string{}
	}
	r.header["Host"] = host
	return r
}
