// Package swarmexample_test loads the files of the Swarm example and walks
// its README against the real engine: once through the deployer that
// `shipwatch rollout` uses, once through the shipwatch binary itself.
package swarmexample_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"github.com/shipwatch/shipwatch/config"
	"github.com/shipwatch/shipwatch/deployer"
	swarmdeployer "github.com/shipwatch/shipwatch/deployer/swarm"
	"github.com/shipwatch/shipwatch/discovery"
	"github.com/shipwatch/shipwatch/imageref"
	"github.com/shipwatch/shipwatch/internal/testenv"
)

// TestExampleFilesLoad loads every file of the example as its tool does.
func TestExampleFilesLoad(t *testing.T) {
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{"stack.yml": true, "shipwatch.yaml": true, "README.md": true, "example_test.go": true}
	for _, e := range entries {
		if !known[e.Name()] {
			t.Errorf("examples/swarm/%s is not loaded by this test", e.Name())
		}
	}
	raw, err := os.ReadFile("stack.yml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  ".",
		ConfigFiles: []types.ConfigFile{{Filename: "stack.yml", Content: raw}},
	}, func(o *loader.Options) { o.SetProjectName("demo", true) })
	if err != nil {
		t.Fatalf("load stack.yml: %v", err)
	}
	web, ok := p.Services["web"]
	if !ok {
		t.Fatal("stack.yml has no service web")
	}
	if web.Image != "127.0.0.1:5000/example/web:1.0.0" || web.Deploy == nil || web.Deploy.Labels["shipwatch.enable"] != "true" {
		t.Errorf("web: image %q, deploy %+v; want the 1.0.0 image and shipwatch.enable", web.Image, web.Deploy)
	}
	if web.Deploy != nil && (web.Deploy.UpdateConfig != nil || web.Deploy.RollbackConfig != nil) {
		t.Error("the example shows shipwatch's defaults: it must not set update_config or rollback_config")
	}
	pol, enable, err := config.LabelPolicyOf(web.Deploy.Labels)
	if err != nil || enable == nil || !*enable || pol.Semver == nil {
		t.Errorf("labels: policy %+v, enable %v, err %v; want enabled with a semver range", pol, enable, err)
	}
	cfgPath, _ := filepath.Abs("shipwatch.yaml")
	cfg, err := config.Load(cfgPath, os.LookupEnv)
	if err != nil {
		t.Fatalf("load shipwatch.yaml: %v", err)
	}
	if abs, _ := filepath.Abs("stack.yml"); cfg.Rollout.StackFiles["demo"] != abs {
		t.Errorf("rollout.stack_files.demo = %q, want %q", cfg.Rollout.StackFiles["demo"], abs)
	}
	// shipwatch can keep the file's tag in step with a semver rollout.
	copyPath := filepath.Join(t.TempDir(), "stack.yml")
	if err := os.WriteFile(copyPath, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	from := imageref.MustParse("127.0.0.1:5000/example/web:1.0.0")
	to := from.WithTag("1.1.0").WithDigest("sha256:" + strings.Repeat("a", 64))
	if changed, err := swarmdeployer.RewriteStackFile(copyPath, "web", from, to); err != nil || !changed {
		t.Errorf("rewrite the example's tag: changed %v, %v", changed, err)
	}
}

// versions are the images the README uses (the same as the Compose
// example's registry serves).
var versions = []struct {
	tag string
	app testenv.App
}{
	{"1.0.0", testenv.App{Version: "1.0.0", Health: health}},
	{"1.1.0", testenv.App{Version: "1.1.0", Health: health}},
	{"1.2.0", testenv.App{Version: "1.2.0", Health: health, Mode: "crash", CrashAfter: 2 * time.Second}},
}

var health = &testenv.Health{Interval: time.Second, Timeout: 2 * time.Second, StartPeriod: 5 * time.Second, Retries: 3}

// example is the README's setup on the real engine: a loopback registry
// with the example's images, and the stack deployed from a copy of
// stack.yml that names this registry (and a free port).
type example struct {
	cli     *client.Client
	ctx     context.Context
	reg     *testenv.Registry
	file    string
	ns      string
	digests map[string]string
}

