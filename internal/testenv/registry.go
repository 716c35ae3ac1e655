// Package testenv is shipwatch's test environment: an in-process OCI registry
// on 127.0.0.1 that counts requests, tiny runnable images built from a static
// test program without any base image, and helpers that run containers,
// Compose projects and Swarm services on the local Docker engine and clean
// up after themselves.
package testenv

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Request is one request the registry served, as recorded for counting.
type Request struct {
	Method string
	Path   string
	Kind   string // ping, token, manifest, blob, tags, referrers, catalog, other
	Status int
}

// Registry is an in-process OCI distribution registry listening on 127.0.0.1.
// The Docker engine treats loopback registries as insecure-allowed, so it can
// pull from a plain-HTTP Registry.
type Registry struct {
	// Host is "127.0.0.1:port", the registry part of image references.
	Host string

	srv       *httptest.Server
	opts      registryOptions
	mu        sync.Mutex
	requests  []Request
	conns     atomic.Int64
	tokens    map[string]grant
	intercept func(w http.ResponseWriter, r *http.Request) bool
	mw        func(http.Handler) http.Handler
}

type registryOptions struct {
	user, pass  string
	tokenTTL    time.Duration
	latency     time.Duration
	referrers   bool
	tls         bool
	tagPageSize int
	firstScope  bool
	opaque      bool
	logf        func(format string, args ...any)
}

// grant is what one issued token allows: until when, and which
// repositories (from the scopes it was asked for).
type grant struct {
	expires time.Time
	repos   map[string]bool
	all     bool // every repository (AdminToken)
}

// RegistryOption configures NewRegistry.
type RegistryOption func(*registryOptions)

// WithTokenAuth makes the registry require a bearer token obtained from its
// /token endpoint with HTTP basic credentials user:pass, as Docker Hub does.
func WithTokenAuth(user, pass string) RegistryOption {
	return func(o *registryOptions) { o.user, o.pass = user, pass }
}

// WithTokenTTL sets how long issued tokens are valid (default 5 minutes).
func WithTokenTTL(d time.Duration) RegistryOption {
	return func(o *registryOptions) { o.tokenTTL = d }
}

// WithFirstScopeOnly makes the token endpoint grant only the first scope
// of a request that asks for several, as a registry that reads one scope
// parameter does. By default every requested repository scope is granted.
func WithFirstScopeOnly() RegistryOption {
	return func(o *registryOptions) { o.firstScope = true }
}

// WithOpaqueTokens makes the token endpoint issue random opaque tokens
// instead of JWTs that list their grants in an access claim.
func WithOpaqueTokens() RegistryOption {
	return func(o *registryOptions) { o.opaque = true }
}

// WithLatency delays every response by d, to emulate a remote registry.
func WithLatency(d time.Duration) RegistryOption {
	return func(o *registryOptions) { o.latency = d }
}

// WithReferrersAPI enables the OCI 1.1 referrers endpoint. Without it the
// registry answers 404 there, like the plain distribution registry.
func WithReferrersAPI() RegistryOption {
	return func(o *registryOptions) { o.referrers = true }
}

// WithTLS serves HTTPS with HTTP/2 using a self-signed certificate; use
// Registry.CertPool or Registry.Transport to trust it.
func WithTLS() RegistryOption {
	return func(o *registryOptions) { o.tls = true }
}

// WithTagPageSize makes tag listing return at most n tags per page with a
// Link header to the next page, as Docker Hub and GHCR do.
func WithTagPageSize(n int) RegistryOption {
	return func(o *registryOptions) { o.tagPageSize = n }
}

// WithLog sends the registry's request log to logf (default: discarded).
func WithLog(logf func(format string, args ...any)) RegistryOption {
	return func(o *registryOptions) { o.logf = logf }
}

// NewRegistry starts a registry that is closed when tb's test ends.
func NewRegistry(tb testing.TB, opts ...RegistryOption) *Registry {
	tb.Helper()
	r, err := StartRegistry(opts...)
	if err != nil {
		tb.Fatalf("start registry: %v", err)
	}
	tb.Cleanup(r.Close)
	return r
}

