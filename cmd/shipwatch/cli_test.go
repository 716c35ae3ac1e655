//go:build !agentonly

package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shipwatch/shipwatch/internal/testenv"
	"github.com/shipwatch/shipwatch/state"
	"github.com/shipwatch/shipwatch/verify/sigtest"
)

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigValidateAndPrint(t *testing.T) {
	dir := t.TempDir()
	bad := writeFile(t, dir, "bad.yaml", "targets:\n  - compose: a/b\n    polcy: {}\n")
	code, out, errOut := runCLI(t, nil, "--config", bad, "config", "validate")
	if code != exitError || !strings.Contains(errOut, "bad.yaml:3: targets[0].polcy: unknown key") {
		t.Errorf("validate bad config: exit %d, stderr %q", code, errOut)
	}
	good := writeFile(t, dir, "good.yaml", "registries:\n  - host: ghcr.io\n    username: u\n    password: ${PW}\n")
	env := map[string]string{"PW": "hunter2-canary-secret"}
	if code, out, _ = runCLI(t, env, "--config", good, "config", "validate"); code != exitOK || !strings.Contains(out, "valid") {
		t.Errorf("validate good config: exit %d, %q", code, out)
	}
	code, out, _ = runCLI(t, env, "--config", good, "config", "print")
	if code != exitOK || strings.Contains(out, "hunter2") || !strings.Contains(out, "[redacted]") {
		t.Errorf("config print: exit %d, output:\n%s", code, out)
	}
}

