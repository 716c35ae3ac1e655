package watcher

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/shipwatch/shipwatch/imageref"
)

// Registry holds the settings of one registry, from the config.
type Registry struct {
	// Host is the registry as written in image references: "ghcr.io",
	// "docker.io" (also matches index.docker.io), "127.0.0.1:5000".
	Host string
	// Username and Password are basic credentials, presented to the
	// registry's token endpoint (or to the registry itself when it asks for
	// basic auth). A personal access token (GHCR, Docker Hub) goes in
	// Password. Secrets: never logged, never in errors.
	Username, Password string
	// Token is a registry bearer token sent as is on every request (the
	// "registrytoken" of a Docker config.json); it excludes Username and
	// Password. Secret.
	Token string
	// Mirrors are pull-through mirrors ("mirror.example.com",
	// "http://127.0.0.1:5001") tried in order before Host for reads; the
	// first that answers wins, and Host is the fallback.
	Mirrors []string
	// Insecure allows plain HTTP (after HTTPS failed). Loopback registries
	// always may use plain HTTP, as Docker allows.
	Insecure bool
	// CAFile is a PEM file of extra certificate authorities to trust.
	CAFile string
	// Concurrency bounds the requests in flight to this registry (0: the
	// watcher's bound).
	Concurrency int
	// RateLimit bounds the requests per second to this registry (0: none).
	RateLimit float64
}

// Options configures New. The zero value works: Docker config.json
// credentials, 16 requests in flight, 30 s per request, this machine's
// platform.
type Options struct {
	Registries []Registry
	// Keychain finds credentials for registries without explicit ones
	// (default: authn.DefaultKeychain, the Docker config.json with its
	// credential helpers).
	Keychain authn.Keychain
	// Concurrency bounds the requests in flight over all registries
	// (default DefaultConcurrency).
	Concurrency int
	// Timeout bounds one request attempt, body included (default DefaultTimeout).
	Timeout time.Duration
	// Transport is the base HTTP transport; an *http.Transport is cloned
	// per registry (one connection pool each). Tests inject a transport
	// that trusts their registry. Default: a clone of http.DefaultTransport
	// (proxy from the environment, HTTP/2 over TLS).
	Transport http.RoundTripper
	// Logger receives debug lines about retries and mirror fallbacks
	// (default: zerolog.Nop()).
	Logger zerolog.Logger
	// Platform is "os/arch[/variant]" of the images that run here
	// (default: linux/<GOARCH of this binary>). A candidate index must
	// contain it.
	Platform string
}

// Defaults of Options.
const (
	DefaultConcurrency = 16
	DefaultTimeout     = 30 * time.Second
)

// manifestCacheSize bounds the validated manifests kept by digest.
const manifestCacheSize = 8192

// Watcher checks images against their registries. It is safe for
// concurrent use and meant to live as long as the process: it keeps one
// HTTP client per registry, the pings, the tokens and the validated
// manifests across checks.
type Watcher struct {
	keychain  authn.Keychain
	transport http.RoundTripper
	timeout   time.Duration
	platform  platform
	log       zerolog.Logger
	global    chan struct{}
	regs      map[string]Registry     // by canonical host
	mirrors   map[string][]mirrorSpec // by canonical host
	cas       map[string]*x509.CertPool
	stats     counters
	manifests *manifestCache
	selected  selections
	retry     retryPolicy
	now       func() time.Time

	mu        sync.Mutex
	endpoints map[string]*endpoint
}

type mirrorSpec struct {
	scheme string // "https", "http" or "" (decided as for a registry)
	host   string
}

