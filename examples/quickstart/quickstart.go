package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/moby/moby/client"

	"github.com/shipwatch/shipwatch/internal/testenv"
	"github.com/shipwatch/shipwatch/state"
	"github.com/shipwatch/shipwatch/verify/sigtest"
)

// Options configure a quickstart run.
type Options struct {
	Out io.Writer
	// Binary is a built shipwatch binary; empty builds one from this checkout.
	Binary string
	// Timeout bounds each wait for the agent (default 3 minutes).
	Timeout time.Duration
}

// Result is what a run observed, for its test.
type Result struct {
	Project      string
	Digests      map[string]string // version → digest
	Running      string            // digest running at the end
	History      []state.Entry
	Status       string // shipwatch status output
	AgentLog     string
	CleanedUp    bool
	registryHost string
}

const (
	projectName = "shipwatch-quickstart"
	repo        = "demo/app"
)

// Run runs the quickstart and cleans up, whatever happens.
func Run(ctx context.Context, opts Options) error {
	_, err := run(ctx, opts)
	return err
}

func run(ctx context.Context, opts Options) (res *Result, err error) {
	out := opts.Out
	if opts.Timeout == 0 {
		opts.Timeout = 3 * time.Minute
	}
	res = &Result{Digests: map[string]string{}}
	say := func(format string, args ...any) { fmt.Fprintf(out, "==> "+format+"\n", args...) }

	cli, err := client.New(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return res, err
	}
	defer cli.Close()
	if _, err := cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		return res, fmt.Errorf("this quickstart needs a running Docker engine: %w", err)
	}

	work, err := os.MkdirTemp("", "shipwatch-quickstart-")
	if err != nil {
		return res, err
	}
	var cleanups []func()
	defer func() {
		say("cleaning up")
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
		_ = os.RemoveAll(work)
		res.CleanedUp = true
	}()

	bin := opts.Binary
	if bin == "" {
		say("building shipwatch")
		if bin, err = testenv.BuildShipwatch(work); err != nil {
			return res, err
		}
	}

	say("starting a registry on 127.0.0.1")
	reg, err := testenv.StartRegistry()
	if err != nil {
		return res, err
	}
	cleanups = append(cleanups, reg.Close)
	res.registryHost = reg.Host
	cleanups = append(cleanups, func() { removeImages(cli, reg.Host) })

	release, err := sigtest.NewKey("")
	if err != nil {
		return res, err
	}
	scanner, err := sigtest.NewKey("")
	if err != nil {
		return res, err
	}
	releasePub, err := release.WritePublicKey(work, "release.pub")
	if err != nil {
		return res, err
	}
	scannerPub, err := scanner.WritePublicKey(work, "scanner.pub")
	if err != nil {
		return res, err
	}

	versions := []struct {
		version string
		app     testenv.App
		signed  bool
	}{
		{"1.0.0", testenv.App{Version: "1.0.0", Health: testenv.FastHealth}, true},
		{"1.1.0", testenv.App{Version: "1.1.0", Health: testenv.FastHealth}, true},
		{"1.2.0", testenv.App{Version: "1.2.0", Health: testenv.FastHealth}, false},
		{"1.3.0", testenv.App{Version: "1.3.0", Health: testenv.FastHealth, Mode: "crash", CrashAfter: 1500 * time.Millisecond}, true},
	}
	publish := func(i int) error {
		v := versions[i]
		img, err := v.app.Image()
		if err != nil {
			return err
		}
		d, err := reg.Push(repo+":"+v.version, img)
		if err != nil {
			return err
		}
		res.Digests[v.version] = d
		note := "unsigned"
		if v.signed {
			ref := reg.Ref(repo + "@" + d)
			if err := sigtest.Sign(ctx, reg, ref, release, sigtest.Bundle); err != nil {
				return err
			}
			scan := sigtest.Scan{FinishedAt: time.Now().UTC(), Vulns: []sigtest.Vuln{{ID: "CVE-2026-0001", Severity: "LOW"}}}
			if err := sigtest.AttestVuln(ctx, reg, ref, scanner, sigtest.Bundle, scan); err != nil {
				return err
			}
			note = "signed, with a signed scan (1 low)"
		}
		if v.app.Mode == "crash" {
			note += ", crashes after start"
		}
		say("pushed %s:%s  %s  (%s)", repo, v.version, short(d), note)
		return nil
	}
	for i := range 2 {
		if err := publish(i); err != nil {
			return res, err
		}
	}

	say("deploying v1.0.0 with Compose")
	projDir := filepath.Join(work, "app")
	if err := os.MkdirAll(projDir, 0o755); err != nil {
		return res, err
	}
	compose := `# The demo app. shipwatch follows semver ^1 for it.
services:
  web:
    image: ` + reg.Ref(repo+":1.0.0") + `
    labels:
      shipwatch.enable: "true"
      shipwatch.semver: "^1"
`
	if err := os.WriteFile(filepath.Join(projDir, "compose.yaml"), []byte(compose), 0o644); err != nil {
		return res, err
	}
	proj, err := testenv.OpenComposeProject(projDir, projectName, io.Discard)
	if err != nil {
		return res, err
	}
	res.Project = proj.Name
	cleanups = append(cleanups, func() {
		dctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		_ = proj.Down(dctx)
	})
	if err := proj.Up(ctx); err != nil {
		return res, fmt.Errorf("compose up: %w", err)
	}

	port, err := freePort()
	if err != nil {
		return res, err
	}
	token := randomToken()
	cfgPath := filepath.Join(work, "shipwatch.yaml")
	cfg := fmt.Sprintf(`# shipwatch configuration of the quickstart
schedule: "@every 2s"
state:
  path: %s
api:
  listen: 127.0.0.1:%d
  token: %s
rollout:
  health_timeout: 20s
verify:
  authorities:
    release: {key_file: %s}
    scanner: {key_file: %s}
  policies:
    - name: demo
      images: ["%s/demo/*"]
      signed_by: [release]
      scan:
        signed_by: [scanner]
        max_severity: medium
        max_age: 1d
`, filepath.Join(work, "state.db"), port, token, releasePub, scannerPub, reg.Host)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return res, err
	}

	say("starting the shipwatch agent (its log is prefixed with 'agent |')")
	agent, logs, err := startAgent(ctx, bin, cfgPath, out)
	if err != nil {
		return res, err
	}
	stopAgent := sync.OnceFunc(func() {
		_ = agent.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = agent.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = agent.Process.Kill()
			<-done
		}
	})
	cleanups = append(cleanups, stopAgent)
	api := apiClient{base: fmt.Sprintf("http://127.0.0.1:%d", port), token: token}
	target := "compose/" + projectName + "/web"

	say("waiting for the agent to roll v1.0.0 → v1.1.0 (signed, scan ok)")
	if err := api.waitFor(ctx, opts.Timeout, target, "updated", res.Digests["1.1.0"]); err != nil {
		return res, err
	}
	if err := publish(2); err != nil {
		return res, err
	}
	say("waiting for the agent to refuse v1.2.0 (unsigned)")
	if err := api.waitFor(ctx, opts.Timeout, target, "blocked", res.Digests["1.2.0"]); err != nil {
		return res, err
	}
	if err := publish(3); err != nil {
		return res, err
	}
	say("waiting for the agent to roll v1.3.0 back (signed, but it crashes)")
	if err := api.waitFor(ctx, opts.Timeout, target, "rolled-back", res.Digests["1.3.0"]); err != nil {
		return res, err
	}

	statusOut, err := exec.CommandContext(ctx, bin, "--config", cfgPath, "status").CombinedOutput()
	if err != nil {
		return res, fmt.Errorf("shipwatch status: %v\n%s", err, statusOut)
	}
	res.Status = string(statusOut)
	say("shipwatch status")
	fmt.Fprint(out, indent(res.Status))
	histOut, _ := exec.CommandContext(ctx, bin, "--config", cfgPath, "history").CombinedOutput()
	say("shipwatch history")
	fmt.Fprint(out, indent(string(histOut)))
	if res.History, err = api.history(ctx, target); err != nil {
		return res, err
	}
	if res.Running, err = runningDigest(ctx, cli, projectName); err != nil {
		return res, err
	}
	say("the app runs %s (v1.1.0 is %s)", short(res.Running), short(res.Digests["1.1.0"]))
	stopAgent()
	res.AgentLog = logs.String()
	return res, nil
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) WriteString(x string) {
	s.mu.Lock()
	s.b.WriteString(x)
	s.mu.Unlock()
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startAgent runs `shipwatch agent` and copies its log to out with a prefix.
func startAgent(ctx context.Context, bin, cfg string, out io.Writer) (*exec.Cmd, *syncBuffer, error) {
	cmd := exec.Command(bin, "--config", cfg, "--log-format", "console", "agent")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, nil, err
	}
	cmd.Stdout = cmd.Stderr
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	logs := &syncBuffer{}
	var mu sync.Mutex
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			logs.WriteString(sc.Text() + "\n")
			mu.Lock()
			fmt.Fprintln(out, "agent | "+sc.Text())
			mu.Unlock()
		}
	}()
	_ = ctx
	return cmd, logs, nil
}

