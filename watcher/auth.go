package watcher

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
)

// challenge is a parsed WWW-Authenticate header.
type challenge struct {
	scheme  string // "bearer", "basic" or "" (no auth required)
	realm   string
	service string
}

// parseChallenges reads every challenge of the WWW-Authenticate headers
// (RFC 7235: auth-scheme followed by comma-separated key=value parameters,
// values as tokens or quoted strings) and returns the preferred one: a
// bearer challenge when there is one, otherwise basic.
func parseChallenges(headers []string) challenge {
	var best challenge
	for _, h := range headers {
		for _, c := range splitChallenges(h) {
			if c.scheme == "bearer" {
				return c
			}
			if c.scheme == "basic" && best.scheme == "" {
				best = c
			}
		}
	}
	return best
}

func splitChallenges(h string) []challenge {
	var out []challenge
	s := strings.TrimSpace(h)
	for s != "" {
		// auth-scheme
		i := strings.IndexAny(s, " \t,")
		if i < 0 {
			out = append(out, challenge{scheme: strings.ToLower(s)})
			break
		}
		c := challenge{scheme: strings.ToLower(s[:i])}
		s = strings.TrimLeft(s[i:], " \t,")
		// parameters until the next auth-scheme (a token not followed by '=')
		for s != "" {
			eq := strings.IndexByte(s, '=')
			sp := strings.IndexAny(s, " \t,")
			if eq < 0 || (sp >= 0 && sp < eq) {
				break // next challenge
			}
			key := strings.ToLower(strings.TrimSpace(s[:eq]))
			s = strings.TrimLeft(s[eq+1:], " \t")
			var val string
			if strings.HasPrefix(s, `"`) {
				var b strings.Builder
				j := 1
				for ; j < len(s); j++ {
					if s[j] == '\\' && j+1 < len(s) {
						j++
						b.WriteByte(s[j])
						continue
					}
					if s[j] == '"' {
						break
					}
					b.WriteByte(s[j])
				}
				val = b.String()
				if j < len(s) {
					j++
				}
				s = s[j:]
			} else {
				j := strings.IndexAny(s, " \t,")
				if j < 0 {
					j = len(s)
				}
				val, s = s[:j], s[j:]
			}
			switch key {
			case "realm":
				c.realm = val
			case "service":
				c.service = val
			}
			s = strings.TrimLeft(s, " \t,")
		}
		out = append(out, c)
	}
	return out
}

// credentials are what the watcher may present to one registry. They are
// secrets: never logged, never put in errors.
type credentials struct {
	username, password string
	identityToken      string // OAuth2 refresh token (docker login with a token)
	registryToken      string // bearer token sent as is
}

func (c credentials) anonymous() bool {
	return c.username == "" && c.password == "" && c.identityToken == "" && c.registryToken == ""
}

func (c credentials) basicHeader() string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(c.username+":"+c.password))
}

// credentialTTL is how long credentials from the keychain (config.json,
// credential helpers) are reused before they are looked up again, so a
// rotated password is picked up without running a helper per request.
const credentialTTL = 10 * time.Minute

// keychainResource names a registry for authn.Keychain lookups.
type keychainResource string

func (r keychainResource) String() string      { return string(r) }
func (r keychainResource) RegistryStr() string { return string(r) }

// Batching: when a scope has no token, the token request also asks for
// other scopes the recent passes announced (expect) and that have none, as
// the distribution token spec allows (the scope parameter repeated). One
// request then renews many repositories' tokens instead of one each.
const (
	maxBatchScopes = 25               // scopes per token request at most
	maxBatchBytes  = 2000             // bytes of scope parameters at most, for servers with short URL limits
	expectedTTL    = 15 * time.Minute // an announced scope is forgotten after this long unannounced
)

// pullScope is the token scope for reading repo.
func pullScope(repo string) string { return "repository:" + repo + ":pull" }

// tokenEntry is a cached bearer token for one scope.
type tokenEntry struct {
	token   string
	expires time.Time
	// opaqueBatch: the token was asked for several scopes and does not say
	// which it grants; if the registry rejects it, batching stops.
	opaqueBatch bool
}

// tokenGrant is what a token request returned.
type tokenGrant struct {
	token   string
	expires time.Time
	// scopes are the pull scopes the token's access claim grants; nil when
	// the token does not say (it is opaque).
	scopes []string
}

// tokenCall is an in-flight token request that the callers of its scopes
// wait for.
type tokenCall struct {
	done    chan struct{}
	scopes  []string        // asked for; the first is the caller's
	granted map[string]bool // scopes the token is cached for
	token   string
	err     error
	alone   bool // the registry refused the batch: ask again, one scope per request
}

