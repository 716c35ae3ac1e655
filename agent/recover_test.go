package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/shipwatch/shipwatch/internal/testenv"
	"github.com/shipwatch/shipwatch/state"
	"github.com/shipwatch/shipwatch/verify/sigtest"
)

// composeSteps are the steps of a Compose rollout, in order (deployer/compose).
var composeSteps = []string{"load project", "drift guard", "plan", "pull", "verify digest", "protect previous image", "rewrite files", "tag image", "converge", "health gate"}

// TestSIGKILLDuringRolloutRecovers kills the agent process with SIGKILL right
// after each step of a Compose rollout (so the kill lands in the next step),
// restarts it, and checks that the target ends up running the old or the new
// verified digest, healthy, in exactly one container, with its compose file
// matching what runs and no journal or backup left behind.
func TestSIGKILLDuringRolloutRecovers(t *testing.T) {
	cli := testenv.Engine(t)
	bin, err := testenv.BuildShipwatch("")
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"semver", "digest"} {
		for _, step := range composeSteps {
			if mode == "digest" && step == "rewrite files" {
				continue // a same-tag update rewrites no file
			}
			t.Run(mode+"/"+strings.ReplaceAll(step, " ", "-"), func(t *testing.T) {
				t.Parallel()
				killAfterStep(t, cli, bin, mode, step)
			})
		}
	}
}

// killAfterStep: mode "semver" rolls 1.0.0 → 1.1.0 (the compose file is
// rewritten); mode "digest" rolls the tag 1.0 from one digest to the next
// (the local tag moves).
func killAfterStep(t *testing.T, cli *client.Client, bin, mode, step string) {
	reg := testenv.NewRegistry(t)
	testenv.RemoveImagesOf(t, cli, reg.Host)
	key := sigtest.MustKey(t, "")
	dir := t.TempDir()
	keyPath, _ := key.WritePublicKey(dir, "release.pub")
	push := func(tag, version string) string {
		d := reg.MustPush(t, "demo/app:"+tag, testenv.App{Version: version, Health: testenv.FastHealth}.MustImage(t))
		sigtest.MustSign(t, reg, reg.Ref("demo/app@"+d), key, sigtest.Bundle)
		return d
	}
	oldTag, newTag, labels := "1.0.0", "1.1.0", `shipwatch.semver: "^1"`
	if mode == "digest" {
		oldTag, newTag, labels = "1.0", "1.0", `shipwatch.policy: digest`
	}
	oldDigest := push(oldTag, "old")
	proj := testenv.NewComposeProject(t, map[string]string{"compose.yaml": `# the app
services:
  web:
    image: ` + reg.Ref("demo/app:"+oldTag) + `
    labels: {shipwatch.enable: "true", ` + labels + `}
`})
	proj.MustUp(t)
	newDigest := push(newTag, "new")

	l, _ := net.Listen("tcp", "127.0.0.1:0")
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cfgPath := filepath.Join(dir, "shipwatch.yaml")
	statePath := filepath.Join(dir, "state.db")
	cfg := fmt.Sprintf(`schedule: "@every 1h"
state: {path: %s}
api: {listen: "127.0.0.1:%d", token: %s}
rollout: {health_timeout: 20s}
targets:
  - compose: %s/*
verify:
  authorities: {release: {key_file: %s}}
  policies: [{name: t, images: ["%s/**"], signed_by: [release]}]
`, statePath, port, apiToken, proj.Name, keyPath, reg.Host)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	target := "compose/" + proj.Name + "/web"

	// 1. Run the agent until it reports the end of the step, then SIGKILL it.
	a := startProcess(t, bin, cfgPath)
	if !a.waitLine(60*time.Second, func(m map[string]any) bool {
		return m["message"] == "compose rollout step" && m["step"] == step && m["target"] == target
	}) {
		t.Fatalf("the agent never ended step %q; its log (with goroutines):\n%s", step, a.dump())
	}
	if !strings.Contains(a.log(), `"process":"helper"`) {
		t.Errorf("the rollout did not run in a helper process (shipwatch agent runs shipwatch-agent when it is installed next to it); log:\n%s", a.log())
	}
	if len(helperPIDs(cfgPath)) == 0 {
		t.Error("no helper process found while the rollout runs")
	}
	_ = a.cmd.Process.Signal(syscall.SIGKILL)
	_ = a.cmd.Wait()
	// The helper must not go on changing the target once its agent is gone:
	// the restarted agent is about to reconcile it.
	noHelpers(t, cfgPath)

	st, err := state.Open(statePath, time.Second)
	if err != nil {
		t.Fatalf("state after SIGKILL: %v", err)
	}
	js, _ := st.Journals()
	hist, _ := st.History(target, 0)
	st.Close()
	recorded := slices.ContainsFunc(hist, func(e state.Entry) bool { return e.Mode == "agent" && e.Outcome == "updated" })
	interrupted := len(js) == 1
	switch {
	case !interrupted && len(js) == 0 && step == composeSteps[len(composeSteps)-1] && recorded:
		// After the last step only the outcome's record is left to do
		// (one transaction with the journal's end), and the kill can land
		// after it: nothing to reconcile then.
		t.Logf("the kill after %q landed after the outcome was recorded", step)
	case !interrupted:
		t.Fatalf("journals after SIGKILL in %q = %+v, want the interrupted rollout; log:\n%s", step, js, a.log())
	}

	// 2. Restart: the agent reconciles before anything else.
	b := startProcess(t, bin, cfgPath)
	if !b.waitLine(90*time.Second, func(m map[string]any) bool {
		return m["message"] == "pass done" && m["trigger"] == "start"
	}) {
		t.Fatalf("the restarted agent did not finish its first pass; its log (with goroutines):\n%s", b.dump())
	}
	if interrupted && !strings.Contains(b.log(), "found a rollout interrupted by a previous agent") {
		t.Errorf("the restarted agent did not reconcile the interrupted rollout; its log:\n%s", b.log())
	}
	b.stop(t)
	noHelpers(t, cfgPath)

	// 3. Invariants.
	st, err = state.Open(statePath, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if js, _ := st.Journals(); len(js) != 0 {
		t.Errorf("journals left after recovery: %+v", js)
	}
	if err := st.Check(); err != nil {
		t.Errorf("state integrity: %v", err)
	}
	ctx := context.Background()
	list, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("label", "com.docker.compose.project="+proj.Name)})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 {
		t.Fatalf("%d containers in the project, want exactly 1: %+v\nfirst agent:\n%s\nrestarted agent:\n%s", len(list.Items), list.Items, a.log(), b.log())
	}
	c := list.Items[0]
	running := ""
	if img, err := cli.ImageInspect(ctx, c.ImageID); err == nil {
		for _, rd := range img.RepoDigests {
			if strings.HasPrefix(rd, reg.Host+"/") {
				_, running, _ = strings.Cut(rd, "@")
			}
		}
	}
	if running != oldDigest && running != newDigest {
		t.Errorf("runs %q, want the old %s or the new %s", running, oldDigest, newDigest)
	}
	testenv.Eventually(t, 30*time.Second, 200*time.Millisecond, func() (bool, string) {
		insp, err := cli.ContainerInspect(ctx, c.ID, client.ContainerInspectOptions{})
		if err != nil {
			return false, err.Error()
		}
		h := insp.Container.State.Health
		return insp.Container.State.Running && h != nil && h.Status == "healthy", fmt.Sprintf("state %+v", insp.Container.State)
	})
	file, _ := os.ReadFile(filepath.Join(proj.Dir, "compose.yaml"))
	wantTag := oldTag
	if running == newDigest {
		wantTag = newTag
	}
	// The tag the file names must point at what runs, or the user's next
	// `docker compose up -d` would switch versions behind shipwatch's back.
	if img, err := cli.ImageInspect(ctx, reg.Ref("demo/app:"+wantTag)); err != nil || img.ID != c.ImageID {
		t.Errorf("local tag demo/app:%s points at %v, the container runs %s (err %v)", wantTag, img.ID, c.ImageID, err)
	}
	if !strings.Contains(string(file), "demo/app:"+wantTag) || !strings.HasPrefix(string(file), "# the app") {
		t.Errorf("compose file does not match what runs (%s):\n%s", wantTag, file)
	}
	if matches, _ := filepath.Glob(filepath.Join(proj.Dir, "*.shipwatch-backup")); len(matches) > 0 {
		t.Errorf("backup files left: %v", matches)
	}
	t.Logf("killed after %q: runs %s", step, map[bool]string{true: "the new version", false: "the old version"}[running == newDigest])
}

