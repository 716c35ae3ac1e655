package metrics

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
)

// testutil is not used: it needs a module that go.mod does not list.

// collect returns the series c exports.
func collect(t *testing.T, c prometheus.Collector) []*dto.Metric {
	t.Helper()
	ch := make(chan prometheus.Metric, 1024)
	c.Collect(ch)
	close(ch)
	var out []*dto.Metric
	for m := range ch {
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			t.Fatalf("write metric: %v", err)
		}
		out = append(out, &d)
	}
	return out
}

// value is the value of the single series of a counter or gauge.
func value(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	ms := collect(t, c)
	if len(ms) != 1 {
		t.Fatalf("series: got %d, want 1", len(ms))
	}
	switch {
	case ms[0].Counter != nil:
		return ms[0].Counter.GetValue()
	case ms[0].Gauge != nil:
		return ms[0].Gauge.GetValue()
	}
	t.Fatalf("metric is neither a counter nor a gauge")
	return 0
}

func TestMethodsUpdateTheirSeries(t *testing.T) {
	m := New()
	m.Pass("agent", 2*time.Second)
	m.Pass("agent", time.Second)
	m.Check("up-to-date")
	m.Check("up-to-date")
	m.Check("blocked")
	m.Update("compose:shop/web", "updated", 30*time.Second)
	m.Update("compose:shop/web", "rolled-back", time.Minute)
	m.LastSuccess("compose:shop/web", time.Unix(1700000000, 0))
	m.RegistryRequests("ghcr.io", "manifest", 3)
	m.RegistryErrors("ghcr.io", 2)
	m.Verification("blocked")
	m.Webhook("github", WebhookAccepted)
	m.APIAuthFailure()
	m.APIAuthFailure()
	m.APIRequest("/v1/targets", 200)
	m.Notification("slack", NotificationSent)

	tests := []struct {
		name string
		c    prometheus.Collector
		want float64
	}{
		{"passes agent", m.passes.WithLabelValues("agent"), 2},
		{"checks up-to-date", m.checks.WithLabelValues("up-to-date"), 2},
		{"checks blocked", m.checks.WithLabelValues("blocked"), 1},
		{"updates updated", m.updates.WithLabelValues("compose:shop/web", "updated"), 1},
		{"updates rolled-back", m.updates.WithLabelValues("compose:shop/web", "rolled-back"), 1},
		{"last success", m.lastSuccess.WithLabelValues("compose:shop/web"), 1700000000},
		{"registry requests", m.registryRequests.WithLabelValues("ghcr.io", "manifest"), 3},
		{"registry errors", m.registryErrors.WithLabelValues("ghcr.io"), 2},
		{"verifications", m.verifications.WithLabelValues("blocked"), 1},
		{"webhooks", m.webhooks.WithLabelValues("github", "accepted"), 1},
		{"api auth failures", m.apiAuthFailures, 2},
		{"api requests", m.apiRequests.WithLabelValues("/v1/targets", "200"), 1},
		{"notifications", m.notifications.WithLabelValues("slack", "sent"), 1},
	}
	for _, tt := range tests {
		if got := value(t, tt.c); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
	if got := len(collect(t, m.passDuration)); got != 1 {
		t.Errorf("pass duration series: got %d, want 1", got)
	}
	if got := len(collect(t, m.updateDuration)); got != 2 {
		t.Errorf("update duration series: got %d, want 2 (one per outcome, none per target)", got)
	}
}

func TestNamesArePrefixedAndLintClean(t *testing.T) {
	m := New()
	m.Pass("agent", time.Second)
	m.Check("updated")
	m.Update("t", "updated", time.Second)
	m.LastSuccess("t", time.Now())
	m.RegistryRequests("r", "manifest", 1)
	m.RegistryErrors("r", 1)
	m.Verification("allowed")
	m.Webhook("harbor", WebhookIgnored)
	m.APIAuthFailure()
	m.APIRequest("/healthz", 200)
	m.Notification("webhook", NotificationFailed)

	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	ours := 0
	for _, f := range families {
		name := f.GetName()
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
			continue
		}
		if !strings.HasPrefix(name, "shipwatch_") {
			t.Errorf("metric %s: got no shipwatch_ prefix, want one", name)
		}
		ours++
	}
	if ours != 13 {
		t.Errorf("shipwatch metric families: got %d, want 13", ours)
	}
	problems, err := promlint.NewWithMetricFamilies(families).Lint()
	if err != nil {
		t.Fatalf("lint: %v", err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "shipwatch_") {
			t.Errorf("lint %s: %s", p.Metric, p.Text)
		}
	}
}

func TestLabelValuesStayBounded(t *testing.T) {
	m := New()
	digest := "sha256:" + strings.Repeat("ab", 32)
	tests := []struct {
		name, in, want string
	}{
		{"plain", "updated", "updated"},
		{"empty", "", "none"},
		{"digest", digest, Other},
		{"url", "https://hooks.slack.com/services/T0/B0/secret", Other},
		{"free text", "could not reach registry: dial tcp", Other},
		{"host with port", "127.0.0.1:5000", "127.0.0.1:5000"},
		{"too long", strings.Repeat("a", 65), Other},
	}
	for _, tt := range tests {
		if got := m.bound("test", tt.in); got != tt.want {
			t.Errorf("%s: bound(%q): got %q, want %q", tt.name, tt.in, got, tt.want)
		}
	}

	// A label fed endless distinct values stops at maxValues + "other".
	for i := range 10 * maxValues {
		m.Verification(fmt.Sprintf("decision-%d", i))
	}
	if got := len(collect(t, m.verifications)); got != maxValues+1 {
		t.Errorf("verification series after %d distinct values: got %d, want %d", 10*maxValues, got, maxValues+1)
	}
	if got := value(t, m.verifications.WithLabelValues(Other)); got != float64(9*maxValues) {
		t.Errorf("verifications{decision=other}: got %v, want %d", got, 9*maxValues)
	}
}

func TestForgetTarget(t *testing.T) {
	m := New()
	m.Update("a", "updated", time.Second)
	m.Update("a", "failed", time.Second)
	m.Update("b", "updated", time.Second)
	m.LastSuccess("a", time.Now())
	m.LastSuccess("b", time.Now())
	m.ForgetTarget("a")
	if got := len(collect(t, m.updates)); got != 1 {
		t.Errorf("update series after forgetting a: got %d, want 1", got)
	}
	if got := len(collect(t, m.lastSuccess)); got != 1 {
		t.Errorf("last-success series after forgetting a: got %d, want 1", got)
	}
}

func TestNilMetricsIsANoOp(t *testing.T) {
	var m *Metrics
	m.Pass("agent", time.Second)
	m.Check("x")
	m.Update("t", "x", time.Second)
	m.LastSuccess("t", time.Now())
	m.ForgetTarget("t")
	m.RegistryRequests("r", "k", 1)
	m.RegistryErrors("r", 1)
	m.Verification("x")
	m.Webhook("s", "r")
	m.APIAuthFailure()
	m.APIRequest("/", 200)
	m.Notification("s", "r")
	if m.Registry() != nil {
		t.Errorf("nil Metrics registry: got non-nil, want nil")
	}
}

func TestTwoInstancesDoNotShareARegistry(t *testing.T) {
	a, b := New(), New()
	a.Check("updated")
	if got := len(collect(t, b.checks)); got != 0 {
		t.Errorf("series in b after counting in a: got %d, want 0", got)
	}
}