// StartRegistry starts a registry outside of a test (benchmarks, the
// quickstart). The caller must Close it.
func StartRegistry(opts ...RegistryOption) (*Registry, error) {
	o := registryOptions{tokenTTL: 5 * time.Minute}
	for _, opt := range opts {
		opt(&o)
	}
	r := &Registry{opts: o, tokens: map[string]grant{}}
	logger := log.New(io.Discard, "", 0)
	if o.logf != nil {
		logger = log.New(logWriter(o.logf), "registry: ", 0)
	}
	inner := registry.New(registry.Logger(logger), registry.WithReferrersSupport(o.referrers))
	r.srv = httptest.NewUnstartedServer(r.handler(inner))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r.srv.Listener.Close()
	r.srv.Listener = l
	r.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			r.conns.Add(1)
		}
	}
	r.srv.Config.ErrorLog = logger
	if o.tls {
		r.srv.EnableHTTP2 = true
		r.srv.StartTLS()
	} else {
		r.srv.Start()
	}
	r.Host = l.Addr().String()
	return r, nil
}

type logWriter func(format string, args ...any)

func (w logWriter) Write(p []byte) (int, error) {
	w("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Close stops the registry.
func (r *Registry) Close() { r.srv.Close() }

// URL is the registry's base URL (http:// or https://).
func (r *Registry) URL() string { return r.srv.URL }

// CertPool trusts the registry's certificate (nil without WithTLS).
func (r *Registry) CertPool() *x509.CertPool {
	if !r.opts.tls {
		return nil
	}
	return r.srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
}

// Transport returns an HTTP transport that trusts the registry.
func (r *Registry) Transport() *http.Transport {
	if r.opts.tls {
		return r.srv.Client().Transport.(*http.Transport).Clone()
	}
	return http.DefaultTransport.(*http.Transport).Clone()
}

// Ref returns the full reference for repoTag ("demo/app:1.0" or "demo/app@sha256:…").
func (r *Registry) Ref(repoTag string) string { return r.Host + "/" + repoTag }

// Intercept installs f in front of the registry: when f returns true it has
// answered the request itself (fault injection). Pass nil to remove it.
func (r *Registry) Intercept(f func(w http.ResponseWriter, req *http.Request) bool) {
	r.mu.Lock()
	r.intercept = f
	r.mu.Unlock()
}

// Use installs mw around the registry proper (token endpoint, auth, tag
// pages and the distribution API), after the request log and Intercept:
// unlike Intercept, a middleware can let a request through and change its
// answer on the way out (truncate it, reset the connection mid-body, act
// after it was served). The ResponseWriter it gets supports
// http.ResponseController (Flush, Hijack). Pass nil to remove it.
func (r *Registry) Use(mw func(http.Handler) http.Handler) {
	r.mu.Lock()
	r.mw = mw
	r.mu.Unlock()
}

// KindOf classifies a registry request path as Request.Kind does: ping,
// token, manifest, blob, tags, referrers, catalog or other.
func KindOf(path string) string { return kindOf(path) }

// Requests returns a copy of the requests served since the last Reset.
func (r *Registry) Requests() []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Request(nil), r.requests...)
}

// Count returns how many requests of the given method and kind were served
// since the last Reset; an empty method or kind matches any.
func (r *Registry) Count(method, kind string) int {
	n := 0
	for _, q := range r.Requests() {
		if (method == "" || q.Method == method) && (kind == "" || q.Kind == kind) {
			n++
		}
	}
	return n
}

// Conns returns the number of TCP connections accepted since the last Reset.
func (r *Registry) Conns() int64 { return r.conns.Load() }

// Reset clears the request log and the connection count.
func (r *Registry) Reset() {
	r.mu.Lock()
	r.requests = nil
	r.mu.Unlock()
	r.conns.Store(0)
}

// Auth returns the credentials for pushing to and pulling from the registry
// (anonymous when it has no auth).
func (r *Registry) Auth() authn.Authenticator {
	if r.opts.user == "" {
		return authn.Anonymous
	}
	return &authn.Basic{Username: r.opts.user, Password: r.opts.pass}
}

func (r *Registry) remoteOptions() []remote.Option {
	return []remote.Option{remote.WithAuth(r.Auth()), remote.WithTransport(r.Transport())}
}

func (r *Registry) parse(repoTag string) (name.Reference, error) {
	opts := []name.Option{}
	if !r.opts.tls {
		opts = append(opts, name.Insecure)
	}
	return name.ParseReference(r.Ref(repoTag), opts...)
}