// auth holds one registry's credentials and bearer tokens. Tokens are
// cached per scope ("repository:o/a:pull", as Docker Hub and GHCR
// require) for their lifetime and shared by all requests; concurrent
// requests for the same scope wait for one token request, which may renew
// other announced scopes too (see maxBatchScopes).
type auth struct {
	explicit *credentials // from Registry; nil: use the keychain
	keychain authn.Keychain
	resource keychainResource
	now      func() time.Time

	lookupMu  sync.Mutex // serializes keychain lookups
	mu        sync.Mutex
	creds     credentials
	credsTime time.Time
	credsOK   bool
	tokens    map[string]tokenEntry
	inflight  map[string]*tokenCall
	expected  map[string]time.Time // announced scopes → when last announced
	order     []string             // the latest announcement, in the order its pass sends requests
	pos       map[string]int       // scope → its index in order
	solo      map[string]bool      // scopes a batch did not grant: asked for alone
	batchOff  bool                 // the registry does not honour batches
	onWait    func(scope string)   // tests: called when a caller starts waiting for another's request
}

func newAuth(explicit *credentials, kc authn.Keychain, resource string, now func() time.Time) *auth {
	return &auth{explicit: explicit, keychain: kc, resource: keychainResource(resource), now: now,
		tokens: map[string]tokenEntry{}, inflight: map[string]*tokenCall{},
		expected: map[string]time.Time{}, solo: map[string]bool{}}
}

// credentials returns the registry's credentials: the explicit ones, or
// the keychain's (looked up at most every credentialTTL).
func (a *auth) credentials(ctx context.Context) (credentials, error) {
	if a.explicit != nil {
		return *a.explicit, nil
	}
	fresh := func() (credentials, bool) {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.creds, a.credsOK && a.now().Sub(a.credsTime) < credentialTTL
	}
	if c, ok := fresh(); ok {
		return c, nil
	}
	// One lookup at a time: a pass starts hundreds of requests at once, and
	// each lookup may run a credential helper.
	a.lookupMu.Lock()
	defer a.lookupMu.Unlock()
	if c, ok := fresh(); ok {
		return c, nil
	}
	if a.keychain == nil {
		return credentials{}, nil
	}
	au, err := authn.Resolve(ctx, a.keychain, a.resource)
	if err != nil {
		return credentials{}, fmt.Errorf("look up credentials for %s in the Docker config or credential helper: %w", a.resource, err)
	}
	cfg, err := authn.Authorization(ctx, au)
	if err != nil {
		return credentials{}, fmt.Errorf("get credentials for %s from the Docker config or credential helper: %w", a.resource, err)
	}
	c := credentials{username: cfg.Username, password: cfg.Password, identityToken: cfg.IdentityToken, registryToken: cfg.RegistryToken}
	if cfg.Auth != "" && c.username == "" && c.password == "" {
		if raw, err := base64.StdEncoding.DecodeString(cfg.Auth); err == nil {
			c.username, c.password, _ = strings.Cut(string(raw), ":")
		}
	}
	a.mu.Lock()
	a.creds, a.credsTime, a.credsOK = c, a.now(), true
	a.mu.Unlock()
	return c, nil
}

// expect announces scopes that a pass is about to read, in the order it
// will read them, so that a token request for one of them can renew the
// others too.
func (a *auth) expect(scopes []string) {
	a.mu.Lock()
	now := a.now()
	a.order, a.pos = scopes, make(map[string]int, len(scopes))
	for i, s := range scopes {
		a.expected[s] = now
		a.pos[s] = i
	}
	a.mu.Unlock()
}

// validLocked returns the cached token of scope if it is still valid.
func (a *auth) validLocked(scope string) (string, bool) {
	e, ok := a.tokens[scope]
	if !ok || !a.now().Before(e.expires) {
		return "", false
	}
	return e.token, true
}

// forget drops the token of scope (the registry rejected it early). When
// that token was an opaque one asked for several scopes, the registry may
// not honour batches: every scope it was cached for is dropped and later
// requests ask for one scope each.
func (a *auth) forget(scope, token string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	e, ok := a.tokens[scope]
	if !ok || e.token != token {
		return
	}
	delete(a.tokens, scope)
	if e.opaqueBatch {
		a.batchOff = true
		for s, o := range a.tokens {
			if o.token == token {
				delete(a.tokens, s)
			}
		}
	}
}

