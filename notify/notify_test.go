package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/shipwatch/shipwatch/metrics"
	"github.com/shipwatch/shipwatch/state"
)

const (
	digestA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	digestB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	// Secrets the tests put in URLs and headers and then look for in logs
	// and errors.
	urlToken    = "xoxb-url-token-5e1d"
	pathToken   = "PathSecret9c2b7a"
	headerValue = "Bearer header-secret-41f0"
	userPass    = "smtp-pass-77aa"
)

var secrets = []string{urlToken, pathToken, headerValue, "header-secret-41f0", userPass}

// receiver is an httptest server that records what it receives.
type receiver struct {
	*httptest.Server
	mu     sync.Mutex
	bodies []string
	reqs   []*http.Request
	got    chan struct{}
}

func newReceiver(t *testing.T, status int) *receiver {
	r := &receiver{got: make(chan struct{}, 100)}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.bodies = append(r.bodies, string(body))
		r.reqs = append(r.reqs, req)
		r.mu.Unlock()
		w.WriteHeader(status)
		r.got <- struct{}{}
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) received() ([]string, []*http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.bodies...), append([]*http.Request(nil), r.reqs...)
}

// wait waits for n deliveries with a deadline.
func (r *receiver) wait(t *testing.T, n int) {
	t.Helper()
	for i := range n {
		select {
		case <-r.got:
		case <-time.After(10 * time.Second):
			t.Fatalf("delivery %d of %d: none within 10s", i+1, n)
		}
	}
}

// logBuffer captures the notifier's log at debug level.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) logger() zerolog.Logger { return zerolog.New(l).Level(zerolog.DebugLevel) }

func closeOK(t *testing.T, n *Notifier) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestNewRejectsBadSettingsWithoutPrintingThem(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"no scheme", Options{URLs: []string{urlToken}}, "notify.urls[0]: not a service URL"},
		{"unknown service", Options{URLs: []string{"slak://" + urlToken + "@channel"}}, `notify.urls[0] (slak): unknown service "slak"`},
		{"second URL bad", Options{URLs: []string{"generic+https://hooks.example.com/x", "nope://" + urlToken}}, "notify.urls[1] (nope)"},
		{"bad slack token", Options{URLs: []string{"slack://" + urlToken + "@channel"}}, "notify.urls[0] (slack): invalid settings"},
		{"unparseable URL", Options{URLs: []string{"discord://" + urlToken + "@%zz"}}, "notify.urls[0] (discord): not a valid URL"},
		{"custom scheme on a service without one", Options{URLs: []string{"slack+https://" + urlToken + "@x"}}, `does not take a "slack+https" scheme`},
		{"webhook not http", Options{Webhooks: []Webhook{{URL: "ftp://example.com/" + pathToken}}}, "notify.webhooks[0].url: not an http(s) URL"},
		{"webhook without host", Options{Webhooks: []Webhook{{URL: "https:///" + pathToken}}}, "notify.webhooks[0].url"},
		{"header name", Options{Webhooks: []Webhook{{URL: "https://example.com/h", Headers: map[string]string{"Bad Name": headerValue}}}}, `"Bad Name" is not a valid header name`},
		{"header value", Options{Webhooks: []Webhook{{URL: "https://example.com/h", Headers: map[string]string{"X-Key": headerValue + "\r\nX-Evil: 1"}}}}, "line break"},
		{"template syntax", Options{Template: "{{.Target"}, "notify.template"},
		{"template field", Options{Template: "{{.Digest}}"}, "can't evaluate field Digest"},
		{"event kind", Options{Events: []string{"updated", "exploded"}}, `notify.events[1]: "exploded" is not an event`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := New(tt.opts)
			if err == nil {
				_ = n.Close(context.Background())
				t.Fatalf("New: got no error, want one containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New: got %q, want it to contain %q", err, tt.want)
			}
			for _, s := range secrets {
				if strings.Contains(err.Error(), s) {
					t.Errorf("New: error %q holds the secret %q", err, s)
				}
			}
		})
	}
}

func TestOptionsAndWebhooksNeverPrintSecrets(t *testing.T) {
	o := Options{URLs: []string{"slack://" + urlToken + "@c"}, Webhooks: []Webhook{{URL: "https://x/" + pathToken, Headers: map[string]string{"A": headerValue}}}}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		for _, v := range []any{o, o.Webhooks[0], o.Webhooks} {
			out := fmt.Sprintf(verb, v)
			for _, s := range secrets {
				if strings.Contains(out, s) {
					t.Errorf("Sprintf(%s, %T): got %q, holds a secret", verb, v, out)
				}
			}
		}
	}
}