// noHelpers waits until no `shipwatch helper` process for the config at
// cfgPath runs.
func noHelpers(t *testing.T, cfgPath string) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, 20*time.Millisecond, func() (bool, string) {
		pids := helperPIDs(cfgPath)
		return len(pids) == 0, fmt.Sprintf("helper processes %v outlived their agent", pids)
	})
}

// helperPIDs lists the `shipwatch helper` processes for the config at cfgPath.
func helperPIDs(cfgPath string) []string {
	var pids []string
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if slices.Contains(args, "helper") && slices.Contains(args, cfgPath) {
			pids = append(pids, d.Name())
		}
	}
	return pids
}

// process is a shipwatch agent started as a separate process.
type process struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
	seen  chan map[string]any
}

func startProcess(t *testing.T, bin, cfg string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(bin, "--config", cfg, "--log-format", "json", "--log-level", "debug", "agent"), seen: make(chan map[string]any, 1024)}
	p.cmd.Stdout = os.Stderr
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
		}
	})
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.lines = append(p.lines, line)
			p.mu.Unlock()
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil {
				select {
				case p.seen <- m:
				default:
				}
			}
		}
		close(p.seen)
	}()
	return p
}

// waitLine waits for a log line that match accepts.
func (p *process) waitLine(timeout time.Duration, match func(map[string]any) bool) bool {
	deadline := time.After(timeout)
	for {
		select {
		case m, ok := <-p.seen:
			if !ok {
				return false
			}
			if match(m) {
				return true
			}
		case <-deadline:
			return false
		}
	}
}

// dump asks the process for its goroutine stacks (SIGQUIT) and returns its log.
func (p *process) dump() string {
	if p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Signal(syscall.SIGQUIT)
		done := make(chan struct{})
		go func() { _ = p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
	}
	return p.log()
}

func (p *process) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// stop sends SIGTERM and waits for a graceful exit.
func (p *process) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("agent exit: %v; log:\n%s", err, p.log())
		}
	case <-time.After(60 * time.Second):
		_ = p.cmd.Process.Kill()
		t.Errorf("agent did not stop within 60s of SIGTERM")
	}
}
