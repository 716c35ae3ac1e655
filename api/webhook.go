package api

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/shipwatch/shipwatch/metrics"
)

// webhookSource is one registry's receiver.
type webhookSource struct {
	name string
	// hmac: the body is signed (GitHub's X-Hub-Signature-256) instead of
	// carrying the secret as a token.
	hmac bool
	// registryOverride: the ?registry= query parameter is accepted.
	registryOverride bool
	parse            func(r *http.Request, body []byte, registry string) ([]Hint, error)
}

var webhookSources = []webhookSource{
	{name: "dockerhub", parse: func(_ *http.Request, b []byte, _ string) ([]Hint, error) { return parseDockerHub(b) }},
	{name: "distribution", registryOverride: true, parse: func(_ *http.Request, b []byte, reg string) ([]Hint, error) { return parseDistribution(b, reg) }},
	{name: "harbor", registryOverride: true, parse: func(_ *http.Request, b []byte, reg string) ([]Hint, error) { return parseHarbor(b, reg) }},
	{name: "github", hmac: true, parse: func(r *http.Request, b []byte, _ string) ([]Hint, error) {
		return parseGitHub(r.Header.Get("X-GitHub-Event"), b)
	}},
}

// webhookResponse is the answer to an accepted delivery. The number of
// matching targets is not known yet: the check starts after the hint has
// waited for the rest of its burst.
type webhookResponse struct {
	Hints     int `json:"hints"`     // pushes found in the payload
	Queued    int `json:"queued"`    // new checks scheduled
	Coalesced int `json:"coalesced"` // merged into a check already scheduled
	Dropped   int `json:"dropped"`   // refused: too many repositories waiting
}

// webhook is the receiver of one source: rate limit, authenticate, read a
// bounded body, parse, and hand the hints to the coalescer. Trigger is
// never reached for a rejected delivery.
func (s *Server) webhook(src webhookSource) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		reject := func(result string, code int, msg string) {
			s.metrics.Webhook(src.name, result)
			writeError(w, code, msg)
		}
		if s.opts.WebhookSecret == "" {
			reject(metrics.WebhookRejectedAuth, http.StatusNotFound, "webhooks are not enabled: set webhooks.secret in the agent's configuration")
			return
		}
		ip := clientIP(r)
		if wait, ok := s.limiter.allowed(ip); !ok {
			s.metrics.Webhook(src.name, metrics.WebhookRejectedAuth)
			tooManyFailures(w, wait)
			return
		}
		allowed := []string{"token"}
		if src.registryOverride {
			allowed = append(allowed, "registry")
		}
		q, ok := query(w, r, allowed...)
		if !ok {
			s.metrics.Webhook(src.name, metrics.WebhookRejectedBody)
			return
		}
		if !src.hmac && !s.webhookToken(r, q.Get("token")) {
			s.limiter.fail(ip)
			reject(metrics.WebhookRejectedAuth, http.StatusUnauthorized, "missing or wrong webhook token: send it as X-Shipwatch-Token, Authorization: Bearer, or ?token=")
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.opts.MaxBody))
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				reject(metrics.WebhookRejectedBody, http.StatusRequestEntityTooLarge, "payload is larger than "+strconv.FormatInt(s.opts.MaxBody, 10)+" bytes")
				return
			}
			reject(metrics.WebhookRejectedBody, http.StatusBadRequest, "could not read the payload")
			return
		}
		if src.hmac && !validSignature(r.Header.Get("X-Hub-Signature-256"), body, s.opts.WebhookSecret) {
			s.limiter.fail(ip)
			reject(metrics.WebhookRejectedAuth, http.StatusUnauthorized, "missing or wrong X-Hub-Signature-256: set the webhook's secret in GitHub to shipwatch's webhook secret")
			return
		}
		if src.hmac && r.Header.Get("X-GitHub-Event") == "ping" {
			s.metrics.Webhook(src.name, metrics.WebhookIgnored)
			writeJSON(w, http.StatusOK, statusResponse{Status: "pong"})
			return
		}
		registry := q.Get("registry")
		if registry != "" && !validHost(registry) {
			reject(metrics.WebhookRejectedBody, http.StatusBadRequest, "registry: not a host[:port]")
			return
		}
		hints, err := src.parse(r, body, registry)
		if err != nil {
			reject(metrics.WebhookRejectedBody, http.StatusBadRequest, truncate(err.Error(), 300))
			return
		}
		if len(hints) == 0 {
			s.metrics.Webhook(src.name, metrics.WebhookIgnored)
			writeJSON(w, http.StatusAccepted, webhookResponse{})
			return
		}
		resp := webhookResponse{Hints: len(hints)}
		for _, h := range hints {
			switch s.coalescer.add(h) {
			case hintQueued:
				resp.Queued++
				s.metrics.Webhook(src.name, metrics.WebhookAccepted)
			case hintCoalesced:
				resp.Coalesced++
				s.metrics.Webhook(src.name, metrics.WebhookCoalesced)
			case hintDropped:
				resp.Dropped++
				s.metrics.Webhook(src.name, metrics.WebhookDropped)
			}
		}
		code := http.StatusAccepted
		if resp.Dropped == len(hints) {
			code = http.StatusServiceUnavailable
			w.Header().Set("Retry-After", "5")
		}
		writeJSON(w, code, resp)
	}
}

// webhookToken checks the shared secret, sent in the X-Shipwatch-Token
// header, in Authorization (as "Bearer <secret>", or the bare secret,
// which is what Harbor's "Auth Header" sends), or in ?token= (Docker Hub
// cannot send headers). Each candidate is compared in constant time.
func (s *Server) webhookToken(r *http.Request, fromQuery string) bool {
	candidates := []string{r.Header.Get("X-Shipwatch-Token"), fromQuery}
	if a := r.Header.Get("Authorization"); a != "" {
		if t, ok := bearer(a); ok {
			candidates = append(candidates, t)
		} else {
			candidates = append(candidates, strings.TrimSpace(a))
		}
	}
	ok := false
	for _, c := range candidates {
		if c != "" && equalSecret(c, s.opts.WebhookSecret) {
			ok = true
		}
	}
	return ok
}

// validSignature checks GitHub's "sha256=<hex HMAC-SHA256 of the body>".
func validSignature(header string, body []byte, secret string) bool {
	hexSig, ok := strings.CutPrefix(header, "sha256=")
	if !ok {
		return false
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return hmac.Equal(got, mac.Sum(nil))
}

// fire hands a coalesced hint to the agent.
func (s *Server) fire(h Hint) {
	n := s.backend.Trigger(context.Background(), h)
	s.log.Info().Str("source", h.Source).Str("repository", h.Repository).Str("tag", h.Tag).
		Int("targets", n).Msg("api: webhook hint: check requested")
}