func setUp(t *testing.T) *example {
	t.Helper()
	if _, err := exec.LookPath("docker"); err != nil {
		if testenv.InCI() {
			t.Fatalf("the docker CLI is needed for stack tests under CI: %v", err)
		}
		t.Skipf("no docker CLI: %v", err)
	}
	cli := testenv.Engine(t)
	testenv.Swarm(t, cli)
	e := &example{cli: cli, ctx: testenv.Context(t, 10*time.Minute), reg: testenv.NewRegistry(t), digests: map[string]string{}}
	testenv.RemoveImagesOf(t, cli, e.reg.Host)
	id := testenv.Name("")
	for _, v := range versions {
		app := v.app
		app.Labels = map[string]string{"shipwatch.test.id": id} // images of this test only
		e.digests[v.tag] = e.reg.MustPush(t, "example/web:"+v.tag, app.MustImage(t))
	}
	raw, err := os.ReadFile("stack.yml")
	if err != nil {
		t.Fatal(err)
	}
	stack := strings.ReplaceAll(string(raw), "127.0.0.1:5000", e.reg.Host)
	stack = strings.Replace(stack, "published: 8081", fmt.Sprintf("published: %d", freePort(t)), 1)
	e.file = filepath.Join(t.TempDir(), "stack.yml")
	if err := os.WriteFile(e.file, []byte(stack), 0o644); err != nil {
		t.Fatal(err)
	}
	e.ns = testenv.Name("demo")
	docker(t, "stack", "deploy", "--detach=true", "-c", e.file, e.ns)
	t.Cleanup(func() { e.removeStack(t) })
	e.waitRuns(t, "1.0.0")
	return e
}

func (e *example) service() string { return e.ns + "_web" }

// running lists the digests of the service's running tasks.
func (e *example) running(t *testing.T) []string {
	t.Helper()
	res, err := e.cli.TaskList(e.ctx, client.TaskListOptions{Filters: make(client.Filters).Add("service", e.service())})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, tk := range res.Items {
		if tk.DesiredState == swarm.TaskStateRunning && tk.Status.State == swarm.TaskStateRunning {
			out = append(out, imageref.MustParse(tk.Spec.ContainerSpec.Image).Digest)
		}
	}
	return out
}

// waitRuns waits until both replicas run the tag's digest.
func (e *example) waitRuns(t *testing.T, tag string) {
	t.Helper()
	testenv.Eventually(t, 2*time.Minute, 250*time.Millisecond, func() (bool, string) {
		got := e.running(t)
		return len(got) == 2 && got[0] == e.digests[tag] && got[1] == e.digests[tag], fmt.Sprintf("running %v, want 2 × %s", got, tag)
	})
}

func (e *example) assertRuns(t *testing.T, tag string) {
	t.Helper()
	got := e.running(t)
	if len(got) != 2 {
		t.Errorf("%d replicas run, want 2", len(got))
	}
	for _, d := range got {
		if d != e.digests[tag] {
			t.Errorf("a replica runs %s, want %s (%s)", d, e.digests[tag], tag)
		}
	}
}

func (e *example) removeStack(t *testing.T) {
	list, err := e.cli.ServiceList(context.Background(), client.ServiceListOptions{Filters: make(client.Filters).Add("label", swarmdeployer.LabelStackNamespace+"="+e.ns)})
	if err != nil {
		t.Errorf("list the stack's services: %v", err)
		return
	}
	for _, s := range list.Items {
		testenv.RemoveService(t, e.cli, s.ID)
	}
	testenv.Eventually(t, 30*time.Second, 250*time.Millisecond, func() (bool, string) {
		_, err := e.cli.NetworkRemove(context.Background(), e.ns+"_default", client.NetworkRemoveOptions{})
		if err == nil || strings.Contains(err.Error(), "not found") {
			return true, ""
		}
		return false, err.Error()
	})
}

