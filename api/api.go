// Package api is shipwatch's HTTP API: status, history, manual checks and
// rollouts, approvals and quarantine for operators, /healthz and /metrics for
// the platform, and receivers for registry webhooks that ask the agent to
// check the matching targets now.
package api

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/shipwatch/shipwatch/metrics"
	"github.com/shipwatch/shipwatch/state"
)

// Backend is what the API calls; the agent implements it. Reports are
// JSON-encodable values produced by the agent, encoded as they are.
//
// Errors the backend returns are sent to the (authenticated) caller as
// {"error": "..."}; wrap ErrNotFound, ErrConflict, ErrInvalid or
// ErrUnavailable to choose the status code (500 otherwise).
type Backend interface {
	// Targets is GET /v1/targets.
	Targets(ctx context.Context) (any, error)
	// History is GET /v1/history?target=&limit= (newest first).
	History(ctx context.Context, target string, limit int) ([]state.Entry, error)
	// Check is POST /v1/check {"targets": [...]} (empty = every target).
	Check(ctx context.Context, targets []string) (any, error)
	// Rollout is POST /v1/rollouts. Its ctx does not end when the client
	// goes away: a rollout is never abandoned halfway because a curl was
	// interrupted; the agent bounds it with its own deadlines.
	Rollout(ctx context.Context, req RolloutRequest) (any, error)
	// Rollback is POST /v1/rollbacks {"target", "to"}; its ctx is like Rollout's.
	Rollback(ctx context.Context, target, to string) (any, error)
	// Approvals is GET /v1/approvals.
	Approvals(ctx context.Context) ([]state.Approval, error)
	// Approve is POST /v1/approvals {"target", "candidate"}; by names the caller.
	Approve(ctx context.Context, target, candidate, by string) (state.Approval, error)
	// Quarantine is GET /v1/quarantine.
	Quarantine(ctx context.Context) ([]state.Quarantined, error)
	// ClearQuarantine is DELETE /v1/quarantine?target=&digest= and returns
	// how many entries it removed.
	ClearQuarantine(ctx context.Context, target, digest string) (int, error)
	// Trigger asks for an immediate check of the targets that use
	// hint.Repository and returns how many matched. It must not block on the
	// check. The hint is never trusted: the pass asks the registry and
	// verifies as always.
	Trigger(ctx context.Context, hint Hint) int
	// Ready is GET /healthz: nil means ready (200), an error 503.
	Ready(ctx context.Context) error
}

// RolloutRequest is the body of POST /v1/rollouts.
type RolloutRequest struct {
	// Target is the target ID ("compose:shop/web", "swarm:api").
	Target string `json:"target"`
	// To is a tag, a digest or a full reference; empty means the newest
	// candidate the target's policy allows.
	To string `json:"to,omitempty"`
	// DryRun plans the rollout (resolve, verify) without deploying.
	DryRun bool `json:"dry_run,omitempty"`
	// AllowDrift rolls a Compose service out even when its running
	// containers no longer match the compose file.
	AllowDrift bool `json:"allow_drift,omitempty"`
}

// Hint is what a registry webhook says changed. Repository is normalized
// like imageref ("docker.io/library/nginx", "ghcr.io/org/app").
type Hint struct {
	Source     string // "dockerhub", "distribution", "harbor", "github"
	Registry   string // registry host as in image references: "docker.io", "127.0.0.1:5000"
	Repository string
	Tag        string // may be empty (pushed by digest, or several tags coalesced)
	Digest     string // may be empty
}

// Errors a Backend wraps to choose the HTTP status of its error.
var (
	ErrNotFound    = errors.New("not found")       // 404
	ErrConflict    = errors.New("conflict")        // 409, e.g. a rollout of the target is running
	ErrInvalid     = errors.New("invalid request") // 400
	ErrUnavailable = errors.New("unavailable")     // 503
)

