package watcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/time/rate"
)

// endpoint talks to one registry (or one mirror): one http.Client and
// transport (keep-alive, HTTP/2 over TLS), one /v2/ ping per lifetime, its
// credentials and token cache, its concurrency bound, rate limit and
// Retry-After pause.
type endpoint struct {
	host     string   // as in references and errors: "ghcr.io", "docker.io"
	apiHost  string   // where requests go: "index.docker.io" for Docker Hub
	schemes  []string // tried in order by the ping; the first that answers is kept
	insecure bool     // plain HTTP allowed (loopback, or Registry.Insecure)
	client   *http.Client
	auth     *auth
	sem      chan struct{} // this registry's in-flight bound
	global   chan struct{} // the watcher's in-flight bound
	limiter  *rate.Limiter // nil: unlimited
	timeout  time.Duration
	retry    retryPolicy
	stats    *counters
	log      zerolog.Logger

	pingMu sync.Mutex
	pinged bool
	base   string // "https://ghcr.io", set by the ping

	chMu sync.Mutex
	ch   challenge

	bearerMu sync.Mutex
	bearers  []string // the latest "Bearer <token>" headers, newest last

	pauseMu    sync.Mutex
	pauseUntil time.Time // after a 429: no request before this
}

// call is one logical registry request; do sends it, retrying as needed.
type call struct {
	method   string
	url      string            // absolute URL
	header   map[string]string // static headers (Accept …)
	body     string            // form body for token POSTs
	repo     string            // repository whose pull scope authorizes the call; "" = no registry auth
	kind     string            // for Stats: ping, token, head, get, tags
	maxBody  int64             // bytes read at most from the body (0: none)
	subject  string            // for errors: "ghcr.io/o/a:1.4"
	attempts int               // 0: the retry policy's
	allow401 bool              // the ping: 401 is an answer, not an error
	probe    bool              // a scheme probe of the ping: its failure is not an error
}

// response is a fully read answer.
type response struct {
	status int
	header http.Header
	body   []byte
	url    *url.URL
}

// errBodyTooLarge is returned by read when a body passes maxBody.
var errBodyTooLarge = errors.New("body over the size cap")

// ensurePing pings /v2/ once per lifetime (retried on the next call when it
// failed): it picks the scheme and learns the auth challenge.
func (e *endpoint) ensurePing(ctx context.Context) error {
	e.pingMu.Lock()
	defer e.pingMu.Unlock()
	if e.pinged {
		return nil
	}
	var firstErr error
	for i, scheme := range e.schemes {
		base := scheme + "://" + e.apiHost
		c := call{method: http.MethodGet, url: base + "/v2/", kind: "ping", subject: "registry " + e.host, allow401: true}
		if i < len(e.schemes)-1 {
			c.attempts, c.probe = 1, true // a plain-HTTP registry fails TLS at once; try HTTP next
		}
		resp, err := e.do(ctx, c)
		if err != nil {
			var re *Error
			if errors.As(err, &re) && re.Status != 0 {
				if firstErr != nil {
					// HTTPS failed and plain HTTP got a non-registry answer
					// (such as 400 from a TLS port): the HTTPS error says more.
					return firstErr
				}
				return err // an HTTP answer: this is the scheme, and it failed
			}
			if firstErr == nil || i == len(e.schemes)-1 {
				firstErr = err
			}
			if ctx.Err() != nil {
				break
			}
			continue
		}
		switch resp.status {
		case http.StatusOK:
			e.setChallenge(challenge{})
		case http.StatusUnauthorized:
			e.setChallenge(parseChallenges(resp.header.Values("WWW-Authenticate")))
		}
		e.base, e.pinged = base, true
		return nil
	}
	return firstErr
}

func (e *endpoint) setChallenge(c challenge) {
	e.chMu.Lock()
	e.ch = c
	e.chMu.Unlock()
}

func (e *endpoint) challenge() challenge {
	e.chMu.Lock()
	defer e.chMu.Unlock()
	return e.ch
}

