// Package metrics holds shipwatch's Prometheus metrics on a registry of its
// own (nothing is registered globally), with methods named for what the agent
// does, so that label values stay bounded and no caller builds metric names.
package metrics

import (
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Namespace prefixes every metric name.
const Namespace = "shipwatch"

// Webhook results, the values of shipwatch_webhooks_total{result}.
const (
	WebhookAccepted     = "accepted"      // parsed, authenticated, queued as a hint
	WebhookCoalesced    = "coalesced"     // merged into a hint already waiting for the same repository
	WebhookIgnored      = "ignored"       // authenticated and well-formed, but not a push (pull, delete, ping…)
	WebhookRejectedAuth = "rejected-auth" // missing or wrong token / signature, or rate limited
	WebhookRejectedBody = "rejected-body" // malformed, too large or not a payload of that registry
	WebhookDropped      = "dropped"       // too many repositories waiting at once
)

// Notification results, the values of shipwatch_notifications_total{result}.
const (
	NotificationSent    = "sent"
	NotificationFailed  = "failed"
	NotificationDropped = "dropped" // the queue was full
	NotificationBusy    = "busy"    // the previous message to that service had not returned yet
	NotificationRepeat  = "repeat"  // suppressed: this blocked digest was already notified
)

// Other is the label value used when a label would otherwise take too many
// distinct values (see maxValues).
const Other = "other"

// maxValues bounds the distinct values of every label except target: agent
// outcomes, modes, decisions and registry hosts are small sets, and a bug
// that passes a digest or user input as a label must not grow the series
// without bound.
const maxValues = 64

// Metrics is the set of collectors the agent, the API and the notifier
// update. A nil *Metrics is valid: every method does nothing.
type Metrics struct {
	reg *prometheus.Registry

	passes           *prometheus.CounterVec
	passDuration     *prometheus.HistogramVec
	checks           *prometheus.CounterVec
	updates          *prometheus.CounterVec
	updateDuration   *prometheus.HistogramVec
	lastSuccess      *prometheus.GaugeVec
	registryRequests *prometheus.CounterVec
	registryErrors   *prometheus.CounterVec
	verifications    *prometheus.CounterVec
	webhooks         *prometheus.CounterVec
	apiAuthFailures  prometheus.Counter
	apiRequests      *prometheus.CounterVec
	notifications    *prometheus.CounterVec

	mu     sync.Mutex
	values map[string]map[string]struct{} // label name → values seen
}

// New returns the metrics on a new registry that also carries the Go runtime
// and process collectors.
func New() *Metrics {
	m := &Metrics{
		reg:    prometheus.NewRegistry(),
		values: map[string]map[string]struct{}{},
		passes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "passes_total",
			Help: "Passes run, by mode (agent, check, rollout, webhook…).",
		}, []string{"mode"}),
		passDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "pass_duration_seconds",
			Help:    "Duration of a pass, by mode.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 14), // 50ms … ~7min
		}, []string{"mode"}),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "checks_total",
			Help: "Targets checked, by the outcome of the pass for that target.",
		}, []string{"outcome"}),
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "updates_total",
			Help: "Rollouts attempted, by target and outcome (updated, rolled-back, failed…).",
		}, []string{"target", "outcome"}),
		updateDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "update_duration_seconds",
			Help:    "Duration of a rollout including its health gate (and rollback), by outcome.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12), // 1s … ~34min
		}, []string{"outcome"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "last_success_timestamp_seconds",
			Help: "Unix time of the last pass that ended well for the target (up-to-date or updated).",
		}, []string{"target"}),
		registryRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "registry_requests_total",
			Help: "Requests sent to registries, by registry host and kind (manifest, tags, token, referrers, blob).",
		}, []string{"registry", "kind"}),
		registryErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "registry_errors_total",
			Help: "Registry requests that failed (network error, 5xx, 429, auth), by registry host.",
		}, []string{"registry"}),
		verifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "verifications_total",
			Help: "Verification verdicts, by decision (allowed, blocked, undecided…).",
		}, []string{"decision"}),
		webhooks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "webhooks_total",
			Help: "Registry webhook deliveries, by source and result.",
		}, []string{"source", "result"}),
		apiAuthFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "api_auth_failures_total",
			Help: "API requests refused for a missing or wrong token.",
		}),
		apiRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "api_requests_total",
			Help: "API requests served, by route and HTTP status code.",
		}, []string{"route", "code"}),
		notifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "notifications_total",
			Help: "Notifications, by service kind (slack, smtp, webhook…) and result.",
		}, []string{"service", "result"}),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.passes, m.passDuration, m.checks, m.updates, m.updateDuration, m.lastSuccess,
		m.registryRequests, m.registryErrors, m.verifications, m.webhooks,
		m.apiAuthFailures, m.apiRequests, m.notifications,
	)
	return m
}

