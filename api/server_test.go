package api

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/shipwatch/shipwatch/metrics"
)

func TestNewRefusesUnsafeOptions(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		wantErr string
	}{
		{"loopback without token", Options{Listen: "127.0.0.1:8080"}, ""},
		{"localhost without token", Options{Listen: "localhost:8080"}, ""},
		{"ipv6 loopback without token", Options{Listen: "[::1]:8080"}, ""},
		{"default listen without token", Options{}, ""},
		{"every interface without token", Options{Listen: ":8080"}, "set a token"},
		{"public address without token", Options{Listen: "0.0.0.0:8080"}, "set a token"},
		{"host name without token", Options{Listen: "agent.example.com:8080"}, "set a token"},
		{"public address with token", Options{Listen: "0.0.0.0:8080", Token: testToken}, ""},
		{"short token", Options{Listen: "0.0.0.0:8080", Token: "hunter2"}, "shorter than 16"},
		{"short webhook secret", Options{WebhookSecret: "hunter2"}, "shorter than 16"},
		{"not host:port", Options{Listen: "8080"}, "not host:port"},
		{"cert without key", Options{TLSCert: "/x.pem"}, "both the TLS certificate and key"},
		{"missing TLS files", Options{TLSCert: "/nonexistent/c.pem", TLSKey: "/nonexistent/k.pem"}, "load TLS certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(&fakeBackend{}, tt.opts)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("New: got error %v, want none", err)
				}
				_ = s.Close()
				return
			}
			if err == nil {
				t.Fatalf("New: got no error, want one containing %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("New: got %q, want it to contain %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("New: error %q holds the secret", err)
			}
		})
	}
	if _, err := New(nil, Options{}); err == nil {
		t.Errorf("New(nil backend): got no error, want one")
	}
}

func TestOptionsNeverPrintSecrets(t *testing.T) {
	o := Options{Listen: "0.0.0.0:8080", Token: testToken, WebhookSecret: testSecret}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		out := fmt.Sprintf(verb, o)
		if strings.Contains(out, testToken) || strings.Contains(out, testSecret) {
			t.Errorf("Sprintf(%s, opts): got %q, want no secrets", verb, out)
		}
	}
}

func TestRoutingErrorsAreJSON(t *testing.T) {
	s := newTestServer(t, &fakeBackend{}, nil)
	tests := []struct {
		name      string
		req       request
		wantCode  int
		wantAllow string
	}{
		{"unknown path", request{method: "GET", path: "/v1/nothing"}, 404, ""},
		{"trailing slash", request{method: "GET", path: "/v1/targets/"}, 404, ""},
		{"delete targets", request{method: "DELETE", path: "/v1/targets"}, 405, "GET"},
		{"get check", request{method: "GET", path: "/v1/check"}, 405, "POST"},
		{"put approvals", request{method: "PUT", path: "/v1/approvals"}, 405, "GET, POST"},
		{"get webhook", request{method: "GET", path: "/v1/webhooks/github"}, 405, "POST"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, s, tt.req)
			if r.code != tt.wantCode {
				t.Fatalf("status: got %d, want %d", r.code, tt.wantCode)
			}
			errorOf(t, r)
			if got := r.header.Get("Allow"); got != tt.wantAllow {
				t.Errorf("Allow: got %q, want %q", got, tt.wantAllow)
			}
		})
	}
}