// New validates opts and returns a Watcher. It reads CAFile; it sends no
// request (pings happen on first use).
func New(opts Options) (*Watcher, error) {
	var errs []error
	if opts.Concurrency < 0 {
		errs = append(errs, fmt.Errorf("concurrency: %d is negative; use 0 for the default (%d) or a positive number", opts.Concurrency, DefaultConcurrency))
	}
	if opts.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout: %s is negative; use 0 for the default (%s)", opts.Timeout, DefaultTimeout))
	}
	conc := opts.Concurrency
	if conc <= 0 {
		conc = DefaultConcurrency
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	plat := "linux/" + runtime.GOARCH
	if opts.Platform != "" {
		plat = opts.Platform
	}
	p, err := parsePlatform(plat)
	if err != nil {
		errs = append(errs, err)
	}
	w := &Watcher{
		keychain:  opts.Keychain,
		transport: opts.Transport,
		timeout:   timeout,
		platform:  p,
		log:       opts.Logger,
		global:    make(chan struct{}, conc),
		regs:      map[string]Registry{},
		mirrors:   map[string][]mirrorSpec{},
		cas:       map[string]*x509.CertPool{},
		manifests: newManifestCache(manifestCacheSize),
		retry:     defaultRetry,
		now:       time.Now,
		endpoints: map[string]*endpoint{},
	}
	if w.keychain == nil {
		w.keychain = authn.DefaultKeychain
	}
	for i, r := range opts.Registries {
		field := fmt.Sprintf("registries[%d]", i)
		if err := validHost(r.Host); err != nil {
			errs = append(errs, fmt.Errorf("%s.host: %w", field, err))
			continue
		}
		host := canonicalHost(r.Host)
		if _, dup := w.regs[host]; dup {
			errs = append(errs, fmt.Errorf("%s.host: %q is configured twice; merge the entries", field, r.Host))
			continue
		}
		if r.Token != "" && (r.Username != "" || r.Password != "") {
			errs = append(errs, fmt.Errorf("%s: set either token or username/password for %s, not both", field, r.Host))
		}
		if r.Password != "" && r.Username == "" {
			errs = append(errs, fmt.Errorf("%s.username: missing for %s; a password needs a username (any non-empty name for GHCR tokens)", field, r.Host))
		}
		if r.Concurrency < 0 {
			errs = append(errs, fmt.Errorf("%s.concurrency: %d is negative; use 0 for the global bound or a positive number", field, r.Concurrency))
		}
		if r.RateLimit < 0 || math.IsNaN(r.RateLimit) || math.IsInf(r.RateLimit, 0) {
			errs = append(errs, fmt.Errorf("%s.rateLimit: %v is not allowed; use 0 for unlimited or requests per second > 0", field, r.RateLimit))
		}
		for j, m := range r.Mirrors {
			ms, err := parseMirror(m)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s.mirrors[%d]: %w", field, j, err))
				continue
			}
			w.mirrors[host] = append(w.mirrors[host], ms)
		}
		if r.CAFile != "" {
			pool, err := CAPool(r.CAFile)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s.caFile: %w", field, err))
			}
			w.cas[host] = pool
		}
		w.regs[host] = r
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return w, nil
}

// validHost accepts "host", "host:port" and "[v6]:port", without scheme,
// user or path.
func validHost(h string) error {
	if h == "" {
		return errors.New("empty; use the registry part of an image reference, such as ghcr.io or 127.0.0.1:5000")
	}
	u, err := url.Parse("//" + h)
	if err != nil || u.Host != h || u.Path != "" || u.User != nil || strings.ContainsAny(h, "/@ ") {
		return fmt.Errorf("%q is not a registry host; use the registry part of an image reference, such as ghcr.io or 127.0.0.1:5000 (no scheme, user or path)", redactUserinfo(h))
	}
	return nil
}

// redactUserinfo hides a "user:password@" that someone wrote into a host.
func redactUserinfo(s string) string {
	if i := strings.LastIndexByte(s, '@'); i >= 0 {
		scheme := ""
		if j := strings.Index(s, "://"); j >= 0 && j < i {
			scheme = s[:j+3]
		}
		return scheme + "REDACTED@" + s[i+1:]
	}
	return s
}

func parseMirror(m string) (mirrorSpec, error) {
	var ms mirrorSpec
	rest := m
	if s, r, ok := strings.Cut(m, "://"); ok {
		if s != "https" && s != "http" {
			return ms, fmt.Errorf("%q: scheme must be https or http", redactUserinfo(m))
		}
		ms.scheme, rest = s, strings.TrimSuffix(r, "/")
	}
	if err := validHost(rest); err != nil {
		return ms, fmt.Errorf("mirror %w", err)
	}
	ms.host = rest
	return ms, nil
}