func TestGenericWebhookReceivesTheEventAsJSON(t *testing.T) {
	recv := newReceiver(t, 204)
	n, err := New(Options{
		Webhooks: []Webhook{{URL: recv.URL + "/hook/" + pathToken, Headers: map[string]string{"Authorization": headerValue}}},
		Hostname: "docker-01",
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	n.Notify(Event{Kind: KindUpdated, Target: "compose:shop/web", Image: "ghcr.io/acme/web:1.5", From: digestA, To: digestB, Signer: "ci@acme.example", Scan: "0 critical", Time: at})
	closeOK(t, n)

	bodies, reqs := recv.received()
	if len(bodies) != 1 {
		t.Fatalf("deliveries: got %d, want 1", len(bodies))
	}
	if got := reqs[0].Header.Get("Authorization"); got != headerValue {
		t.Errorf("Authorization header: got %q, want the configured value", got)
	}
	if got := reqs[0].Header.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type: got %q, want application/json", got)
	}
	if got := reqs[0].URL.Path; got != "/hook/"+pathToken {
		t.Errorf("path: got %q, want /hook/%s", got, pathToken)
	}
	var p map[string]any
	if err := json.Unmarshal([]byte(bodies[0]), &p); err != nil {
		t.Fatalf("body %q: %v", bodies[0], err)
	}
	want := map[string]any{
		"kind": "updated", "target": "compose:shop/web", "image": "ghcr.io/acme/web:1.5", "from": digestA, "to": digestB,
		"signer": "ci@acme.example", "scan": "0 critical", "time": "2026-01-02T03:04:05Z", "hostname": "docker-01",
		"title": "shipwatch: compose:shop/web updated", "source": "shipwatch",
		"message": "shipwatch on docker-01: compose:shop/web updated (ghcr.io/acme/web:1.5) from aaaaaaaaaaaa to bbbbbbbbbbbb; signed by ci@acme.example; scan: 0 critical",
	}
	for k, v := range want {
		if p[k] != v {
			t.Errorf("payload %s: got %v, want %v", k, p[k], v)
		}
	}
}

func TestShoutrrrGenericServiceSendsTheMessage(t *testing.T) {
	recv := newReceiver(t, 200)
	m := metrics.New()
	u := strings.Replace(recv.URL, "http://", "generic+http://", 1) + "/notify?token=" + urlToken
	n, err := New(Options{URLs: []string{u}, Template: "{{upper .Kind}} {{.Target}} → {{short .To}}", Metrics: m})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	n.Notify(Event{Kind: KindRolledBack, Target: "swarm:api", To: digestB})
	closeOK(t, n)
	bodies, reqs := recv.received()
	if len(bodies) != 1 {
		t.Fatalf("deliveries: got %d, want 1", len(bodies))
	}
	if bodies[0] != "ROLLED-BACK swarm:api → bbbbbbbbbbbb" {
		t.Errorf("message: got %q, want the rendered template", bodies[0])
	}
	if got := reqs[0].URL.Query().Get("token"); got != urlToken {
		t.Errorf("token query parameter: got %q, want the one in the URL", got)
	}
	if got := counter(t, m, "shipwatch_notifications_total", map[string]string{"service": "generic", "result": "sent"}); got != 1 {
		t.Errorf("notifications_total{generic, sent}: got %v, want 1", got)
	}
}

func TestEventsFilter(t *testing.T) {
	recv := newReceiver(t, 200)
	n, err := New(Options{Webhooks: []Webhook{{URL: recv.URL}}, Events: []string{KindFailed, KindRolledBack}})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range Kinds {
		n.Notify(Event{Kind: k, Target: "t", To: digestA})
	}
	n.Notify(Event{Kind: "unknown", Target: "t"})
	closeOK(t, n)
	bodies, _ := recv.received()
	var kinds []string
	for _, b := range bodies {
		var e Event
		_ = json.Unmarshal([]byte(b), &e)
		kinds = append(kinds, e.Kind)
	}
	if strings.Join(kinds, ",") != "rolled-back,failed" {
		t.Errorf("kinds sent: got %v, want [rolled-back failed]", kinds)
	}
}

// TestBlockedDigestIsNotifiedOnce with the state store the agent passes
// (across a restart of the notifier) and with the in-memory default.
func TestBlockedDigestIsNotifiedOnce(t *testing.T) {
	store, err := state.Open(filepath.Join(t.TempDir(), "state.db"), time.Second)
	if err != nil {
		t.Fatalf("state: %v", err)
	}
	defer store.Close()
	for _, tt := range []struct {
		name  string
		dedup func(string) (bool, error)
	}{
		{"state store", store.FirstNotice},
		{"in memory", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			recv := newReceiver(t, 200)
			m := metrics.New()
			opts := Options{Webhooks: []Webhook{{URL: recv.URL}}, Dedup: tt.dedup, Metrics: m}
			n, err := New(opts)
			if err != nil {
				t.Fatal(err)
			}
			for range 3 {
				n.Notify(Event{Kind: KindBlocked, Target: "compose:shop/web", To: digestA, Reason: "unsigned"})
			}
			n.Notify(Event{Kind: KindBlocked, Target: "compose:shop/web", To: digestB, Reason: "unsigned"})
			n.Notify(Event{Kind: KindBlocked, Target: "compose:shop/api", To: digestA, Reason: "unsigned"})
			n.Notify(Event{Kind: KindUpdated, Target: "compose:shop/web", To: digestA})
			n.Notify(Event{Kind: KindUpdated, Target: "compose:shop/web", To: digestA})
			closeOK(t, n)
			if bodies, _ := recv.received(); len(bodies) != 5 {
				t.Errorf("deliveries: got %d, want 5 (one per blocked digest and target, every update)", len(bodies))
			}
			if got := counter(t, m, "shipwatch_notifications_total", map[string]string{"service": "all", "result": "repeat"}); got != 2 {
				t.Errorf("notifications_total{repeat}: got %v, want 2", got)
			}
			if tt.dedup == nil {
				return
			}
			// After a restart the store still knows.
			n2, err := New(opts)
			if err != nil {
				t.Fatal(err)
			}
			n2.Notify(Event{Kind: KindBlocked, Target: "compose:shop/web", To: digestA, Reason: "unsigned"})
			closeOK(t, n2)
			if bodies, _ := recv.received(); len(bodies) != 5 {
				t.Errorf("deliveries after a restart: got %d, want still 5", len(bodies))
			}
		})
	}
}

