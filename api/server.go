package api

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/shipwatch/shipwatch/metrics"
)

// Server serves the API. Build it with New; serve it with Run, or mount
// Handler in a server of your own.
type Server struct {
	backend   Backend
	opts      Options
	tls       *tls.Config
	log       zerolog.Logger
	metrics   *metrics.Metrics
	limiter   *limiter
	coalescer *coalescer
	redact    *redactor
	routes    map[string]route
	handler   http.Handler
}

// route is one path: whether it needs the API token and its handlers by method.
type route struct {
	auth    authKind
	methods map[string]http.HandlerFunc
}

type authKind int

const (
	authNone    authKind = iota // /healthz
	authToken                   // /v1/*, /metrics
	authWebhook                 // /v1/webhooks/*: each source authenticates itself
)

// New builds a server for b. It fails when the options are unsafe (no token
// on a non-loopback address) or the TLS files cannot be loaded.
func New(b Backend, opts Options) (*Server, error) {
	if b == nil {
		return nil, errors.New("api: no backend")
	}
	opts = opts.withDefaults()
	tlsConfig, err := opts.validate()
	if err != nil {
		return nil, err
	}
	s := &Server{
		backend: b,
		opts:    opts,
		tls:     tlsConfig,
		log:     opts.Logger,
		metrics: opts.Metrics,
		limiter: newLimiter(opts.AuthFailures, opts.AuthFailureRefill, time.Now),
		redact:  newRedactor(opts.Token, opts.WebhookSecret),
	}
	s.coalescer = newCoalescer(opts.WebhookDelay, opts.WebhookMinInterval, maxPendingRepositories, s.fire)
	s.routes = s.buildRoutes()
	s.handler = http.HandlerFunc(s.serveHTTP)
	return s, nil
}

func (s *Server) buildRoutes() map[string]route {
	r := map[string]route{
		"/healthz":       {authNone, map[string]http.HandlerFunc{http.MethodGet: s.healthz}},
		"/metrics":       {authToken, map[string]http.HandlerFunc{http.MethodGet: s.metricsHandler()}},
		"/v1/targets":    {authToken, map[string]http.HandlerFunc{http.MethodGet: s.targets}},
		"/v1/history":    {authToken, map[string]http.HandlerFunc{http.MethodGet: s.history}},
		"/v1/check":      {authToken, map[string]http.HandlerFunc{http.MethodPost: s.check}},
		"/v1/rollouts":   {authToken, map[string]http.HandlerFunc{http.MethodPost: s.rollout}},
		"/v1/rollbacks":  {authToken, map[string]http.HandlerFunc{http.MethodPost: s.rollback}},
		"/v1/approvals":  {authToken, map[string]http.HandlerFunc{http.MethodGet: s.approvals, http.MethodPost: s.approve}},
		"/v1/quarantine": {authToken, map[string]http.HandlerFunc{http.MethodGet: s.quarantine, http.MethodDelete: s.clearQuarantine}},
	}
	for _, src := range webhookSources {
		r["/v1/webhooks/"+src.name] = route{authWebhook, map[string]http.HandlerFunc{http.MethodPost: s.webhook(src)}}
	}
	return r
}

// Handler is the API as an http.Handler, for tests and embedding.
func (s *Server) Handler() http.Handler { return s.handler }

// Run listens on Options.Listen and serves until ctx ends, then shuts down
// gracefully within Options.ShutdownTimeout.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.opts.Listen)
	if err != nil {
		return fmt.Errorf("api: listen on %s: %w (is another process using the port?)", s.opts.Listen, err)
	}
	return s.Serve(ctx, ln)
}

