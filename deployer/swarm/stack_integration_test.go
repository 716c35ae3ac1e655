package swarm_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"github.com/shipwatch/shipwatch/deployer"
	swarmdeployer "github.com/shipwatch/shipwatch/deployer/swarm"
	"github.com/shipwatch/shipwatch/discovery"
	"github.com/shipwatch/shipwatch/imageref"
	"github.com/shipwatch/shipwatch/internal/testenv"
)

const stackTemplate = `# The demo stack: shipwatch keeps web's tag current.
services:
  web:
    image: IMAGE   # written back by shipwatch on a semver update
    deploy:
      replicas: 1
      update_config:
        parallelism: 1
        monitor: 2s
        failure_action: rollback
        order: start-first
      rollback_config:
        monitor: 1s
`

// dockerCLI runs the docker CLI (the stack commands exist only there).
func dockerCLI(t *testing.T, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("docker")
	if err != nil {
		if testenv.InCI() {
			t.Fatalf("the docker CLI is needed for stack tests under CI: %v", err)
		}
		t.Skipf("no docker CLI: %v", err)
	}
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// A stack deployed by `docker stack deploy`, found by discovery, updated by
// shipwatch (tag written back into the stack file), rolled back by hand
// (file restored), updated again, then deployed again by the user with the
// file as shipwatch left it: nothing restarts.
func TestStackUpdateWriteBackAndRedeploy(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	v1 := h.push("1.0.0", testenv.App{Version: "1.0.0", Health: testenv.FastHealth})
	v2 := h.push("1.1.0", testenv.App{Version: "1.1.0", Health: testenv.FastHealth})
	file := filepath.Join(t.TempDir(), "stack.yml")
	v1Text := h.reg.Ref("demo/app:1.0.0")
	if err := os.WriteFile(file, []byte(strings.Replace(stackTemplate, "IMAGE", v1Text, 1)), 0o640); err != nil {
		t.Fatal(err)
	}
	ns := testenv.Name("stack")
	dockerCLI(t, "stack", "deploy", "--detach=true", "-c", file, ns)
	t.Cleanup(func() { removeStack(t, h, ns) })
	name := ns + "_web"
	h.waitRunning(name, 1)

	found, err := discovery.Discover(h.ctx, h.cli)
	if err != nil {
		t.Fatalf("discover: %v", err)
	}
	var target deployer.Target
	for _, tg := range found.Targets {
		if tg.ID == "swarm/"+name {
			target = tg
		}
	}
	if target.Swarm == nil || target.Swarm.Stack != ns || target.Image.Tag != "1.0.0" || target.Digest != v1.Digest {
		t.Fatalf("discovered %+v, want swarm/%s of stack %s at 1.0.0@%s", target, name, ns, short(v1.Digest))
	}

	d := h.deployer(swarmdeployer.Options{StackFiles: map[string]string{ns: file}})
	res := d.Deploy(h.ctx, deployer.Plan{Target: target, To: v2}, nil)
	h.assertResult(res, name, deployer.Updated, v2.Digest)
	assertStackFile(t, file, h.reg.Ref("demo/app:1.1.0"))
	if b, err := os.ReadFile(file + swarmdeployer.BackupSuffix); err != nil || !strings.Contains(string(b), v1Text+"   #") {
		t.Errorf("backup: %v, %q; want the file as it was", err, b)
	}
	if got := h.inspect(name).Spec.Labels[swarmdeployer.LabelStackImage]; got != v1Text {
		t.Errorf("label %s = %q, want %q as the stack file wrote it", swarmdeployer.LabelStackImage, got, v1Text)
	}

	res = d.Rollback(h.ctx, h.target(name), "", nil)
	h.assertResult(res, name, deployer.RolledBack, v1.Digest)
	assertStackFile(t, file, v1Text)

	res = d.Deploy(h.ctx, deployer.Plan{Target: h.target(name), To: v2}, nil)
	h.assertResult(res, name, deployer.Updated, v2.Digest)
	assertStackFile(t, file, h.reg.Ref("demo/app:1.1.0"))

	// The user deploys the stack again with the file as shipwatch left it:
	// the CLI resolves 1.1.0 to the digest shipwatch deployed and writes
	// the very same image string, so no task restarts.
	tasksBefore := runningTaskIDs(h.tasks(name))
	dockerCLI(t, "stack", "deploy", "--detach=true", "-c", file, ns)
	after := h.inspect(name)
	if got := after.Spec.TaskTemplate.ContainerSpec.Image; got != v2.Familiar() {
		t.Errorf("after stack deploy: image %s, want %s unchanged", got, v2.Familiar())
	}
	if got := after.Spec.Labels[swarmdeployer.LabelStackImage]; got != h.reg.Ref("demo/app:1.1.0") {
		t.Errorf("after stack deploy: label %s = %q", swarmdeployer.LabelStackImage, got)
	}
	h.sameTasksFor(name, tasksBefore, 3*time.Second)
	if got := h.running(name); len(got) != 1 || got[0] != v2.Digest {
		t.Errorf("running %v, want %s", got, short(v2.Digest))
	}
}

// Same tag, new digest (a rebuilt :1.1.0): nothing to write back, and the
// next stack deploy of the unchanged file resolves the tag to the digest
// shipwatch deployed.
func TestStackSameTagNewDigest(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	v1 := h.push("1.1.0", testenv.App{Version: "1.1.0", Health: testenv.FastHealth})
	file := filepath.Join(t.TempDir(), "stack.yml")
	content := strings.Replace(stackTemplate, "IMAGE", h.reg.Ref("demo/app:1.1.0"), 1)
	if err := os.WriteFile(file, []byte(content), 0o640); err != nil {
		t.Fatal(err)
	}
	ns := testenv.Name("stack")
	dockerCLI(t, "stack", "deploy", "--detach=true", "-c", file, ns)
	t.Cleanup(func() { removeStack(t, h, ns) })
	name := ns + "_web"
	h.waitRunning(name, 1)
	rebuilt := h.push("1.1.0", testenv.App{Version: "1.1.0-rebuilt", Health: testenv.FastHealth})

	d := h.deployer(swarmdeployer.Options{StackFiles: map[string]string{ns: file}})
	res := d.Deploy(h.ctx, deployer.Plan{Target: h.target(name), To: rebuilt}, nil)
	h.assertResult(res, name, deployer.Updated, rebuilt.Digest)
	if hasStep(res, "stack-file") {
		t.Error("a same-tag update wrote the stack file")
	}
	if b, _ := os.ReadFile(file); string(b) != content {
		t.Errorf("stack file changed:\n%s", b)
	}
	tasksBefore := runningTaskIDs(h.tasks(name))
	dockerCLI(t, "stack", "deploy", "--detach=true", "-c", file, ns)
	if got := h.inspect(name).Spec.TaskTemplate.ContainerSpec.Image; got != rebuilt.Familiar() {
		t.Errorf("after stack deploy: image %s, want %s", got, rebuilt.Familiar())
	}
	h.sameTasksFor(name, tasksBefore, 3*time.Second)
	if got := h.running(name); len(got) != 1 || got[0] != rebuilt.Digest || got[0] == v1.Digest {
		t.Errorf("running %v, want the rebuilt digest %s", got, short(rebuilt.Digest))
	}
}

func assertStackFile(t *testing.T, file, image string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Replace(stackTemplate, "IMAGE", image, 1)
	if string(b) != want {
		t.Errorf("stack file:\n%s\nwant:\n%s", b, want)
	}
	if _, err := imageref.Parse(image); err != nil {
		t.Fatal(err)
	}
}

// sameTasksFor checks, for the whole of d (long enough for Swarm to start
// replacing a task), that the service keeps running exactly the tasks ids.
func (h *harness) sameTasksFor(id, ids string, d time.Duration) {
	h.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if got := runningTaskIDs(h.tasks(id)); got != ids {
			h.t.Errorf("running tasks %s → %s: the service was restarted", ids, got)
			return
		}
		select {
		case <-h.ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func runningTaskIDs(tasks []swarm.Task) string {
	var ids []string
	for _, tk := range tasks {
		if tk.DesiredState == swarm.TaskStateRunning {
			ids = append(ids, tk.ID)
		}
	}
	return strings.Join(ids, ",")
}

// removeStack removes the stack's services (waiting for their containers)
// and its default network, as `docker stack rm` would.
func removeStack(t *testing.T, h *harness, ns string) {
	list, err := h.cli.ServiceList(h.ctx, client.ServiceListOptions{Filters: make(client.Filters).Add("label", swarmdeployer.LabelStackNamespace+"="+ns)})
	if err != nil {
		t.Errorf("list services of stack %s: %v", ns, err)
		return
	}
	for _, s := range list.Items {
		testenv.RemoveService(t, h.cli, s.ID)
	}
	testenv.Eventually(t, 30*time.Second, 250*time.Millisecond, func() (bool, string) {
		_, err := h.cli.NetworkRemove(h.ctx, ns+"_default", client.NetworkRemoveOptions{})
		if err == nil || strings.Contains(err.Error(), "not found") {
			return true, ""
		}
		return false, err.Error()
	})
}