// TestFailingEndpointsNeverBlockNotify: services that hang or fail cost the
// caller nothing; the queue overflows into counted drops, Close gives up at
// its deadline, and nothing secret reaches the log.
func TestFailingEndpointsNeverBlockNotify(t *testing.T) {
	release := make(chan struct{})
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer hung.Close()
	defer close(release)
	failing := newReceiver(t, 500)
	refused := httptest.NewServer(http.NotFoundHandler())
	refusedURL := refused.URL
	refused.Close() // connection refused from now on

	var logs logBuffer
	m := metrics.New()
	n, err := New(Options{
		URLs: []string{
			strings.Replace(hung.URL, "http://", "generic+http://", 1) + "/" + pathToken + "?token=" + urlToken,
			strings.Replace(refusedURL, "http://", "generic+http://", 1) + "/x?token=" + urlToken,
		},
		Webhooks: []Webhook{
			{URL: hung.URL + "/" + pathToken, Headers: map[string]string{"Authorization": headerValue}},
			{URL: failing.URL + "/" + pathToken + "?key=" + urlToken},
		},
		Timeout:   200 * time.Millisecond,
		QueueSize: 5,
		Logger:    logs.logger(),
		Metrics:   m,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	start := time.Now()
	for i := range 200 {
		n.Notify(Event{Kind: KindFailed, Target: fmt.Sprintf("t%d", i), To: digestA, Reason: "health gate"})
	}
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("200 Notify calls with hanging services: took %s, want well under 500ms", took)
	}
	if got := n.Dropped(); got < 190 {
		t.Errorf("dropped: got %d, want at least 190 (queue of 5, one in flight)", got)
	}
	if got := counter(t, m, "shipwatch_notifications_total", map[string]string{"service": "all", "result": "dropped"}); got != float64(n.Dropped()) {
		t.Errorf("notifications_total{dropped}: got %v, want %d", got, n.Dropped())
	}
	failing.wait(t, 2) // the failing webhook answered at least two events

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	closeStart := time.Now()
	err = n.Close(ctx)
	if err == nil || !strings.Contains(err.Error(), "were not sent before the deadline") {
		t.Errorf("Close with events left: got %v, want a deadline error", err)
	}
	if took := time.Since(closeStart); took > 2*time.Second {
		t.Errorf("Close: took %s, want it bounded by its ctx", took)
	}
	n.Notify(Event{Kind: KindFailed, Target: "after-close"}) // must not panic

	out := logs.String()
	for _, want := range []string{`"service":"generic#0"`, `"service":"generic#1"`, `"service":"webhook#0"`, `"service":"webhook#1"`, "answered 500", "notification dropped", "connection refused"} {
		if !strings.Contains(out, want) {
			t.Errorf("log: got no %q, want it (log:\n%s)", want, truncateLog(out))
		}
	}
	for _, s := range append(secrets, hung.URL, failing.URL, refusedURL) {
		if strings.Contains(out, s) {
			t.Errorf("log holds the secret %q:\n%s", s, truncateLog(out))
		}
	}
	if got := counter(t, m, "shipwatch_notifications_total", map[string]string{"service": "webhook", "result": "failed"}); got < 2 {
		t.Errorf("notifications_total{webhook, failed}: got %v, want at least 2", got)
	}
	if got := counter(t, m, "shipwatch_notifications_total", map[string]string{"service": "generic", "result": "busy"}); got < 1 {
		t.Errorf("notifications_total{generic, busy}: got %v, want at least 1 (the hung service is skipped while it hangs)", got)
	}
}

func TestRedirectsAreNotFollowed(t *testing.T) {
	target := newReceiver(t, 200)
	redirect := httptest.NewServer(http.RedirectHandler(target.URL+"/stolen", http.StatusFound))
	defer redirect.Close()
	var logs logBuffer
	n, err := New(Options{Webhooks: []Webhook{{URL: redirect.URL, Headers: map[string]string{"X-Api-Key": headerValue}}}, Logger: logs.logger()})
	if err != nil {
		t.Fatal(err)
	}
	n.Notify(Event{Kind: KindUpdated, Target: "t"})
	closeOK(t, n)
	if bodies, _ := target.received(); len(bodies) != 0 {
		t.Errorf("redirect target: got %d deliveries, want 0 (headers must not follow a redirect)", len(bodies))
	}
	if !strings.Contains(logs.String(), "redirects are not followed") {
		t.Errorf("log: got no redirect failure, want one:\n%s", logs.String())
	}
}

func TestNilNotifierIsANoOp(t *testing.T) {
	var n *Notifier
	n.Notify(Event{Kind: KindUpdated})
	if err := n.Close(context.Background()); err != nil {
		t.Errorf("Close of nil: got %v, want nil", err)
	}
	if n.Dropped() != 0 {
		t.Errorf("Dropped of nil: got %d, want 0", n.Dropped())
	}
}

func TestRedactorRemovesEveryPartOfTheURLs(t *testing.T) {
	r := newRedactor(Options{
		URLs:     []string{"smtp://mailer:" + userPass + "@mail.example.com:587/?to=ops@example.com", "generic+https://hooks.example.com/services/" + pathToken + "?token=" + urlToken},
		Webhooks: []Webhook{{URL: "https://h.example.com/x", Headers: map[string]string{"Authorization": headerValue}}},
	})
	for _, in := range []string{
		"dial: auth failed for mailer:" + userPass,
		`Post "https://hooks.example.com/services/` + pathToken + `?token=` + urlToken + `": EOF`,
		"path " + pathToken + " and escaped " + strings.ReplaceAll(urlToken, "-", "%2D"),
		"server said: " + headerValue,
		"see https://unrelated.example.com/a?b=c for details",
	} {
		out := r.String(in)
		for _, s := range append(secrets, "unrelated.example.com") {
			if strings.Contains(out, s) {
				t.Errorf("redact(%q): got %q, still holding %q", in, out, s)
			}
		}
	}
	if got := r.String("connection refused"); got != "connection refused" {
		t.Errorf("redact of plain text: got %q, want it unchanged", got)
	}
}

func truncateLog(s string) string {
	if len(s) > 3000 {
		return s[:3000] + "…"
	}
	return s
}

// counter reads one series of a counter from m.
func counter(t *testing.T, m *metrics.Metrics, name string, labels map[string]string) float64 {
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
			for _, l := range s.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue series
				}
			}
			return s.GetCounter().GetValue()
		}
	}
	return 0
}