func docker(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("docker", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestExampleByHand walks the README through the deployer that `shipwatch
// rollout` and `shipwatch rollback` use: roll out 1.1.0 (the stack file's
// tag is written back), try the crashing 1.2.0 (Swarm rolls it back: a
// failure), roll back by hand to 1.0.0 from history, and deploy the stack
// again from the file.
func TestExampleByHand(t *testing.T) {
	e := setUp(t)
	d, err := swarmdeployer.New(e.ctx, swarmdeployer.Options{Engine: e.cli, StackFiles: map[string]string{e.ns: e.file}})
	if err != nil {
		t.Fatal(err)
	}
	target := func() deployer.Target {
		t.Helper()
		found, err := discovery.Discover(e.ctx, e.cli)
		if err != nil {
			t.Fatal(err)
		}
		for _, tg := range found.Targets {
			if tg.Name == e.service() {
				return tg
			}
		}
		t.Fatalf("discovery did not find %s", e.service())
		return deployer.Target{}
	}
	ref := func(tag string) imageref.Ref {
		return imageref.MustParse(e.reg.Ref("example/web:" + tag)).WithDigest(e.digests[tag])
	}

	res := d.Deploy(e.ctx, deployer.Plan{Target: target(), To: ref("1.1.0")}, nil)
	if res.Outcome != deployer.Updated {
		t.Fatalf("rollout 1.1.0: %s, %v", res.Outcome, res.Cause)
	}
	e.assertRuns(t, "1.1.0")
	e.assertFileSays(t, "1.1.0")

	res = d.Deploy(e.ctx, deployer.Plan{Target: target(), To: ref("1.2.0")}, nil)
	if res.Outcome != deployer.RolledBack || !errors.Is(res.Cause, swarmdeployer.ErrSwarmRollback) || res.FailedDigest != e.digests["1.2.0"] {
		t.Fatalf("rollout 1.2.0: %s, %v, failed digest %s; want rolled back by Swarm, 1.2.0 to quarantine", res.Outcome, res.Cause, res.FailedDigest)
	}
	e.assertRuns(t, "1.1.0")

	res = d.Rollback(e.ctx, target(), "", nil)
	if !errors.Is(res.Cause, deployer.ErrNoPrevious) {
		t.Fatalf("rollback without a digest after Swarm's own rollback: %s, %v; want ErrNoPrevious", res.Outcome, res.Cause)
	}
	res = d.Rollback(e.ctx, target(), ref("1.0.0").String(), nil)
	if res.Outcome != deployer.RolledBack {
		t.Fatalf("rollback to 1.0.0: %s, %v", res.Outcome, res.Cause)
	}
	e.assertRuns(t, "1.0.0")
	e.assertFileSays(t, "1.0.0")

	docker(t, "stack", "deploy", "--detach=true", "-c", e.file, e.ns)
	if got := spec(t, e).TaskTemplate.ContainerSpec.Image; got != ref("1.0.0").Familiar() {
		t.Errorf("after docker stack deploy: image %s, want %s", got, ref("1.0.0").Familiar())
	}
	e.assertRuns(t, "1.0.0")
}

func spec(t *testing.T, e *example) swarm.ServiceSpec {
	t.Helper()
	res, err := e.cli.ServiceInspect(e.ctx, e.service(), client.ServiceInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return res.Service.Spec
}

// TestExampleWithTheCLI runs the README's shipwatch commands with the
// binary built from this checkout, as a user would.
func TestExampleWithTheCLI(t *testing.T) {
	e := setUp(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "shipwatch")
	build := exec.Command("go", "build", "-o", bin, "github.com/shipwatch/shipwatch/cmd/shipwatch")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build shipwatch: %v\n%s", err, out)
	}
	cfg, err := os.ReadFile("shipwatch.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "shipwatch.yaml")
	// This test's stack and its copy of stack.yml, and a state file of its own.
	cfg = []byte(strings.Replace(string(cfg), "    demo: stack.yml", "    "+e.ns+": "+e.file, 1))
	if !strings.Contains(string(cfg), e.file) {
		t.Fatalf("shipwatch.yaml no longer maps the stack demo to stack.yml:\n%s", cfg)
	}
	cfg = append(cfg, fmt.Sprintf("state:\n  path: %s\n", filepath.Join(dir, "state.db"))...)
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(wantExit int, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(e.ctx, bin, append([]string{"-c", cfgPath, "--log-format", "console"}, args...)...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		code := 0
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			code = exit.ExitCode()
		} else if err != nil {
			t.Fatalf("shipwatch %s: %v", strings.Join(args, " "), err)
		}
		t.Logf("$ shipwatch %s  (exit %d)\n%s", strings.Join(args, " "), code, out.String())
		if code != wantExit {
			t.Fatalf("shipwatch %s: exit code %d, want %d", strings.Join(args, " "), code, wantExit)
		}
		return out.String()
	}

	out := run(2, "check", e.service()) // 2: an update is available
	if !strings.Contains(out, "1.2.0") {
		t.Errorf("check does not propose the newest ^1 tag, 1.2.0:\n%s", out)
	}
	out = run(0, "rollout", e.service(), "--to", "1.1.0", "--dry-run")
	if !strings.Contains(out, "1.1.0") {
		t.Errorf("dry run does not show the plan:\n%s", out)
	}
	e.assertRuns(t, "1.0.0")

	run(0, "rollout", e.service(), "--to", "1.1.0")
	e.assertRuns(t, "1.1.0")
	e.assertFileSays(t, "1.1.0")

	run(6, "rollout", e.service(), "--to", "1.2.0")
	e.assertRuns(t, "1.1.0")
	if out := run(0, "quarantine", "list"); !strings.Contains(out, strings.TrimPrefix(e.digests["1.2.0"], "sha256:")[:12]) {
		t.Errorf("quarantine does not list 1.2.0's digest %s:\n%s", e.digests["1.2.0"], out)
	}

	run(0, "rollback", e.service())
	e.assertRuns(t, "1.0.0")
	e.assertFileSays(t, "1.0.0")

	// The next stack deploy of the file as shipwatch left it changes nothing.
	before := spec(t, e).TaskTemplate.ContainerSpec.Image
	docker(t, "stack", "deploy", "--detach=true", "-c", e.file, e.ns)
	if got := spec(t, e).TaskTemplate.ContainerSpec.Image; got != before {
		t.Errorf("after docker stack deploy: image %s, want %s", got, before)
	}
	e.assertRuns(t, "1.0.0")
}

// assertFileSays checks the tag in the test's copy of stack.yml.
func (e *example) assertFileSays(t *testing.T, tag string) {
	t.Helper()
	b, err := os.ReadFile(e.file)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "example/web:"+tag+"\n") {
		t.Errorf("stack file, want tag %s:\n%s", tag, b)
	}
}