// Options configure the server.
type Options struct {
	// Listen is the TCP address, "127.0.0.1:8080" by default.
	Listen string
	// Token is the bearer token for /v1/* and /metrics. It is required
	// unless Listen is a loopback address; New refuses to build a server
	// that would accept rollouts from the network without one.
	Token string
	// TLSCert and TLSKey are PEM files; both or neither.
	TLSCert, TLSKey string
	// WebhookSecret authenticates registry webhooks: a token in the
	// X-Shipwatch-Token or Authorization header or the token query
	// parameter, and the HMAC key of GitHub's X-Hub-Signature-256. Without
	// it the webhook receivers answer 404.
	WebhookSecret string
	// Logger receives one debug line per request and warnings; never a
	// token, a query string or a body.
	Logger zerolog.Logger
	// Metrics counts requests, auth failures and webhooks; may be nil.
	Metrics *metrics.Metrics
	// Registry is what /metrics serves; Metrics.Registry() when nil.
	Registry prometheus.Gatherer

	// WebhookDelay is how long a webhook hint waits for more hints of the
	// same repository before Trigger is called (default 200ms).
	WebhookDelay time.Duration
	// WebhookMinInterval is the least time between two Triggers for the
	// same repository (default 5s): a storm of pushes is one check, then
	// at most one more per interval.
	WebhookMinInterval time.Duration
	// AuthFailures is how many failed authentications a client IP may make
	// in a burst before it gets 429 (default 10); one more is allowed every
	// AuthFailureRefill (default 6s).
	AuthFailures      int
	AuthFailureRefill time.Duration
	// MaxBody bounds request bodies (default 1 MiB).
	MaxBody int64
	// ShutdownTimeout bounds the graceful shutdown of Run (default 30s).
	ShutdownTimeout time.Duration
}

// Defaults of Options.
const (
	DefaultListen             = "127.0.0.1:8080"
	DefaultMaxBody            = 1 << 20
	DefaultWebhookDelay       = 200 * time.Millisecond
	DefaultWebhookMinInterval = 5 * time.Second
	DefaultAuthFailures       = 10
	DefaultAuthFailureRefill  = 6 * time.Second
	DefaultShutdownTimeout    = 30 * time.Second
)

// Format keeps %v of Options from printing the token and the webhook secret.
func (o Options) Format(f fmt.State, _ rune) {
	fmt.Fprintf(f, "api.Options{Listen: %q, Token: %s, WebhookSecret: %s, TLS: %t}",
		o.Listen, redactedIfSet(o.Token), redactedIfSet(o.WebhookSecret), o.TLSCert != "")
}

func redactedIfSet(s string) string {
	if s == "" {
		return `""`
	}
	return redacted
}

// withDefaults fills unset options.
func (o Options) withDefaults() Options {
	if o.Listen == "" {
		o.Listen = DefaultListen
	}
	if o.MaxBody <= 0 {
		o.MaxBody = DefaultMaxBody
	}
	if o.WebhookDelay <= 0 {
		o.WebhookDelay = DefaultWebhookDelay
	}
	if o.WebhookMinInterval <= 0 {
		o.WebhookMinInterval = DefaultWebhookMinInterval
	}
	if o.AuthFailures <= 0 {
		o.AuthFailures = DefaultAuthFailures
	}
	if o.AuthFailureRefill <= 0 {
		o.AuthFailureRefill = DefaultAuthFailureRefill
	}
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = DefaultShutdownTimeout
	}
	if o.Registry == nil && o.Metrics != nil {
		o.Registry = o.Metrics.Registry()
	}
	return o
}

// validate checks o and loads the TLS key pair.
func (o Options) validate() (*tls.Config, error) {
	host, _, err := net.SplitHostPort(o.Listen)
	if err != nil {
		return nil, fmt.Errorf("api: listen address %q is not host:port; write it like 127.0.0.1:8080", o.Listen)
	}
	if o.Token == "" && !isLoopbackHost(host) {
		return nil, fmt.Errorf("api: listening on %s reaches beyond this machine and the API controls rollouts: set a token (api.token), or listen on 127.0.0.1", o.Listen)
	}
	if o.Token != "" && len(o.Token) < 16 {
		return nil, errors.New("api: the token is shorter than 16 characters; use a long random one (openssl rand -hex 32)")
	}
	if o.WebhookSecret != "" && len(o.WebhookSecret) < 16 {
		return nil, errors.New("api: the webhook secret is shorter than 16 characters; use a long random one (openssl rand -hex 32)")
	}
	if (o.TLSCert == "") != (o.TLSKey == "") {
		return nil, errors.New("api: set both the TLS certificate and key, or neither")
	}
	if o.TLSCert == "" {
		return nil, nil
	}
	pair, err := tls.LoadX509KeyPair(o.TLSCert, o.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("api: load TLS certificate %s and key %s: %w", o.TLSCert, o.TLSKey, err)
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
}

// isLoopbackHost reports whether a listen host only accepts local
// connections. An empty host (":8080") listens on every interface.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