func TestStrictRequestBodies(t *testing.T) {
	fake := &fakeBackend{}
	s := newTestServer(t, fake, func(o *Options) { o.MaxBody = 4096 })
	tests := []struct {
		name     string
		req      request
		wantCode int
		wantMsg  string
	}{
		{"unknown field", request{method: "POST", path: "/v1/rollouts", body: `{"target":"compose:shop/web","dryrun":true}`}, 400, `unknown field "dryrun" in request body; allowed: target, to, dry_run, allow_drift`},
		{"wrong type", request{method: "POST", path: "/v1/rollouts", body: `{"target":"compose:shop/web","dry_run":"yes"}`}, 400, `field "dry_run": got a JSON string, want true or false`},
		{"array of wrong type", request{method: "POST", path: "/v1/check", body: `{"targets":[1]}`}, 400, `field "targets": got a JSON number, want a string`},
		{"not JSON", request{method: "POST", path: "/v1/rollouts", body: `{"target":`}, 400, "truncated JSON"},
		{"syntax error", request{method: "POST", path: "/v1/rollouts", body: `{"target" "x"}`}, 400, "not valid JSON"},
		{"two objects", request{method: "POST", path: "/v1/rollouts", body: `{"target":"a"}{"target":"b"}`}, 400, "one JSON object"},
		{"array", request{method: "POST", path: "/v1/rollouts", body: `["a"]`}, 400, "must be a JSON object"},
		{"null", request{method: "POST", path: "/v1/rollouts", body: `null`}, 400, "must be a JSON object"},
		{"too large", request{method: "POST", path: "/v1/check", body: `{"targets":["` + strings.Repeat("a", 5000) + `"]}`}, 413, "larger than 4096 bytes"},
		{"form content type", request{method: "POST", path: "/v1/rollouts", body: `{"target":"a"}`, header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}}, 415, "Content-Type: application/json"},
		{"text content type", request{method: "POST", path: "/v1/approvals", body: `{"target":"a"}`, header: map[string]string{"Content-Type": "text/plain"}}, 415, "Content-Type: application/json"},
		{"empty rollout", request{method: "POST", path: "/v1/rollouts"}, 400, "request body is empty"},
		{"missing target", request{method: "POST", path: "/v1/rollouts", body: `{"to":"1.2"}`}, 400, "target: missing"},
		{"target with a space", request{method: "POST", path: "/v1/rollbacks", body: `{"target":"a b"}`}, 400, "control characters or spaces"},
		{"target with a newline", request{method: "POST", path: "/v1/rollbacks", body: `{"target":"a\nb"}`}, 400, "control characters or spaces"},
		{"target too long", request{method: "POST", path: "/v1/rollouts", body: `{"target":"` + strings.Repeat("a", 300) + `"}`}, 400, "longer than 256"},
		{"candidate not a reference", request{method: "POST", path: "/v1/approvals", body: `{"target":"a","candidate":"NOT A REF"}`}, 400, "not an image reference"},
		{"unknown query parameter", request{method: "GET", path: "/v1/targets?verbose=1"}, 400, `unknown query parameter "verbose"; this endpoint takes none`},
		{"repeated query parameter", request{method: "GET", path: "/v1/history?limit=1&limit=2"}, 400, "repeated"},
		{"bad limit", request{method: "GET", path: "/v1/history?limit=all"}, 400, `limit must be a whole number (0 = every entry kept), got "all"`},
		{"negative limit", request{method: "GET", path: "/v1/history?limit=-1"}, 400, "limit must be"},
		{"bare quarantine delete", request{method: "DELETE", path: "/v1/quarantine"}, 400, "all=true"},
		{"quarantine bad digest", request{method: "DELETE", path: "/v1/quarantine?target=a&digest=sha256:zz"}, 400, "not a digest"},
		{"quarantine all with target", request{method: "DELETE", path: "/v1/quarantine?all=true&target=a"}, 400, "do not combine"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(fake.called())
			r := do(t, s, tt.req)
			if r.code != tt.wantCode {
				t.Fatalf("status: got %d, want %d (%s)", r.code, tt.wantCode, r.body)
			}
			if msg := errorOf(t, r); !strings.Contains(msg, tt.wantMsg) {
				t.Errorf("error: got %q, want it to contain %q", msg, tt.wantMsg)
			}
			if got := fake.called()[before:]; len(got) != 0 {
				t.Errorf("backend calls for a refused request: got %v, want none", got)
			}
		})
	}
	// A target list of 1001 small IDs fits in the default 1 MiB body and is
	// refused by count.
	s2 := newTestServer(t, fake, nil)
	r := do(t, s2, request{method: "POST", path: "/v1/check", body: `{"targets":[` + strings.Repeat(`"a",`, 1000) + `"a"]}`})
	if r.code != 400 || !strings.Contains(errorOf(t, r), "at most 1000") {
		t.Errorf("1001 targets: got %d %s, want 400 at most 1000", r.code, r.body)
	}
}