// batchLocked returns scope followed by announced scopes that have no
// valid token and no request in flight, within the batch limits: first
// the scopes that come after it in the latest announcement, so that a
// batch serves requests sent close together (which then carry the same
// Authorization header, and HTTP/2's header compression sends it once
// instead of with every request), then any other announced scope.
func (a *auth) batchLocked(scope string) []string {
	scopes, size := []string{scope}, len(scope)
	now := a.now()
	take := func(s string) {
		if s == scope || !a.needsTokenLocked(s) || size+len(s) > maxBatchBytes || slices.Contains(scopes, s) {
			return
		}
		scopes, size = append(scopes, s), size+len(s)
	}
	if i, ok := a.pos[scope]; ok {
		for k := 1; k < len(a.order) && len(scopes) < maxBatchScopes; k++ {
			take(a.order[(i+k)%len(a.order)])
		}
	}
	for s, seen := range a.expected {
		if now.Sub(seen) > expectedTTL {
			delete(a.expected, s)
			continue
		}
		if len(scopes) == maxBatchScopes {
			break
		}
		take(s)
	}
	return scopes
}

// token returns a token for scope, fetching one when none is cached;
// concurrent callers share one fetch. With batch, the fetch also asks for
// other announced scopes (batchLocked); a scope the token does not grant
// is then asked for alone.
func (a *auth) token(ctx context.Context, scope string, batch bool, fetch func(context.Context, []string) (tokenGrant, error)) (string, error) {
	for {
		a.mu.Lock()
		if t, ok := a.validLocked(scope); ok {
			a.mu.Unlock()
			return t, nil
		}
		call, running := a.inflight[scope]
		if !running {
			scopes := []string{scope}
			if batch && !a.batchOff && !a.solo[scope] {
				scopes = a.batchLocked(scope)
			}
			call = a.startLocked(scopes)
		}
		wait := a.onWait
		a.mu.Unlock()
		if running {
			if wait != nil {
				wait(scope)
			}
			select {
			case <-call.done:
			case <-ctx.Done():
				return "", ctx.Err()
			}
		} else {
			a.finish(ctx, call, fetch)
		}
		switch {
		case call.granted[scope]:
			return call.token, nil
		case call.err != nil && !call.alone && !(running && stoppedElsewhere(ctx, call.err)):
			return "", call.err
		}
		// Not granted by someone else's batch, the batch was refused (the
		// next round asks for scope alone: finish marked it), or the
		// caller that fetched was stopped while this one was not.
	}
}

// finish runs call's fetch and records its outcome for its waiters. When
// the registry granted a whole batch, the next batch of the announcement
// is asked for at once, without waiting for a caller to need it (see
// prefetchLocked).
func (a *auth) finish(ctx context.Context, call *tokenCall, fetch func(context.Context, []string) (tokenGrant, error)) {
	g, err := fetch(ctx, call.scopes)
	a.mu.Lock()
	var next *tokenCall
	defer func() {
		a.mu.Unlock()
		close(call.done)
		if next != nil {
			go a.finish(ctx, next, fetch)
		}
	}()
	for _, s := range call.scopes {
		delete(a.inflight, s)
	}
	batched := len(call.scopes) > 1
	if err != nil {
		call.err = err
		if batched && batchRefused(err) {
			a.batchOff, call.alone = true, true
		}
		return
	}
	var granted map[string]bool
	if g.scopes != nil {
		granted = make(map[string]bool, len(g.scopes))
		for _, s := range g.scopes {
			granted[s] = true
		}
	}
	call.token, call.granted = g.token, make(map[string]bool, len(call.scopes))
	for i, s := range call.scopes {
		// The caller's own scope takes the token whatever it grants, as
		// a single-scope request does: the registry has the last word.
		if i == 0 || granted == nil || granted[s] {
			a.tokens[s] = tokenEntry{token: g.token, expires: g.expires, opaqueBatch: batched && granted == nil}
			call.granted[s] = true
		} else {
			a.solo[s] = true
		}
	}
	if batched && len(call.granted) == len(call.scopes) {
		next = a.prefetchLocked(call.scopes[0])
	}
}

// prefetchLocked starts (registers as in flight) the token request for the
// first scope after from in the latest announcement that has no token and
// none on the way, batched as usual; nil when there is none. A pass's
// checks reach the repositories in the announced order, so without this
// every batch would be asked for only when the first check that needs it
// got there, and the checks behind it would wait a token round trip each
// time. Each prefetched batch that is granted whole starts the next, so
// the token requests stay ahead of the checks.
func (a *auth) prefetchLocked(from string) *tokenCall {
	i, ok := a.pos[from]
	if !ok || a.batchOff {
		return nil
	}
	for k := 1; k < len(a.order); k++ {
		if s := a.order[(i+k)%len(a.order)]; a.needsTokenLocked(s) {
			return a.startLocked(a.batchLocked(s))
		}
	}
	return nil
}