// Push writes img as repoTag ("demo/app:1.0.0") and returns its digest.
func (r *Registry) Push(repoTag string, img v1.Image) (string, error) {
	ref, err := r.parse(repoTag)
	if err != nil {
		return "", err
	}
	if err := remote.Write(ref, img, r.remoteOptions()...); err != nil {
		return "", fmt.Errorf("push %s: %w", repoTag, err)
	}
	d, err := img.Digest()
	return d.String(), err
}

// MustPush is Push for tests.
func (r *Registry) MustPush(tb testing.TB, repoTag string, img v1.Image) string {
	tb.Helper()
	d, err := r.Push(repoTag, img)
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

// PushIndex writes idx (a multi-platform image) as repoTag and returns its digest.
func (r *Registry) PushIndex(repoTag string, idx v1.ImageIndex) (string, error) {
	ref, err := r.parse(repoTag)
	if err != nil {
		return "", err
	}
	if err := remote.WriteIndex(ref, idx, r.remoteOptions()...); err != nil {
		return "", fmt.Errorf("push index %s: %w", repoTag, err)
	}
	d, err := idx.Digest()
	return d.String(), err
}

// Delete removes the tag or digest reference repoRef from the registry.
func (r *Registry) Delete(repoRef string) error {
	ref, err := r.parse(repoRef)
	if err != nil {
		return err
	}
	return remote.Delete(ref, r.remoteOptions()...)
}

// handler wraps the ggcr registry with latency, faults, token auth,
// pagination and the request log.
func (r *Registry) handler(inner http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if r.opts.latency > 0 {
			time.Sleep(r.opts.latency)
		}
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		defer func() {
			r.mu.Lock()
			r.requests = append(r.requests, Request{Method: req.Method, Path: req.URL.Path, Kind: kindOf(req.URL.Path), Status: rec.status})
			r.mu.Unlock()
		}()
		r.mu.Lock()
		intercept, mw := r.intercept, r.mw
		r.mu.Unlock()
		if intercept != nil && intercept(rec, req) {
			return
		}
		if mw != nil {
			mw(r.serve(inner)).ServeHTTP(rec, req)
			return
		}
		r.serve(inner).ServeHTTP(rec, req)
	})
}

// serve is the registry proper: token endpoint, auth, tag pages, the
// distribution API.
func (r *Registry) serve(inner http.Handler) http.Handler {
	return http.HandlerFunc(func(rec http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/token" {
			r.serveToken(rec, req)
			return
		}
		if r.opts.user != "" && !r.authorized(req) {
			scheme := "http"
			if r.opts.tls {
				scheme = "https"
			}
			rec.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s://%s/token",service="testenv"`, scheme, req.Host))
			http.Error(rec, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
			return
		}
		if kindOf(req.URL.Path) == "tags" && r.opts.tagPageSize > 0 && req.Method == http.MethodGet {
			r.serveTagPage(rec, req, inner)
			return
		}
		inner.ServeHTTP(rec, req)
	})
}

// authorized reports whether req carries a live token that grants the
// repository its path names (any live token for paths without one).
func (r *Registry) authorized(req *http.Request) bool {
	tok, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	g, ok := r.tokens[tok]
	if !ok || !time.Now().Before(g.expires) {
		return false
	}
	repo := repoOf(req.URL.Path)
	return repo == "" || g.all || g.repos[repo]
}

// AdminToken issues a bearer token valid for every repository until the
// registry's token TTL runs out, for test set-up that writes to many
// repositories (the token endpoint grants only the scopes asked for).
func (r *Registry) AdminToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	tok := "admin-" + hex.EncodeToString(b)
	r.mu.Lock()
	r.tokens[tok] = grant{expires: time.Now().Add(r.opts.tokenTTL), all: true}
	r.mu.Unlock()
	return tok
}

// repoOf is the repository a distribution API path names ("" for the
// ping and the catalog).
func repoOf(path string) string {
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		return ""
	}
	for _, marker := range []string{"/manifests/", "/blobs/", "/tags/", "/referrers/"} {
		if i := strings.Index(rest, marker); i > 0 {
			return rest[:i]
		}
	}
	return ""
}