type apiClient struct{ base, token string }

func (a apiClient) history(ctx context.Context, target string) ([]state.Entry, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.base+"/v1/history?target="+target+"&limit=100", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /v1/history: %s", resp.Status)
	}
	var hist []state.Entry
	return hist, json.NewDecoder(io.LimitReader(resp.Body, 8<<20)).Decode(&hist)
}

// waitFor polls the agent's history until target has an entry with outcome
// for digest, or the deadline passes.
func (a apiClient) waitFor(ctx context.Context, timeout time.Duration, target, outcome, digest string) error {
	deadline := time.Now().Add(timeout)
	var last string
	for {
		hist, err := a.history(ctx, target)
		if err == nil {
			for _, e := range hist {
				if e.Outcome == outcome && strings.HasSuffix(e.To, "@"+digest) {
					return nil
				}
			}
			if len(hist) > 0 {
				last = hist[0].Outcome + ": " + hist[0].Reason
			}
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the agent did not report %s for %s within %s (last: %s)", outcome, short(digest), timeout, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// runningDigest is the repo digest of the image the project's web container runs.
func runningDigest(ctx context.Context, cli *client.Client, project string) (string, error) {
	list, err := cli.ContainerList(ctx, client.ContainerListOptions{Filters: make(client.Filters).Add("label", "com.docker.compose.project="+project)})
	if err != nil {
		return "", err
	}
	if len(list.Items) != 1 {
		return "", fmt.Errorf("%d containers run in %s, want 1", len(list.Items), project)
	}
	img, err := cli.ImageInspect(ctx, list.Items[0].ImageID)
	if err != nil {
		return "", err
	}
	for _, rd := range img.RepoDigests {
		if _, d, ok := strings.Cut(rd, "@"); ok {
			return d, nil
		}
	}
	return "", errors.New("the running image has no repo digest")
}

func removeImages(cli *client.Client, host string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	list, err := cli.ImageList(ctx, client.ImageListOptions{All: true})
	if err != nil {
		return
	}
	for _, img := range list.Items {
		for _, ref := range append(append([]string{}, img.RepoTags...), img.RepoDigests...) {
			if strings.HasPrefix(ref, host+"/") || strings.HasPrefix(ref, "shipwatch-rollback") {
				_, _ = cli.ImageRemove(ctx, img.ID, client.ImageRemoveOptions{Force: true, PruneChildren: true})
				break
			}
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func short(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}

func indent(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("    " + line + "\n")
	}
	return b.String()
}