func TestVerifyExitCodes(t *testing.T) {
	reg := testenv.NewRegistry(t)
	key := sigtest.MustKey(t, "")
	dir := t.TempDir()
	if _, err := key.WritePublicKey(dir, "k.pub"); err != nil {
		t.Fatal(err)
	}
	signed := reg.MustPush(t, "demo/app:1", testenv.App{Version: "1"}.MustImage(t))
	sigtest.MustSign(t, reg, reg.Ref("demo/app@"+signed), key, sigtest.Legacy)
	reg.MustPush(t, "demo/app:2", testenv.App{Version: "2"}.MustImage(t))
	cfg := writeFile(t, dir, "c.yaml", `verify:
  authorities: {release: {key_file: k.pub}}
  policies: [{name: demo, images: ["`+reg.Host+`/demo/*"], signed_by: [release]}]
`)
	code, out, errOut := runCLI(t, nil, "--config", cfg, "verify", reg.Ref("demo/app:1"))
	if code != exitOK || !strings.Contains(out, "decision: allowed") || !strings.Contains(out, signed) {
		t.Errorf("verify signed: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, _ = runCLI(t, nil, "--config", cfg, "verify", reg.Ref("demo/app:2"), "-o", "json"); code != exitBlocked || !strings.Contains(out, `"decision": "blocked"`) {
		t.Errorf("verify unsigned: exit %d\n%s", code, out)
	}
	reg.Close() // the registry goes away: could not decide
	if code, _, errOut = runCLI(t, nil, "--config", cfg, "verify", reg.Ref("demo/app@"+signed)); code != exitUndecided {
		t.Errorf("verify with the registry down: exit %d, want %d (undecided)\n%s", code, exitUndecided, errOut)
	}
}

func TestAgentRefusesCorruptOrLockedState(t *testing.T) {
	testenv.Engine(t)
	dir := t.TempDir()
	corrupt := writeFile(t, dir, "corrupt.db", strings.Repeat("not a bbolt file ", 512))
	cfg := writeFile(t, dir, "c.yaml", "state: {path: "+corrupt+"}\n")
	code, _, errOut := runCLI(t, nil, "--config", cfg, "agent")
	if code != exitError || !strings.Contains(errOut, "state file is corrupt") || !strings.Contains(errOut, "move it aside") {
		t.Errorf("agent on a corrupt state file: exit %d, stderr %q", code, errOut)
	}

	locked := filepath.Join(dir, "locked.db")
	st, err := state.Open(locked, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cfg2 := writeFile(t, dir, "c2.yaml", "state: {path: "+locked+"}\n")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errb strings.Builder
	code = run(ctx, []string{"--config", cfg2, "agent"}, &out, &errb, os.LookupEnv)
	if code != exitError || !strings.Contains(errb.String(), "in use by another shipwatch agent") {
		t.Errorf("second agent on a locked state file: exit %d, stderr %q", code, errb.String())
	}
}

// TestCLITalksToTheRunningAgent: with an agent running (API configured), the
// CLI's rollout, status, history and approve go through the agent, and a
// standalone rollout is refused because the agent holds the state file.
func TestCLITalksToTheRunningAgent(t *testing.T) {
	cli := testenv.Engine(t)
	reg := testenv.NewRegistry(t)
	testenv.RemoveImagesOf(t, cli, reg.Host)
	key := sigtest.MustKey(t, "")
	dir := t.TempDir()
	if _, err := key.WritePublicKey(dir, "k.pub"); err != nil {
		t.Fatal(err)
	}
	reg.MustPush(t, "demo/web:1.0.0", testenv.App{Version: "1.0.0", Health: testenv.FastHealth}.MustImage(t))
	proj := testenv.NewComposeProject(t, map[string]string{"compose.yaml": "services:\n  web:\n    image: " + reg.Ref("demo/web:1.0.0") + "\n    labels: {shipwatch.enable: \"true\", shipwatch.semver: \"^1\", shipwatch.approval: manual}\n"})
	proj.MustUp(t)
	next := reg.MustPush(t, "demo/web:1.1.0", testenv.App{Version: "1.1.0", Health: testenv.FastHealth}.MustImage(t))
	sigtest.MustSign(t, reg, reg.Ref("demo/web@"+next), key, sigtest.Bundle)

	port := freePort(t)
	token := "cli-test-token-0123456789"
	cfg := writeFile(t, dir, "c.yaml", `schedule: "@every 1h"
state: {path: `+filepath.Join(dir, "state.db")+`}
api: {listen: "127.0.0.1:`+port+`", token: `+token+`}
verify:
  authorities: {release: {key_file: k.pub}}
  policies: [{name: demo, images: ["`+reg.Host+`/demo/*"], signed_by: [release]}]
`)
	ctx, cancel := context.WithCancel(context.Background())
	agentDone := make(chan int, 1)
	var agentErr strings.Builder
	go func() {
		agentDone <- run(ctx, []string{"--config", cfg, "--log-level", "warn", "agent"}, &strings.Builder{}, &lockedBuilder{b: &agentErr}, os.LookupEnv)
	}()
	defer func() {
		cancel()
		if code := <-agentDone; code != exitOK {
			t.Errorf("agent exit %d", code)
		}
	}()
	target := "compose/" + proj.Name + "/web"
	testenv.Eventually(t, 30*time.Second, 200*time.Millisecond, func() (bool, string) {
		code, out, _ := runCLI(t, nil, "--config", cfg, "status")
		return code == exitOK && strings.Contains(out, "waits for approval"), out
	})
	if _, set := os.LookupEnv("GOMAXPROCS"); !set && runtime.GOMAXPROCS(0) != 1 {
		t.Errorf("while the agent runs GOMAXPROCS is %d, want 1 (agent/procs.go)", runtime.GOMAXPROCS(0))
	}

	code, out, errOut := runCLI(t, nil, "--config", cfg, "rollout", target, "--dry-run")
	if code != exitOK || !strings.Contains(errOut, "asking the running agent") || !strings.Contains(out, "would deploy") {
		t.Errorf("rollout --dry-run through the agent: exit %d\n%s\n%s", code, out, errOut)
	}
	if code, out, errOut = runCLI(t, nil, "--config", cfg, "approve", target); code != exitOK || !strings.Contains(out, "approved") {
		t.Errorf("approve: exit %d %s %s", code, out, errOut)
	}
	testenv.Eventually(t, 60*time.Second, 300*time.Millisecond, func() (bool, string) {
		code, out, _ := runCLI(t, nil, "--config", cfg, "history", target)
		return code == exitOK && strings.Contains(out, "updated"), out
	})

	// Without the API the CLI would open the state file itself: the agent holds it.
	noAPI := writeFile(t, dir, "noapi.yaml", "state: {path: "+filepath.Join(dir, "state.db")+"}\n")
	if code, _, errOut = runCLI(t, nil, "--config", noAPI, "history"); code != exitError || !strings.Contains(errOut, "in use by another shipwatch agent") {
		t.Errorf("standalone history while the agent runs: exit %d, %q", code, errOut)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

type lockedBuilder struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (l *lockedBuilder) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func TestUnreachableEngineIsAClearError(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
	code, out, errOut := runCLI(t, nil, "check")
	if code != exitError || !strings.Contains(errOut, "cannot reach the Docker engine at unix:///nonexistent/docker.sock") || !strings.Contains(errOut, "is the daemon running") {
		t.Errorf("check without an engine: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if n := strings.Count(strings.TrimSpace(errOut), "\n"); n > 0 {
		t.Errorf("the error should be one line, got %d lines:\n%s", n+1, errOut)
	}
}