// serveToken issues a token for the repository scopes the request asks for
// (several scope parameters are allowed, as in the distribution token
// spec; only the first with WithFirstScopeOnly). The token is a JWT whose
// access claim lists the grants, as Docker Hub's and distribution's are,
// or opaque with WithOpaqueTokens; either way the registry looks it up.
func (r *Registry) serveToken(w http.ResponseWriter, req *http.Request) {
	user, pass, ok := req.BasicAuth()
	if r.opts.user != "" && (!ok || subtle.ConstantTimeCompare([]byte(user), []byte(r.opts.user)) != 1 ||
		subtle.ConstantTimeCompare([]byte(pass), []byte(r.opts.pass)) != 1) {
		http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}`, http.StatusUnauthorized)
		return
	}
	type access struct {
		Type    string   `json:"type"`
		Name    string   `json:"name"`
		Actions []string `json:"actions"`
	}
	g := grant{expires: time.Now().Add(r.opts.tokenTTL), repos: map[string]bool{}}
	grants := []access{}
	for _, scope := range req.URL.Query()["scope"] {
		typ, rest, ok1 := strings.Cut(scope, ":")
		i := strings.LastIndex(rest, ":")
		if !ok1 || typ != "repository" || i <= 0 {
			continue
		}
		g.repos[rest[:i]] = true
		grants = append(grants, access{Type: typ, Name: rest[:i], Actions: strings.Split(rest[i+1:], ",")})
		if r.opts.firstScope {
			break
		}
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	tok := hex.EncodeToString(b)
	if !r.opts.opaque {
		enc := base64.RawURLEncoding
		header, _ := json.Marshal(map[string]string{"typ": "JWT", "alg": "ES256", "kid": "testenv"})
		claims, _ := json.Marshal(map[string]any{"iss": "testenv", "aud": "testenv", "jti": tok,
			"exp": g.expires.Unix(), "iat": time.Now().Unix(), "access": grants})
		sig := make([]byte, 64)
		_, _ = rand.Read(sig)
		tok = enc.EncodeToString(header) + "." + enc.EncodeToString(claims) + "." + enc.EncodeToString(sig)
	}
	r.mu.Lock()
	r.tokens[tok] = g
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"token":      tok,
		"expires_in": int(r.opts.tokenTTL / time.Second),
		"issued_at":  time.Now().UTC().Format(time.RFC3339),
	})
}

// serveTagPage paginates the tag list itself: the ggcr registry neither sends
// Link headers nor stops when "last" is the final tag.
func (r *Registry) serveTagPage(w http.ResponseWriter, req *http.Request, inner http.Handler) {
	full := req.Clone(req.Context())
	full.URL = &url.URL{Path: req.URL.Path}
	full.RequestURI = full.URL.RequestURI()
	buf := httptest.NewRecorder()
	inner.ServeHTTP(buf, full)
	if buf.Code != http.StatusOK {
		for k, v := range buf.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(buf.Code)
		_, _ = w.Write(buf.Body.Bytes())
		return
	}
	var list struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	if err := json.Unmarshal(buf.Body.Bytes(), &list); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	sort.Strings(list.Tags)
	q := req.URL.Query()
	if last := q.Get("last"); last != "" {
		i := sort.SearchStrings(list.Tags, last)
		for i < len(list.Tags) && list.Tags[i] <= last {
			i++
		}
		list.Tags = list.Tags[i:]
	}
	n := r.opts.tagPageSize
	if v, err := strconv.Atoi(q.Get("n")); err == nil && v > 0 && v < n {
		n = v
	}
	if len(list.Tags) > n {
		list.Tags = list.Tags[:n]
		next := url.Values{"n": {strconv.Itoa(n)}, "last": {list.Tags[n-1]}}
		w.Header().Set("Link", fmt.Sprintf(`<%s?%s>; rel="next"`, req.URL.Path, next.Encode()))
	}
	body, _ := json.Marshal(list)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = io.Copy(w, bytes.NewReader(body))
}

func kindOf(path string) string {
	switch {
	case path == "/v2/" || path == "/v2":
		return "ping"
	case path == "/token":
		return "token"
	case strings.Contains(path, "/manifests/"):
		return "manifest"
	case strings.Contains(path, "/blobs/"):
		return "blob"
	case strings.HasSuffix(path, "/tags/list"):
		return "tags"
	case strings.Contains(path, "/referrers/"):
		return "referrers"
	case strings.HasSuffix(path, "/_catalog"):
		return "catalog"
	}
	return "other"
}

type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wrote {
		s.status, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(p []byte) (int, error) {
	s.wrote = true
	return s.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection (Hijack, for
// fault injection).
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Flush lets streaming handlers flush through the recorder.
func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