// CAPool returns the system's roots plus the PEM certificates of every
// file in paths: the trust of a registry that has its own CA (ca_file).
func CAPool(paths ...string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	for _, path := range paths {
		pem, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read CA file: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate; give the CA certificate in PEM form", path)
		}
	}
	return pool, nil
}

// canonicalHost maps Docker Hub's API host names to "docker.io", the
// domain of its image references.
func canonicalHost(h string) string {
	switch h {
	case "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com":
		return "docker.io"
	}
	return h
}

// origin is the endpoint of the registry of domain.
func (w *Watcher) origin(domain string) *endpoint {
	host := canonicalHost(domain)
	return w.endpoint("origin "+host, host, "")
}

// readEndpoints lists where reads for domain go: its mirrors in order,
// then the registry itself.
func (w *Watcher) readEndpoints(domain string) []*endpoint {
	host := canonicalHost(domain)
	var eps []*endpoint
	for _, m := range w.mirrors[host] {
		eps = append(eps, w.endpoint("mirror "+m.scheme+" "+m.host, canonicalHost(m.host), m.scheme))
	}
	return append(eps, w.origin(domain))
}

// endpoint returns (creating once) the endpoint for key, with the
// settings configured for host.
func (w *Watcher) endpoint(key, host, scheme string) *endpoint {
	w.mu.Lock()
	defer w.mu.Unlock()
	if e, ok := w.endpoints[key]; ok {
		return e
	}
	reg := w.regs[host]
	apiHost := host
	if host == "docker.io" {
		apiHost = "index.docker.io"
	}
	insecure := reg.Insecure || isLoopbackHost(host)
	schemes := []string{"https"}
	switch {
	case scheme != "":
		schemes = []string{scheme}
		insecure = insecure || scheme == "http"
	case insecure:
		schemes = []string{"https", "http"}
	}
	conc := reg.Concurrency
	if conc <= 0 || conc > cap(w.global) {
		conc = cap(w.global)
	}
	var explicit *credentials
	if reg.Username != "" || reg.Password != "" || reg.Token != "" {
		explicit = &credentials{username: reg.Username, password: reg.Password, registryToken: reg.Token}
	}
	e := &endpoint{
		host:     host,
		apiHost:  apiHost,
		schemes:  schemes,
		insecure: insecure,
		client:   &http.Client{Transport: w.newTransport(host, conc)},
		auth:     newAuth(explicit, w.keychain, apiHost, w.now),
		sem:      make(chan struct{}, conc),
		global:   w.global,
		timeout:  w.timeout,
		retry:    w.retry,
		stats:    &w.stats,
		log:      w.log,
	}
	if reg.RateLimit > 0 {
		e.limiter = rate.NewLimiter(rate.Limit(reg.RateLimit), 1)
	}
	w.endpoints[key] = e
	return e
}

// IdleConnTimeout is how long a registry connection is kept between
// requests: longer than the agent's default schedule (@every 5m), so that
// each pass reuses the previous pass's connection instead of paying for a
// new TLS and HTTP/2 connection (with Go's 90 s default, about 0.1 CPU-s a
// pass on the benchmark machine; docs/benchmarks/agent.md). An idle
// connection costs the agent nothing: the kernel's TCP keep-alive probes
// (every 30 s) keep NAT state fresh and notice a peer that went away, and a
// connection the registry closed is simply dialled again.
const IdleConnTimeout = 15 * time.Minute

// newTransport gives each registry its own connection pool: a clone of
// the base *http.Transport (keep-alive, HTTP/2 over TLS) sized for its
// concurrency, with its extra CA.
func (w *Watcher) newTransport(host string, conc int) http.RoundTripper {
	base := w.transport
	if base == nil {
		base = http.DefaultTransport
	}
	bt, ok := base.(*http.Transport)
	if !ok {
		return base
	}
	t := bt.Clone()
	t.ForceAttemptHTTP2 = true
	t.MaxIdleConnsPerHost = max(conc, 2)
	t.IdleConnTimeout = max(t.IdleConnTimeout, IdleConnTimeout)
	if t.TLSClientConfig == nil {
		t.TLSClientConfig = &tls.Config{}
	}
	if t.TLSClientConfig.MinVersion < tls.VersionTLS12 {
		t.TLSClientConfig.MinVersion = tls.VersionTLS12
	}
	if pool := w.cas[host]; pool != nil {
		t.TLSClientConfig.RootCAs = pool
	}
	return t
}