// authorize returns the Authorization header for a call on repo, and the
// bearer token it contains when it came from the token cache.
func (e *endpoint) authorize(ctx context.Context, repo string) (header, token string, err error) {
	if repo == "" {
		return "", "", nil
	}
	creds, err := e.auth.credentials(ctx)
	if err != nil {
		return "", "", &Error{Registry: e.host, Subject: "registry " + e.host, Kind: ErrUnauthorized, Cause: err, Hint: "fix the Docker config or credential helper, or set credentials for " + e.host + " in the shipwatch config"}
	}
	if creds.registryToken != "" {
		return "Bearer " + creds.registryToken, "", nil
	}
	ch := e.challenge()
	switch ch.scheme {
	case "bearer":
		// Batches are asked for with GET; the OAuth2 grant of an identity
		// token is left to one scope per request.
		batch := creds.identityToken == ""
		tok, err := e.auth.token(ctx, pullScope(repo), batch, func(ctx context.Context, scopes []string) (tokenGrant, error) {
			return e.fetchToken(ctx, ch, scopes, creds)
		})
		if err != nil {
			return "", "", err
		}
		return e.bearer(tok), tok, nil
	case "basic":
		if creds.username != "" || creds.password != "" {
			return creds.basicHeader(), "", nil
		}
	}
	return "", "", nil
}

// bearerKept is how many Authorization headers bearer keeps: a pass's
// requests use a few batch tokens at a time.
const bearerKept = 8

// bearer returns "Bearer " + tok, built once per token rather than once
// per request (a batch token is a few KB).
func (e *endpoint) bearer(tok string) string {
	e.bearerMu.Lock()
	defer e.bearerMu.Unlock()
	for i := len(e.bearers) - 1; i >= 0; i-- {
		if h := e.bearers[i]; len(h) == len(tok)+len("Bearer ") && h[len("Bearer "):] == tok {
			return h
		}
	}
	h := "Bearer " + tok
	if len(e.bearers) == bearerKept {
		copy(e.bearers, e.bearers[1:])
		e.bearers = e.bearers[:bearerKept-1]
	}
	e.bearers = append(e.bearers, h)
	return h
}

// fetchToken asks the token endpoint of ch for a token of scopes.
func (e *endpoint) fetchToken(ctx context.Context, ch challenge, scopes []string, creds credentials) (tokenGrant, error) {
	subject := "registry " + e.host + " (token for " + strings.TrimSuffix(strings.TrimPrefix(scopes[0], "repository:"), ":pull")
	if len(scopes) > 1 {
		subject += fmt.Sprintf(" and %d more repositories", len(scopes)-1)
	}
	subject += ")"
	req, err := tokenRequest(ctx, ch, scopes, creds)
	if err != nil {
		return tokenGrant{}, &Error{Registry: e.host, Subject: subject, Kind: ErrInvalidResponse, Cause: err, Hint: hintFor(ErrInvalidResponse, e.host, "")}
	}
	if req.URL.Scheme == "http" && !creds.anonymous() && !e.insecure && !isLoopbackHost(req.URL.Host) {
		return tokenGrant{}, &Error{Registry: e.host, Subject: subject, Kind: ErrInvalidResponse,
			Detail: "token endpoint " + req.URL.Host + " is plain HTTP",
			Hint:   "refusing to send credentials unencrypted; set insecure: true for " + e.host + " only if you trust the network"}
	}
	c := call{method: req.Method, url: req.URL.String(), kind: "token", maxBody: 1 << 20, subject: subject,
		header: map[string]string{"Accept": "application/json"}}
	if h := req.Header.Get("Authorization"); h != "" {
		c.header["Authorization"] = h
	}
	if req.Method == http.MethodPost {
		b, _ := io.ReadAll(req.Body)
		c.body = string(b)
		c.header["Content-Type"] = req.Header.Get("Content-Type")
	}
	now := e.auth.now()
	resp, err := e.do(ctx, c)
	if err != nil {
		return tokenGrant{}, err
	}
	tok, expiresIn, err := parseToken(resp.body)
	if err != nil {
		return tokenGrant{}, &Error{Registry: e.host, Subject: subject, Status: resp.status, Kind: ErrInvalidResponse, Cause: err, Hint: hintFor(ErrInvalidResponse, e.host, "")}
	}
	g := tokenGrant{token: tok, expires: now.Add(tokenLifetime(expiresIn))}
	if granted, ok := tokenScopes(tok); ok {
		g.scopes = granted
	}
	return g, nil
}

