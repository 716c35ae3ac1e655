package agentbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Options configure a Bench.
type Options struct {
	Fixture FixtureOptions
	// Binary is the shipwatch binary to measure (built from this checkout
	// with the Dockerfile's flags when empty).
	Binary string
	// Progress receives one line per step (nil: discarded).
	Progress io.Writer
	// KeepLogs keeps the agents' logs and configs in LogDir (else they go
	// to the fixture's directory, removed at Close).
	LogDir string
}

// Bench is the benchmark's world: the registry fixture, the fake engine
// serving its services on a unix socket, and the binary to run.
type Bench struct {
	Fixture *Fixture
	Engine  *Engine
	Binary  string
	// Socket is the fake engine's socket (DOCKER_HOST=unix://Socket).
	Socket string

	logDir   string
	progress io.Writer
	runs     int
}

// New builds the fixture, starts the fake engine and builds the binary.
func New(ctx context.Context, opts Options) (_ *Bench, err error) {
	b := &Bench{Binary: opts.Binary, progress: opts.Progress}
	if b.progress == nil {
		b.progress = io.Discard
	}
	b.logf("building the registry fixture (%d digest-followed and %d semver-followed images)", max(opts.Fixture.DigestImages, 0), max(opts.Fixture.SemverImages, 0))
	if b.Fixture, err = NewFixture(ctx, opts.Fixture); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			b.Close()
		}
	}()
	b.logf("fixture ready in %s: %d services on registry %s", b.Fixture.Setup.Round(time.Millisecond), len(b.Fixture.Services), b.Fixture.Registry.Host)
	b.logDir = opts.LogDir
	if b.logDir == "" {
		b.logDir = b.Fixture.Dir
	} else if err := os.MkdirAll(b.logDir, 0o755); err != nil {
		return nil, err
	}
	b.Engine = NewEngine(b.Fixture.Services)
	b.Socket = filepath.Join(b.Fixture.Dir, "engine.sock")
	if err := b.Engine.Serve(b.Socket); err != nil {
		return nil, err
	}
	if b.Binary == "" {
		b.logf("building shipwatch with the Dockerfile's flags")
		if b.Binary, err = BuildAgent(ctx, b.Fixture.Dir); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// Close stops the engine and the registry and removes the fixture's files.
func (b *Bench) Close() {
	if b.Engine != nil {
		_ = b.Engine.Close()
	}
	if b.Fixture != nil {
		b.Fixture.Close()
	}
}

func (b *Bench) logf(format string, args ...any) {
	fmt.Fprintf(b.progress, "agentbench: "+format+"\n", args...)
}

// DigestServices returns the services that follow the digest of their tag.
func (b *Bench) DigestServices() []Service { return b.Fixture.Services[:b.Fixture.Opts.DigestImages] }

// run is one agent process of the benchmark with its own config and state.
type run struct {
	agent   *Agent
	name    string
	apiURL  string
	logPath string
}

// start writes a fresh configuration and state for one run and starts the
// agent on it.
func (b *Bench) start(name string, c AgentConfig, logLevel string, env []string) (*run, error) {
	b.runs++
	base := fmt.Sprintf("%02d-%s", b.runs, name)
	c.StatePath = filepath.Join(b.Fixture.Dir, base+".db")
	r := &run{name: name, logPath: filepath.Join(b.logDir, base+".log")}
	if c.APIListen == "listen" {
		addr, err := freeLoopbackAddr()
		if err != nil {
			return nil, err
		}
		c.APIListen, r.apiURL = addr, "http://"+addr
	}
	cfgPath := filepath.Join(b.logDir, base+".yaml")
	if err := b.Fixture.WriteConfig(cfgPath, c); err != nil {
		return nil, err
	}
	a, err := StartAgent(AgentOptions{
		Binary: b.Binary, Config: cfgPath, DockerHost: "unix://" + b.Socket, CAFile: b.Fixture.CAFile,
		LogLevel: logLevel, LogPath: r.logPath, Env: env,
	})
	if err != nil {
		return nil, err
	}
	r.agent = a
	b.logf("%s: agent pid %d, schedule %s, log %s", name, a.Pid, c.Schedule, r.logPath)
	return r, nil
}

func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	return addr, ln.Close()
}

// PassCounts are the outcome counts of a "pass done" log line.
type PassCounts struct {
	Trigger                                                  string
	Targets, Updated, Available, Blocked, RolledBack, Failed int
	Took                                                     time.Duration
	// Reused: the pass worked from an earlier discovery (no engine event since).
	Reused bool
}

func passCounts(l Line) PassCounts {
	took, _ := time.ParseDuration(l.Str("took"))
	return PassCounts{
		Trigger: l.Str("trigger"), Targets: l.Int("targets"), Updated: l.Int("updated"), Available: l.Int("available"),
		Blocked: l.Int("blocked"), RolledBack: l.Int("rolled_back"), Failed: l.Int("failed"), Took: took,
		Reused: l.Fields["reused_discovery"] == true,
	}
}

// idleError says why a pass shows that the estate is not idle.
func (p PassCounts) idleError(want int) error {
	if p.Targets != want || p.Updated+p.Available+p.Blocked+p.RolledBack+p.Failed != 0 {
		return fmt.Errorf("the %s pass saw %d targets (updated %d, available %d, blocked %d, rolled back %d, failed %d), want %d all up to date",
			p.Trigger, p.Targets, p.Updated, p.Available, p.Blocked, p.RolledBack, p.Failed, want)
	}
	return nil
}

// isPassEnd matches the agent's line at the end of every pass.
func isPassEnd(trigger string) func(Line) bool {
	return func(l Line) bool {
		m := l.Message()
		return (m == "pass done" || m == "pass failed") && (trigger == "" || l.Str("trigger") == trigger)
	}
}

// waitPass waits for the end of the next pass of trigger after from.
func waitPass(ctx context.Context, a *Agent, from int, trigger string, timeout time.Duration) (Line, int, error) {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	l, i, err := a.WaitLine(wctx, from, isPassEnd(trigger))
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no %q pass ended within %s; the agent's last lines:\n%s", trigger, timeout, a.tail(10))
		}
		return l, i, err
	}
	if l.Message() == "pass failed" {
		return l, i, fmt.Errorf("the %s pass failed: %s", trigger, l.Str("error"))
	}
	return l, i, nil
}

// waitAPI waits until the agent's API answers /healthz.
func waitAPI(ctx context.Context, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/healthz", nil)
		req.Header.Set("Authorization", "Bearer "+APIToken)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return fmt.Errorf("the agent's API at %s did not answer within %s: %v", url, timeout, last)
}

// distributionEvent is a CNCF distribution notification for one push of
// repo:tag with digest, as a registry sends it (api/testdata/webhooks).
func distributionEvent(host, repo, tag, digest string) string {
	return fmt.Sprintf(`{"events":[{"id":"agentbench-%[4]s","timestamp":%[5]q,"action":"push",`+
		`"target":{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":%[4]q,"repository":%[2]q,"tag":%[3]q},`+
		`"request":{"id":"agentbench","host":%[1]q,"method":"PUT","useragent":"agentbench"},"actor":{"name":"ci"}}]}`,
		host, repo, tag, digest, time.Now().UTC().Format(time.RFC3339Nano))
}

// repoTagOf splits a service's image into its repository path and tag.
func (b *Bench) repoTagOf(svc Service) (repo, tag string) {
	repo, tag, _ = strings.Cut(strings.TrimPrefix(svc.Image, b.Fixture.Registry.Host+"/"), ":")
	return repo, tag
}