// Registry is the registry that /metrics serves.
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// Pass records one pass of the given mode and how long it took.
func (m *Metrics) Pass(mode string, took time.Duration) {
	if m == nil {
		return
	}
	mode = m.bound("mode", mode)
	m.passes.WithLabelValues(mode).Inc()
	m.passDuration.WithLabelValues(mode).Observe(took.Seconds())
}

// Check records the outcome of a pass for one target.
func (m *Metrics) Check(outcome string) {
	if m == nil {
		return
	}
	m.checks.WithLabelValues(m.bound("outcome", outcome)).Inc()
}

// Update records a rollout of target: its outcome and duration.
func (m *Metrics) Update(target, outcome string, took time.Duration) {
	if m == nil {
		return
	}
	outcome = m.bound("outcome", outcome)
	m.updates.WithLabelValues(target, outcome).Inc()
	m.updateDuration.WithLabelValues(outcome).Observe(took.Seconds())
}

// LastSuccess records when target last ended a pass well.
func (m *Metrics) LastSuccess(target string, t time.Time) {
	if m == nil {
		return
	}
	m.lastSuccess.WithLabelValues(target).Set(float64(t.UnixNano()) / 1e9)
}

// ForgetTarget deletes the series of a target that no longer exists, so
// that removed services do not keep reporting.
func (m *Metrics) ForgetTarget(target string) {
	if m == nil {
		return
	}
	m.lastSuccess.DeleteLabelValues(target)
	m.updates.DeletePartialMatch(prometheus.Labels{"target": target})
}

// RegistryRequests adds n requests of a kind sent to registry (a host).
func (m *Metrics) RegistryRequests(registry, kind string, n int) {
	if m == nil || n <= 0 {
		return
	}
	m.registryRequests.WithLabelValues(m.bound("registry", registry), m.bound("kind", kind)).Add(float64(n))
}

// RegistryErrors adds n failed requests to registry.
func (m *Metrics) RegistryErrors(registry string, n int) {
	if m == nil || n <= 0 {
		return
	}
	m.registryErrors.WithLabelValues(m.bound("registry", registry)).Add(float64(n))
}

// Verification records one verification verdict.
func (m *Metrics) Verification(decision string) {
	if m == nil {
		return
	}
	m.verifications.WithLabelValues(m.bound("decision", decision)).Inc()
}

// Webhook records one webhook delivery (or one hint of it) from source with
// a result (WebhookAccepted, WebhookRejectedAuth, …).
func (m *Metrics) Webhook(source, result string) {
	if m == nil {
		return
	}
	m.webhooks.WithLabelValues(m.bound("source", source), m.bound("result", result)).Inc()
}

// APIAuthFailure records an API request refused for its token.
func (m *Metrics) APIAuthFailure() {
	if m == nil {
		return
	}
	m.apiAuthFailures.Inc()
}

// APIRequest records one API request on a route (a fixed path, or "other")
// answered with code.
func (m *Metrics) APIRequest(route string, code int) {
	if m == nil {
		return
	}
	m.apiRequests.WithLabelValues(m.bound("route", route), strconv.Itoa(code)).Inc()
}

// Notification records one notification to a service kind ("slack",
// "webhook"…; never its URL) with a result (NotificationSent, …).
func (m *Metrics) Notification(service, result string) {
	if m == nil {
		return
	}
	m.notifications.WithLabelValues(m.bound("service", service), m.bound("result", result)).Inc()
}

// bound returns v as a label value for the label name, or Other when v is
// not a short plain word (a digest, a URL, free text) or when the label has
// already taken maxValues distinct values.
func (m *Metrics) bound(name, v string) string {
	if v == "" {
		return "none"
	}
	if !plainLabel(v) {
		return Other
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	seen := m.values[name]
	if seen == nil {
		seen = map[string]struct{}{}
		m.values[name] = seen
	}
	if _, ok := seen[v]; ok {
		return v
	}
	if len(seen) >= maxValues {
		return Other
	}
	seen[v] = struct{}{}
	return v
}

// plainLabel accepts short values made of letters, digits and . _ - : / (a
// host:port, an outcome, a route) but not digests, which would make a series
// per image, nor URLs, which may carry credentials.
func plainLabel(v string) bool {
	if len(v) > 64 || strings.Contains(v, "://") || strings.Contains(v, "sha256:") || strings.Contains(v, "sha512:") {
		return false
	}
	for _, r := range v {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case r == '.', r == '_', r == '-', r == ':', r == '/', r == '[', r == ']':
		default:
			return false
		}
	}
	return true
}
