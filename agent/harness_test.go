package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"

	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"github.com/rs/zerolog"

	"github.com/shipwatch/shipwatch/api"
	"github.com/shipwatch/shipwatch/config"
	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/internal/testenv"
	"github.com/shipwatch/shipwatch/metrics"
	"github.com/shipwatch/shipwatch/notify"
	"github.com/shipwatch/shipwatch/pass/parts"
	"github.com/shipwatch/shipwatch/state"
	"github.com/shipwatch/shipwatch/verify/sigtest"
)

const (
	apiToken      = "test-api-token-0123456789"
	webhookSecret = "test-webhook-secret-0123456789"
)

// harness runs a real agent in-process against the real engine: a loopback
// registry, a Compose project, the agent's API on 127.0.0.1 and a webhook
// receiver that collects its notifications.
type harness struct {
	t      *testing.T
	cli    *client.Client
	reg    *testenv.Registry
	key    *sigtest.Key
	dir    string
	proj   *testenv.ComposeProject
	store  *state.Store
	agent  *Agent
	apiURL string
	logs   *bytes.Buffer

	mu       sync.Mutex
	events   []notify.Event
	firstRun time.Time // when the first rollout step ended
}

func newHarness(t *testing.T, schedule string) *harness {
	t.Helper()
	h := &harness{t: t, cli: testenv.Engine(t), reg: testenv.NewRegistry(t), key: sigtest.MustKey(t, ""), dir: t.TempDir(), logs: &bytes.Buffer{}}
	testenv.RemoveImagesOf(t, h.cli, h.reg.Host)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev notify.Event
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&ev); err == nil {
			h.mu.Lock()
			h.events = append(h.events, ev)
			h.mu.Unlock()
		}
	}))
	t.Cleanup(hook.Close)
	keyPath, err := h.key.WritePublicKey(h.dir, "release.pub")
	if err != nil {
		t.Fatal(err)
	}
	cfgYAML := fmt.Sprintf(`
schedule: %q
state: {path: %s}
rollout: {health_timeout: 20s}
notify:
  webhooks: [{url: %s}]
verify:
  authorities:
    release: {key_file: %s}
  policies:
    - name: test
      images: ["%s/**"]
      signed_by: [release]
`, schedule, filepath.Join(h.dir, "state.db"), hook.URL, keyPath, h.reg.Host)
	cfg, err := config.Parse([]byte(cfgYAML), "agent-test.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	h.startAgent(cfg)
	return h
}

// push builds, pushes and (when signed) signs one version; it returns the digest.
func (h *harness) push(repoTag string, app testenv.App, signed bool) string {
	h.t.Helper()
	d := h.reg.MustPush(h.t, repoTag, app.MustImage(h.t))
	if signed {
		repo, _, _ := strings.Cut(repoTag, ":")
		sigtest.MustSign(h.t, h.reg, h.reg.Ref(repo+"@"+d), h.key, sigtest.Bundle)
	}
	return d
}

// compose starts a Compose project whose service web runs ref, opted in.
func (h *harness) compose(ref string, labels string) {
	h.t.Helper()
	h.proj = testenv.NewComposeProject(h.t, map[string]string{"compose.yaml": `
services:
  web:
    image: ` + ref + `
    labels: {shipwatch.enable: "true"` + labels + `}
`})
	h.proj.MustUp(h.t)
}

func (h *harness) target() string { return "compose/" + h.proj.Name + "/web" }

func (h *harness) startAgent(cfg *config.Config) {
	t := h.t
	ctx, cancel := context.WithCancel(context.Background())
	log := zerolog.New(&lockedWriter{w: h.logs}).Level(zerolog.DebugLevel).With().Timestamp().Logger()
	store, err := state.Open(cfg.State.Path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	deps, closeDeps, err := parts.Build(ctx, cfg, log, parts.Options{Deployers: true})
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	deps.Metrics = m
	deps.Progress = func(_ deployer.Target, _ deployer.Step) {
		h.mu.Lock()
		if h.firstRun.IsZero() {
			h.firstRun = time.Now()
		}
		h.mu.Unlock()
	}
	n, err := notify.New(notify.Options{Webhooks: []notify.Webhook{{URL: cfg.Notify.Webhooks[0].URL.Value()}}, Logger: log, Dedup: store.FirstNotice, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	deps.Notifier = n
	a, err := New(Options{Config: cfg, Deps: deps, Store: store, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := api.New(a, api.Options{Token: apiToken, WebhookSecret: webhookSecret, Logger: log, Metrics: m, Registry: m.Registry()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.apiURL = "http://" + ln.Addr().String()
	h.store, h.agent = store, a
	done := make(chan struct{}, 2)
	go func() { _ = srv.Serve(ctx, ln); done <- struct{}{} }()
	go func() {
		if err := a.Run(ctx); err != nil {
			t.Errorf("agent: %v", err)
		}
		done <- struct{}{}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		<-done
		_ = n.Close(context.Background())
		closeDeps()
		store.Close()
		if t.Failed() {
			t.Logf("agent log:\n%s", h.logs.String())
		}
	})
}

// waitHistory waits until the target's history has an entry with outcome
// for digest and returns it.
func (h *harness) waitHistory(outcome, digest string, timeout time.Duration) state.Entry {
	h.t.Helper()
	var found state.Entry
	testenv.Eventually(h.t, timeout, 200*time.Millisecond, func() (bool, string) {
		hist, err := h.store.History(h.target(), 0)
		if err != nil {
			return false, err.Error()
		}
		for _, e := range hist {
			if e.Outcome == outcome && strings.HasSuffix(e.To, "@"+digest) {
				found = e
				return true, ""
			}
		}
		return false, fmt.Sprintf("no %s entry for %s in %d entries", outcome, digest, len(hist))
	})
	return found
}

// running returns the digest the web container runs and how many containers the service has.
func (h *harness) running() (string, int) {
	h.t.Helper()
	ctx := context.Background()
	list, err := h.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).
		Add("label", "com.docker.compose.project="+h.proj.Name).Add("label", "com.docker.compose.service=web")})
	if err != nil || len(list.Items) == 0 {
		h.t.Fatalf("containers of web: %v (%d)", err, len(list.Items))
	}
	img, err := h.cli.ImageInspect(ctx, list.Items[0].ImageID)
	if err != nil {
		h.t.Fatal(err)
	}
	for _, rd := range img.RepoDigests {
		if _, d, ok := strings.Cut(rd, "@"); ok && strings.HasPrefix(rd, h.reg.Host) {
			return d, len(list.Items)
		}
	}
	return "", len(list.Items)
}

func (h *harness) eventKinds() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, e := range h.events {
		if h.proj != nil && e.Target == h.target() { // the engine is shared with other tests
			out = append(out, e.Kind)
		}
	}
	return out
}

func (h *harness) request(method, path, token string, body any) (int, []byte) {
	h.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, h.apiURL+path, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