// do sends c, authorizing it, and retries 5xx, timeouts and network errors
// with capped exponential backoff and 429 after Retry-After. 401/403/404
// are not retried, except that a cached token the registry rejects is
// replaced once. It returns an *Error for every failure.
func (e *endpoint) do(ctx context.Context, c call) (*response, error) {
	if c.kind != "ping" && c.kind != "token" {
		if err := e.ensurePing(ctx); err != nil {
			return nil, err
		}
	}
	attempts := c.attempts
	if attempts <= 0 {
		attempts = e.retry.attempts
	}
	fail := func(kind error, status int, detail string, cause error) (*response, error) {
		if !c.probe {
			e.stats.errors.Add(1)
		}
		repo := c.repo
		if repo == "" {
			repo = "the image"
		}
		return nil, &Error{Registry: e.host, Subject: c.subject, Status: status, Kind: kind, Detail: detail, Cause: cause, Hint: hintFor(kind, e.host, repo)}
	}
	stopped := func() (*response, error) {
		e.stats.errors.Add(1)
		return nil, &Error{Registry: e.host, Subject: c.subject, Kind: ErrUnavailable, Detail: "check stopped before the registry answered", Cause: ctx.Err()}
	}
	renewed := false
	for attempt := 1; ; attempt++ {
		if err := e.waitPause(ctx); err != nil {
			if ctx.Err() != nil {
				return stopped()
			}
			return fail(ErrRateLimited, http.StatusTooManyRequests, err.Error(), nil)
		}
		authz, token, err := e.authorize(ctx, c.repo)
		if err != nil {
			return nil, err
		}
		resp, err := e.send(ctx, c, authz)
		if err != nil {
			switch {
			case ctx.Err() != nil:
				return stopped()
			case errors.Is(err, errBodyTooLarge):
				return fail(ErrTooLarge, 0, fmt.Sprintf("more than %d bytes", c.maxBody), nil)
			case attempt >= attempts:
				detail := "after " + attemptsText(attempt)
				if errors.Is(err, context.DeadlineExceeded) {
					detail = fmt.Sprintf("no answer within %s, %s", e.timeout, attemptsText(attempt))
				}
				return fail(ErrUnavailable, 0, detail, err)
			}
			wait := e.retry.backoff(attempt)
			e.log.Debug().Str("registry", e.host).Str("kind", c.kind).Int("attempt", attempt).Dur("wait", wait).Str("error", oneLine(err.Error())).Msg("registry request retried")
			if err := sleep(ctx, wait); err != nil {
				return stopped()
			}
			e.stats.retries.Add(1)
			continue
		}
		switch s := resp.status; {
		case s >= 200 && s < 300:
			return resp, nil
		case s == http.StatusUnauthorized && c.allow401:
			return resp, nil
		case s == http.StatusUnauthorized:
			if ch := parseChallenges(resp.header.Values("WWW-Authenticate")); c.repo != "" && ch.scheme != "" && ch != e.challenge() && !renewed {
				// The registry (not its token endpoint) asks for another kind
				// of auth than the ping said.
				e.setChallenge(ch)
				renewed = true
				attempt--
				continue
			}
			if token != "" && !renewed {
				// The token expired or was revoked early: get a new one, once.
				e.auth.forget(pullScope(c.repo), token)
				renewed = true
				attempt--
				continue
			}
			return fail(ErrUnauthorized, s, "HTTP 401"+registryCodes(resp.body), nil)
		case s == http.StatusForbidden:
			return fail(ErrDenied, s, "HTTP 403"+registryCodes(resp.body), nil)
		case s == http.StatusNotFound:
			return fail(ErrNotFound, s, "HTTP 404"+registryCodes(resp.body), nil)
		case s == http.StatusTooManyRequests:
			e.stats.rateLimited.Add(1)
			wait, ok := retryAfter(resp.header, time.Now())
			if !ok {
				wait = e.retry.backoff(attempt)
			}
			e.pause(wait)
			detail := "HTTP 429"
			if ok {
				detail += ", retry after " + wait.String()
			}
			if attempt >= attempts || wait > e.retry.maxRetryAfter || !fitsDeadline(ctx, wait) {
				return fail(ErrRateLimited, s, detail, nil)
			}
			e.log.Debug().Str("registry", e.host).Str("kind", c.kind).Int("attempt", attempt).Dur("wait", wait).Msg("registry rate limit, waiting")
			if err := sleep(ctx, wait); err != nil {
				return fail(ErrRateLimited, s, detail, err)
			}
			e.stats.retries.Add(1)
		case retryableStatus(s):
			if attempt >= attempts {
				return fail(ErrUnavailable, s, fmt.Sprintf("HTTP %d after %s", s, attemptsText(attempt)), nil)
			}
			wait := e.retry.backoff(attempt)
			e.log.Debug().Str("registry", e.host).Str("kind", c.kind).Int("attempt", attempt).Int("status", s).Dur("wait", wait).Msg("registry request retried")
			if err := sleep(ctx, wait); err != nil {
				return fail(ErrUnavailable, s, fmt.Sprintf("HTTP %d", s), err)
			}
			e.stats.retries.Add(1)
		default:
			return fail(ErrInvalidResponse, s, fmt.Sprintf("unexpected HTTP %d", s)+registryCodes(resp.body), nil)
		}
	}
}