func TestEndpointsCallTheBackend(t *testing.T) {
	tests := []struct {
		name     string
		req      request
		wantCall string
		wantArgs []any
		wantCode int
		wantBody string
	}{
		{"targets", request{method: "GET", path: "/v1/targets"}, "Targets", nil, 200, `{"targets":["compose:shop/web"]}`},
		{"history defaults", request{method: "GET", path: "/v1/history"}, "History", []any{"", 50}, 200, `[]`},
		{"history of a target", request{method: "GET", path: "/v1/history?target=compose:shop/web&limit=5"}, "History", []any{"compose:shop/web", 5}, 200, `[]`},
		{"every history entry", request{method: "GET", path: "/v1/history?target=&limit=0"}, "History", []any{"", 0}, 200, `[]`},
		{"check all", request{method: "POST", path: "/v1/check"}, "Check", []any{[]string(nil)}, 200, `{"checked":0}`},
		{"check some", request{method: "POST", path: "/v1/check", body: `{"targets":["a","b"]}`}, "Check", []any{[]string{"a", "b"}}, 200, `{"checked":2}`},
		{"rollout", request{method: "POST", path: "/v1/rollouts", body: `{"target":"a","to":"1.5.0","dry_run":true,"allow_drift":true}`}, "Rollout",
			[]any{RolloutRequest{Target: "a", To: "1.5.0", DryRun: true, AllowDrift: true}}, 200, `{"outcome":"updated"}`},
		{"rollback", request{method: "POST", path: "/v1/rollbacks", body: `{"target":"a","to":"` + appDigest + `"}`}, "Rollback", []any{"a", appDigest}, 200, `{"outcome":"rolled-back"}`},
		{"approvals", request{method: "GET", path: "/v1/approvals"}, "Approvals", nil, 200,
			`[{"target":"compose:shop/web","candidate":"docker.io/acme/shop:1.5@` + appDigest + `","since":"0001-01-01T00:00:00Z","approved":false}]`},
		{"approve with user", request{method: "POST", path: "/v1/approvals", body: `{"target":"a","candidate":"docker.io/acme/shop:1.5@` + appDigest + `"}`, header: map[string]string{"X-Shipwatch-User": "alice"}},
			"Approve", []any{"a", "docker.io/acme/shop:1.5@" + appDigest, "alice via api from 192.0.2.1"}, 200, ""},
		{"approve with a weird user", request{method: "POST", path: "/v1/approvals", body: `{"target":"a"}`, header: map[string]string{"X-Shipwatch-User": "al ice\r"}},
			"Approve", []any{"a", "", "api from 192.0.2.1"}, 200, ""},
		{"approve with by in the body", request{method: "POST", path: "/v1/approvals", body: `{"target":"a","by":"bob"}`, header: map[string]string{"X-Shipwatch-User": "alice"}},
			"Approve", []any{"a", "", "bob via api from 192.0.2.1"}, 200, ""},
		{"quarantine", request{method: "GET", path: "/v1/quarantine"}, "Quarantine", nil, 200, `[]`},
		{"clear one digest", request{method: "DELETE", path: "/v1/quarantine?target=a&digest=" + appDigest}, "ClearQuarantine", []any{"a", appDigest}, 200, `{"cleared":2}`},
		{"clear a target", request{method: "DELETE", path: "/v1/quarantine?target=a"}, "ClearQuarantine", []any{"a", ""}, 200, `{"cleared":2}`},
		{"clear everything", request{method: "DELETE", path: "/v1/quarantine?all=true"}, "ClearQuarantine", []any{"", ""}, 200, `{"cleared":2}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := &fakeBackend{}
			s := newTestServer(t, fake, nil)
			r := do(t, s, tt.req)
			if r.code != tt.wantCode {
				t.Fatalf("status: got %d, want %d (%s)", r.code, tt.wantCode, r.body)
			}
			if got := fake.called(); len(got) != 1 || got[0] != tt.wantCall {
				t.Fatalf("backend calls: got %v, want [%s]", got, tt.wantCall)
			}
			if tt.wantArgs != nil && !reflect.DeepEqual(fake.lastArgs(), tt.wantArgs) {
				t.Errorf("%s args: got %#v, want %#v", tt.wantCall, fake.lastArgs(), tt.wantArgs)
			}
			if tt.wantBody != "" && strings.TrimSpace(r.body) != tt.wantBody {
				t.Errorf("body:\n got %s\nwant %s", strings.TrimSpace(r.body), tt.wantBody)
			}
			if !json.Valid([]byte(r.body)) {
				t.Errorf("body %q: not JSON", r.body)
			}
		})
	}
}

func TestBackendErrorsChooseTheStatusAndAreRedacted(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"not found", fmt.Errorf("target compose:x: %w", ErrNotFound), 404},
		{"conflict", fmt.Errorf("a rollout of compose:x is running: %w", ErrConflict), 409},
		{"invalid", fmt.Errorf("to: %w", ErrInvalid), 400},
		{"unavailable", fmt.Errorf("shutting down: %w", ErrUnavailable), 503},
		{"deadline", fmt.Errorf("check: %w", context.DeadlineExceeded), 504},
		{"anything else", errors.New("boom"), 500},
		{"credentials in a URL", errors.New("pull https://bot:s3cr3t-pass@registry.example.com/v2/: 401"), 500},
		{"bearer token", errors.New("registry said no to Authorization: Bearer abc.def.ghi"), 500},
		{"token parameter", errors.New(`GET "https://hooks.example.com/x?token=abc123&x=1": EOF`), 500},
		{"our own token", errors.New("bad header " + testToken), 500},
	}
	leaks := []string{"s3cr3t-pass", "abc.def.ghi", "abc123", testToken}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, &fakeBackend{err: tt.err}, nil)
			r := do(t, s, request{method: "POST", path: "/v1/rollbacks", body: `{"target":"a"}`})
			if r.code != tt.want {
				t.Fatalf("status: got %d, want %d", r.code, tt.want)
			}
			msg := errorOf(t, r)
			for _, leak := range leaks {
				if strings.Contains(msg, leak) {
					t.Errorf("error %q: holds the secret %q", msg, leak)
				}
			}
		})
	}
}

func TestInputHoldingTheTokenIsNotEchoed(t *testing.T) {
	s := newTestServer(t, &fakeBackend{}, nil)
	for _, req := range []request{
		{method: "POST", path: "/v1/rollouts", body: `{"` + testToken + `":1}`},
		{method: "GET", path: "/v1/history?" + testToken + "=1"},
		{method: "GET", path: "/v1/history?limit=" + testToken},
		{method: "DELETE", path: "/v1/quarantine?target=a&digest=" + testToken},
	} {
		r := do(t, s, req)
		if r.code != 400 {
			t.Errorf("%s %s: got %d, want 400", req.method, req.path, r.code)
		}
		if msg := errorOf(t, r); strings.Contains(msg, testToken) {
			t.Errorf("%s %s: error %q echoes the token", req.method, req.path, msg)
		}
	}
}

func TestHealthz(t *testing.T) {
	fake := &fakeBackend{}
	s := newTestServer(t, fake, nil)
	r := do(t, s, request{method: "GET", path: "/healthz", noAuth: true})
	if r.code != 200 || strings.TrimSpace(r.body) != `{"status":"ok"}` {
		t.Errorf("ready: got %d %s, want 200 {\"status\":\"ok\"}", r.code, r.body)
	}
	fake.notReady = errors.New("docker engine: connection refused")
	r = do(t, s, request{method: "GET", path: "/healthz", noAuth: true})
	if r.code != 503 {
		t.Fatalf("not ready: got %d, want 503", r.code)
	}
	if msg := errorOf(t, r); msg != "not ready: docker engine: connection refused" {
		t.Errorf("not ready: got %q, want the reason", msg)
	}
}

func TestMetricsEndpoint(t *testing.T) {
	m := metrics.New()
	s := newTestServer(t, &fakeBackend{}, func(o *Options) { o.Metrics = m })
	do(t, s, request{method: "GET", path: "/v1/targets", noAuth: true})
	do(t, s, request{method: "POST", path: "/v1/webhooks/dockerhub?token=" + testSecret, body: "{"})
	r := do(t, s, request{method: "GET", path: "/metrics"})
	if r.code != 200 {
		t.Fatalf("GET /metrics: got %d, want 200", r.code)
	}
	for _, want := range []string{
		"shipwatch_api_auth_failures_total 1",
		`shipwatch_api_requests_total{code="401",route="/v1/targets"} 1`,
		`shipwatch_webhooks_total{result="rejected-body",source="dockerhub"} 1`,
		"go_goroutines",
		"process_resident_memory_bytes",
	} {
		if !strings.Contains(r.body, want) {
			t.Errorf("metrics: got no %q, want it", want)
		}
	}
	for _, leak := range []string{testToken, testSecret} {
		if strings.Contains(r.body, leak) {
			t.Errorf("metrics: hold a secret")
		}
	}

	// Without metrics configured /metrics says so.
	s2 := newTestServer(t, &fakeBackend{}, nil)
	if r := do(t, s2, request{method: "GET", path: "/metrics"}); r.code != 404 {
		t.Errorf("GET /metrics without metrics: got %d, want 404", r.code)
	}
}

// TestRolloutSurvivesTheClientHangingUp: a rollout's ctx is not cancelled
// when the HTTP client goes away, while the request's own ctx is.
func TestRolloutSurvivesTheClientHangingUp(t *testing.T) {
	fake := &fakeBackend{block: make(chan struct{}), started: make(chan context.Context, 1)}
	s := newTestServer(t, fake, nil)
	reqCtx := make(chan context.Context, 1)
	h := s.Handler()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reqCtx <- r.Context()
		h.ServeHTTP(w, r)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+ln.Addr().String()+"/v1/rollouts", strings.NewReader(`{"target":"a"}`))
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("Content-Type", "application/json")
	done := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	rolloutCtx := <-fake.started
	serverCtx := <-reqCtx
	cancel()
	if err := <-done; err == nil {
		t.Fatalf("client: got a response, want the cancelled request to fail")
	}
	select {
	case <-serverCtx.Done():
	case <-time.After(5 * time.Second):
		t.Fatalf("the server did not notice the client hanging up within 5s")
	}
	if err := rolloutCtx.Err(); err != nil {
		t.Errorf("rollout ctx after the client hung up: got %v, want no error", err)
	}
	close(fake.block)
}

func TestRunServesTLSAndShutsDownGracefully(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	s := newTestServer(t, &fakeBackend{}, func(o *Options) { o.Listen = "127.0.0.1:0"; o.TLSCert, o.TLSKey = certFile, keyFile })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, ln) }()

	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	var resp *http.Response
	eventually(t, 5*time.Second, "TLS API answers", func() bool {
		resp, err = client.Get("https://" + addr + "/healthz")
		return err == nil
	})
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.TLS == nil {
		t.Fatalf("GET https://…/healthz: got %d tls=%v %s, want 200 over TLS", resp.StatusCode, resp.TLS != nil, body)
	}
	if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Errorf("plain HTTP to the TLS listener: got 200, want a refusal")
		}
	}

	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve after ctx ended: got %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Serve did not return within 10s of ctx ending")
	}
	if _, err := client.Get("https://" + addr + "/healthz"); err == nil {
		t.Errorf("after shutdown: got an answer, want connection refused")
	}
}

func TestRunReportsAListenError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := newTestServer(t, &fakeBackend{}, func(o *Options) { o.Listen = ln.Addr().String() })
	err = s.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "listen on "+ln.Addr().String()) {
		t.Errorf("Run on a used port: got %v, want a listen error naming the address", err)
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key into dir.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "shipwatch test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// gauge reads one series of a metric family from m (labels must match exactly).
func gauge(t *testing.T, m *metrics.Metrics, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, s := range f.GetMetric() {
			if len(s.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range s.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue series
				}
			}
			if c := s.GetCounter(); c != nil {
				return c.GetValue()
			}
			return s.GetGauge().GetValue()
		}
	}
	return 0
}

type panickingBackend struct{ fakeBackend }

func (*panickingBackend) Targets(context.Context) (any, error) { panic("bug " + testToken) }

func TestABackendPanicIsAJSON500(t *testing.T) {
	var logs strings.Builder
	s, err := New(&panickingBackend{}, Options{Token: testToken, Logger: zerolog.New(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := do(t, s, request{method: "GET", path: "/v1/targets"})
	if r.code != 500 || !strings.Contains(errorOf(t, r), "internal error") {
		t.Errorf("panicking backend: got %d %s, want a JSON 500", r.code, r.body)
	}
	if !strings.Contains(logs.String(), "handler panicked") || strings.Contains(logs.String(), testToken) {
		t.Errorf("log: got %q, want the panic logged without the token", logs.String())
	}
}