// needsTokenLocked reports whether a batch may take scope: it has no valid
// token, none on the way, and is not left to requests of its own.
func (a *auth) needsTokenLocked(scope string) bool {
	_, valid := a.validLocked(scope)
	return !valid && !a.solo[scope] && a.inflight[scope] == nil
}

// startLocked registers a token request for scopes as in flight, so that
// their callers wait for it; its fetch is run by finish.
func (a *auth) startLocked(scopes []string) *tokenCall {
	call := &tokenCall{done: make(chan struct{}), scopes: scopes}
	for _, s := range scopes {
		a.inflight[s] = call
	}
	return call
}

// stoppedElsewhere reports whether err, the error of a token request
// another caller made, says that caller was cancelled while ctx still
// runs: this caller then makes the request itself.
func stoppedElsewhere(ctx context.Context, err error) bool {
	return ctx.Err() == nil && errors.Is(err, context.Canceled)
}

// batchRefused reports whether a token request for several scopes failed
// in a way that one scope per request may not: a 4xx other than 401 (bad
// credentials) and 429 (rate limited), such as 400 or 414 URI Too Long.
func batchRefused(err error) bool {
	var re *Error
	return errors.As(err, &re) && re.Status >= 400 && re.Status < 500 &&
		re.Status != http.StatusUnauthorized && re.Status != http.StatusTooManyRequests
}

// tokenScopes returns the pull scopes that the access claim of a JWT
// token grants (the distribution token format: Docker Hub, Harbor, Quay,
// GitLab), and false when tok is not such a JWT. The token is not
// verified: this only decides which scopes to cache it for, and the
// registry still judges every request.
func tokenScopes(tok string) ([]string, bool) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return nil, false
	}
	var claims struct {
		Access *[]struct {
			Type    string   `json:"type"`
			Name    string   `json:"name"`
			Actions []string `json:"actions"`
		} `json:"access"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Access == nil {
		return nil, false
	}
	scopes := []string{}
	for _, acc := range *claims.Access {
		if acc.Type != "repository" || acc.Name == "" {
			continue
		}
		for _, act := range acc.Actions {
			if act == "pull" || act == "*" {
				scopes = append(scopes, pullScope(acc.Name))
				break
			}
		}
	}
	return scopes, true
}

// tokenResponse is the token endpoint's answer (distribution token spec;
// OAuth2 endpoints say access_token).
type tokenResponse struct {
	Token       string `json:"token"`
	AccessToken string `json:"access_token"`
	ExpiresIn   int    `json:"expires_in"`
}

// tokenLifetime is when a token obtained now should be renewed: its
// expires_in (60 s when missing, as the token spec says) minus a tenth of it
// (at most 30 s) so that it does not expire in flight.
func tokenLifetime(expiresIn int) time.Duration {
	if expiresIn <= 0 {
		expiresIn = 60
	}
	// A day at most: a larger expires_in would overflow the Duration into
	// a negative lifetime, and the token would be fetched again for every
	// request.
	expiresIn = min(expiresIn, 24*60*60)
	ttl := time.Duration(expiresIn) * time.Second
	margin := min(ttl/10, 30*time.Second)
	return ttl - margin
}

// tokenRequest builds the request for a token of scopes from the realm of
// ch, with the credentials c: basic auth for a password, the OAuth2
// refresh-token grant (POST, scopes space-separated) for an identity token,
// nothing when anonymous.
func tokenRequest(ctx context.Context, ch challenge, scopes []string, c credentials) (*http.Request, error) {
	u, err := url.Parse(ch.realm)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("token realm %q is not an http(s) URL", ch.realm)
	}
	if c.identityToken != "" {
		form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {c.identityToken}, "client_id": {"shipwatch"}}
		if ch.service != "" {
			form.Set("service", ch.service)
		}
		form.Set("scope", strings.Join(scopes, " "))
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), strings.NewReader(form.Encode()))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		return req, nil
	}
	q := u.Query()
	if ch.service != "" {
		q.Set("service", ch.service)
	}
	q["scope"] = scopes
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	if c.username != "" || c.password != "" {
		req.Header.Set("Authorization", c.basicHeader())
	}
	return req, nil
}

func parseToken(body []byte) (string, int, error) {
	var tr tokenResponse
	if err := json.Unmarshal(body, &tr); err != nil {
		return "", 0, fmt.Errorf("token response is not valid JSON: %w", err)
	}
	tok := tr.Token
	if tok == "" {
		tok = tr.AccessToken
	}
	if tok == "" {
		return "", 0, fmt.Errorf("token response has no token")
	}
	return tok, tr.ExpiresIn, nil
}