// Resolve returns the digest ref points at now, with one manifest HEAD
// (mirrors first). ref needs a tag or a digest; with a digest, Resolve
// checks that the registry has it.
func (w *Watcher) Resolve(ctx context.Context, ref imageref.Ref) (string, error) {
	r := ref.Tag
	if ref.Digest != "" {
		r = ref.Digest
	}
	if r == "" {
		return "", fmt.Errorf("resolve %s: the reference has neither tag nor digest", ref)
	}
	h, err := w.head(ctx, ref, r)
	if err != nil {
		return "", err
	}
	if ref.Digest != "" && h.digest != ref.Digest {
		return "", &Error{Registry: ref.Domain, Subject: ref.String(), Kind: ErrInvalidResponse,
			Detail: "the registry answered with digest " + shortDigest(h.digest), Hint: hintFor(ErrInvalidResponse, ref.Domain, ref.Path)}
	}
	return h.digest, nil
}

// head resolves r (tag or digest) in ref's repository, mirrors first.
func (w *Watcher) head(ctx context.Context, ref imageref.Ref, r string) (manifestHead, error) {
	subject := ref.Repo() + ":" + r
	if strings.Contains(r, ":") {
		subject = ref.Repo() + "@" + r
	}
	h, err := readThrough(ctx, w, ref.Domain, func(e *endpoint) (manifestHead, error) { return e.head(ctx, ref.Path, r, subject) })
	var re *Error
	if errors.As(err, &re) && re.Kind == ErrNotFound {
		if strings.Contains(r, ":") {
			re.Hint = fmt.Sprintf("manifest %s is not in %s; was it deleted?", shortDigest(r), ref.Repo())
		} else {
			re.Hint = fmt.Sprintf("tag %s not found in %s — was it deleted?", r, ref.Repo())
		}
	}
	return h, err
}

// manifest returns the validated manifest d of ref's repository, from the
// cache or with one GET.
func (w *Watcher) manifest(ctx context.Context, ref imageref.Ref, d string) (manifestInfo, error) {
	if m, ok := w.manifests.get(d); ok {
		w.stats.cacheHits.Add(1)
		return m, nil
	}
	m, err := readThrough(ctx, w, ref.Domain, func(e *endpoint) (manifestInfo, error) {
		return e.fetch(ctx, ref.Path, d, d, ref.Repo()+"@"+d)
	})
	if err != nil {
		return manifestInfo{}, err
	}
	w.manifests.put(m)
	return m, nil
}

// tags lists the tags of ref's repository, mirrors first. A mirror's list
// is decoded at once, so that a mirror serving a broken list is passed
// over for the next endpoint like a mirror that fails to answer.
func (w *Watcher) tags(ctx context.Context, ref imageref.Ref) (*tagList, error) {
	eps := w.readEndpoints(ref.Domain)
	origin := eps[len(eps)-1]
	return readThrough(ctx, w, ref.Domain, func(e *endpoint) (*tagList, error) {
		l, err := e.listTags(ctx, ref.Path)
		if err == nil && e != origin {
			if _, err := l.decode(); err != nil {
				return nil, err
			}
		}
		return l, err
	})
}

// readThrough runs op on the mirrors of domain in order and then on the
// registry, returning the first success; the registry's error wins.
func readThrough[T any](ctx context.Context, w *Watcher, domain string, op func(*endpoint) (T, error)) (T, error) {
	eps := w.readEndpoints(domain)
	for _, e := range eps[:len(eps)-1] {
		v, err := op(e)
		if err == nil {
			return v, nil
		}
		if ctx.Err() != nil {
			return v, err
		}
		w.log.Debug().Str("registry", domain).Str("mirror", e.host).Str("error", oneLine(err.Error())).Msg("mirror failed, trying the next")
	}
	return op(eps[len(eps)-1])
}