// Serve is Run on a listener of the caller's (tests listen on port 0).
// It closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.opts.Token == "" {
		s.log.Warn().Str("listen", ln.Addr().String()).Msg("api: no token set: any local process can use the API")
	}
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		// No WriteTimeout: a manual rollout answers when it has finished,
		// which takes as long as its health gate.
		ErrorLog:    log.New(zerologWriter{s.log}, "", 0),
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	if s.tls != nil {
		ln = tls.NewListener(ln, s.tls.Clone())
	}
	s.log.Info().Str("listen", ln.Addr().String()).Bool("tls", s.tls != nil).Msg("api: serving")
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	select {
	case err := <-errc:
		s.coalescer.stop()
		return fmt.Errorf("api: serve: %w", err)
	case <-ctx.Done():
	}
	s.coalescer.stop()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		_ = srv.Close()
		err = fmt.Errorf("api: requests still running after %s were cut off: %w", s.opts.ShutdownTimeout, err)
	}
	<-errc
	return err
}

// Close stops pending webhook hints from firing; for users of Handler
// without Run (Run does it when its ctx ends).
func (s *Server) Close() error {
	s.coalescer.stop()
	return nil
}

// serveHTTP routes, checks the method and authentication, and records the
// request. Every answer, errors included, is JSON (except /metrics).
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rw := &statusWriter{ResponseWriter: w, redact: s.redact}
	w = rw
	name := "other"
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			// A bug in a handler or the backend answers a JSON 500 and
			// is logged; it does not take the agent down.
			s.log.Error().Str("route", name).Str("panic", s.redact.String(fmt.Sprint(p))).Msg("api: handler panicked")
			if rw.code == 0 {
				writeError(rw, http.StatusInternalServerError, "internal error; see the agent's log")
			}
		}
		s.metrics.APIRequest(name, rw.status())
		// The path of an unknown route is not logged: it is input.
		s.log.Debug().Str("method", r.Method).Str("route", name).Int("status", rw.status()).
			Dur("took", time.Since(start)).Str("client", clientIP(r)).Msg("api: request")
	}()
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")

	rt, ok := s.routes[r.URL.Path]
	if !ok {
		writeError(w, http.StatusNotFound, "no such endpoint; see docs/api.md")
		return
	}
	name = r.URL.Path
	h, ok := rt.methods[r.Method]
	if !ok {
		allowed := make([]string, 0, len(rt.methods))
		for m := range rt.methods {
			allowed = append(allowed, m)
		}
		sort.Strings(allowed)
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s is not allowed here; use %s", truncate(r.Method, 16), strings.Join(allowed, " or ")))
		return
	}
	switch rt.auth {
	case authToken:
		if !s.authenticate(w, r) {
			return
		}
	case authWebhook:
		// each receiver authenticates after reading what it needs
	}
	h(w, r)
}

// metricsHandler serves the Prometheus registry.
func (s *Server) metricsHandler() http.HandlerFunc {
	if s.opts.Registry == nil {
		return func(w http.ResponseWriter, _ *http.Request) {
			writeError(w, http.StatusNotFound, "metrics are not enabled")
		}
	}
	h := promhttp.HandlerFor(s.opts.Registry, promhttp.HandlerOpts{
		ErrorLog:      promLogger{s.log},
		ErrorHandling: promhttp.ContinueOnError,
	})
	return h.ServeHTTP
}

// statusWriter remembers the status code written.
type statusWriter struct {
	http.ResponseWriter
	code   int
	redact *redactor
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// zerologWriter turns net/http's server log (TLS handshake errors and the
// like; never request URLs) into debug lines.
type zerologWriter struct{ log zerolog.Logger }

func (z zerologWriter) Write(p []byte) (int, error) {
	z.log.Debug().Str("error", strings.TrimSpace(string(p))).Msg("api: http server")
	return len(p), nil
}

// promLogger adapts zerolog to promhttp's logger.
type promLogger struct{ log zerolog.Logger }

func (p promLogger) Println(v ...any) {
	p.log.Warn().Str("error", strings.TrimSpace(fmt.Sprintln(v...))).Msg("api: metrics")
}