// send makes one attempt within the per-request timeout and the
// concurrency bounds, and reads at most c.maxBody bytes of the answer.
func (e *endpoint) send(ctx context.Context, c call, authz string) (*response, error) {
	if e.limiter != nil {
		if err := e.limiter.Wait(ctx); err != nil {
			return nil, err
		}
	}
	if err := acquire(ctx, e.sem); err != nil {
		return nil, err
	}
	defer release(e.sem)
	if err := acquire(ctx, e.global); err != nil {
		return nil, err
	}
	defer release(e.global)

	actx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	actx = httptrace.WithClientTrace(actx, &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		if !info.Reused {
			e.stats.newConns.Add(1)
		}
	}})
	var body io.Reader
	if c.body != "" {
		body = strings.NewReader(c.body)
	}
	target := c.url
	if strings.HasPrefix(target, "/") {
		target = e.base + target
	}
	req, err := http.NewRequestWithContext(actx, c.method, target, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "shipwatch")
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	e.stats.count(c.kind)
	resp, err := e.client.Do(req)
	if err != nil {
		return nil, scrubURLError(err)
	}
	defer resp.Body.Close()
	out := &response{status: resp.StatusCode, header: resp.Header, url: resp.Request.URL}
	limit := c.maxBody
	if resp.StatusCode >= 300 || limit <= 0 {
		limit = 64 << 10 // error bodies: enough for the registry's error codes
	}
	if c.method == http.MethodHead {
		return out, nil
	}
	if resp.StatusCode < 300 && resp.ContentLength > limit {
		return nil, errBodyTooLarge
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read response body: %w", err)
	}
	if int64(len(b)) > limit {
		if resp.StatusCode < 300 {
			return nil, errBodyTooLarge
		}
		b = b[:limit]
	}
	out.body = b
	return out, nil
}

// scrubURLError drops the query from a *url.Error's URL: token requests
// carry the scope there, and nothing in a query belongs in an error.
func scrubURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if u, perr := url.Parse(ue.URL); perr == nil {
			u.RawQuery, u.User = "", nil
			return &url.Error{Op: ue.Op, URL: u.String(), Err: ue.Err}
		}
	}
	return err
}

// pause makes every request to this registry wait d (a 429's Retry-After),
// so that one rate-limited answer does not turn into a storm of them.
func (e *endpoint) pause(d time.Duration) {
	until := time.Now().Add(d)
	e.pauseMu.Lock()
	if until.After(e.pauseUntil) {
		e.pauseUntil = until
	}
	e.pauseMu.Unlock()
}

// waitPause waits out a pause, or fails at once when it would outlast ctx
// or the longest Retry-After the watcher obeys by waiting.
func (e *endpoint) waitPause(ctx context.Context) error {
	e.pauseMu.Lock()
	d := time.Until(e.pauseUntil)
	e.pauseMu.Unlock()
	if d <= 0 {
		return nil
	}
	if d > e.retry.maxRetryAfter || !fitsDeadline(ctx, d) {
		return fmt.Errorf("registry asked to wait %s before the next request", d.Round(time.Second))
	}
	return sleep(ctx, d)
}

func attemptsText(n int) string {
	if n == 1 {
		return "1 attempt"
	}
	return fmt.Sprintf("%d attempts", n)
}

func acquire(ctx context.Context, sem chan struct{}) error {
	if sem == nil {
		return nil
	}
	select {
	case sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func release(sem chan struct{}) {
	if sem != nil {
		<-sem
	}
}

// registryCodes extracts the distribution error codes ("MANIFEST_UNKNOWN")
// of an error body. Only the codes: messages are free text that a registry
// or proxy might fill with anything, so they stay out of errors.
func registryCodes(body []byte) string {
	var codes []string
	for _, c := range parseErrorCodes(body) {
		ok := c != "" && len(c) <= 40
		for _, r := range c {
			if !(r >= 'A' && r <= 'Z') && r != '_' {
				ok = false
			}
		}
		if ok {
			codes = append(codes, c)
		}
		if len(codes) == 3 {
			break
		}
	}
	if len(codes) == 0 {
		return ""
	}
	return " " + strings.Join(codes, ", ")
}

func isLoopbackHost(hostport string) bool {
	host := hostport
	if h, _, ok := strings.Cut(hostport, "]"); ok && strings.HasPrefix(h, "[") {
		return h == "[::1"
	}
	if i := strings.LastIndexByte(host, ':'); i >= 0 {
		host = host[:i]
	}
	return host == "localhost" || strings.HasPrefix(host, "127.")
}
