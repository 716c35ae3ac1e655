package watcher

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
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

// tokenEntry is a cached bearer token for one scope.
type tokenEntry struct {
	token   string
	expires time.Time
}

// tokenCall is an in-flight token request that others wait for.
type tokenCall struct {
	done  chan struct{}
	entry tokenEntry
	err   error
}

// auth holds one registry's credentials and bearer tokens. Tokens are
// cached per scope ("repository:o/a:pull", as Docker Hub and GHCR
// require) for their lifetime and shared by all requests; concurrent
// requests for the same scope wait for one token request.
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
}

func newAuth(explicit *credentials, kc authn.Keychain, resource string, now func() time.Time) *auth {
	return &auth{explicit: explicit, keychain: kc, resource: keychainResource(resource), now: now,
		tokens: map[string]tokenEntry{}, inflight: map[string]*tokenCall{}}
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

// cached returns a valid token for scope, if any.
func (a *auth) cached(scope string) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	e, ok := a.tokens[scope]
	if !ok || !a.now().Before(e.expires) {
		return "", false
	}
	return e.token, true
}

// forget drops the token of scope (the registry rejected it early).
func (a *auth) forget(scope, token string) {
	a.mu.Lock()
	if e, ok := a.tokens[scope]; ok && e.token == token {
		delete(a.tokens, scope)
	}
	a.mu.Unlock()
}

// token returns a token for scope, fetching it with fetch when none is
// cached; concurrent callers share one fetch.
func (a *auth) token(ctx context.Context, scope string, fetch func(context.Context) (tokenEntry, error)) (string, error) {
	if t, ok := a.cached(scope); ok {
		return t, nil
	}
	a.mu.Lock()
	if e, ok := a.tokens[scope]; ok && a.now().Before(e.expires) {
		a.mu.Unlock()
		return e.token, nil
	}
	call, running := a.inflight[scope]
	if !running {
		call = &tokenCall{done: make(chan struct{})}
		a.inflight[scope] = call
	}
	a.mu.Unlock()
	if running {
		select {
		case <-call.done:
			if call.err != nil {
				return "", call.err
			}
			return call.entry.token, nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	call.entry, call.err = fetch(ctx)
	a.mu.Lock()
	delete(a.inflight, scope)
	if call.err == nil {
		a.tokens[scope] = call.entry
	}
	a.mu.Unlock()
	close(call.done)
	if call.err != nil {
		return "", call.err
	}
	return call.entry.token, nil
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

// tokenRequest builds the request for a token of scope from the realm of
// ch, with the credentials c: basic auth for a password, the OAuth2
// refresh-token grant (POST) for an identity token, nothing when anonymous.
func tokenRequest(ctx context.Context, ch challenge, scope string, c credentials) (*http.Request, error) {
	u, err := url.Parse(ch.realm)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("token realm %q is not an http(s) URL", ch.realm)
	}
	if c.identityToken != "" {
		form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {c.identityToken}, "client_id": {"shipwatch"}}
		if ch.service != "" {
			form.Set("service", ch.service)
		}
		form.Set("scope", scope)
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
	q.Set("scope", scope)
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
