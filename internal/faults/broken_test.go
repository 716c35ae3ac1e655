package faults

import (
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"github.com/shipwatch/shipwatch/internal/testenv"
)

// fires fails t unless each of want is among the violations.
func fires(t *testing.T, what string, vs []Violation, want ...string) {
	t.Helper()
	got := map[string]bool{}
	for _, v := range vs {
		got[v.Invariant] = true
	}
	for _, w := range want {
		if !got[w] {
			t.Errorf("%s: %s did not fire; violations: %v", what, w, vs)
		}
	}
}

// The invariants fire on states broken by hand on the real engine, the
// same way the suite observes its runs: no check that cannot fail.
func TestInvariantsFireOnTheRealEngine(t *testing.T) {
	if testing.Short() && !testenv.InCI() {
		t.Skip("drives the Docker engine (skipped with -short outside CI)")
	}
	e := NewEnv(t, 1, Compose, "", Options{Policy: "semver"})
	if vs := Check(e.Observe()); len(vs) != 0 {
		t.Fatalf("untouched workload: got %v, want no violation", vs)
	}
	ctx := testenv.Context(t, 3*time.Minute)

	// An unsigned image runs as a second container of the service, as if a
	// deployment had gone around verification: I2, I3 and I4.
	evil := e.Push("evil", Version{App: e.App("6.6.6")})
	ref := e.Reg.Ref(e.Repo + "@" + evil.Digest)
	pull, err := e.Cli.ImagePull(ctx, ref, client.ImagePullOptions{RegistryAuth: e.registryAuth()})
	if err == nil {
		err = pull.Wait(ctx)
	}
	if err != nil {
		t.Fatal(err)
	}
	created, err := e.Cli.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name: e.Project.Name + "-web-2",
		Config: &container.Config{Image: ref, Labels: map[string]string{
			"com.docker.compose.project": e.Project.Name, "com.docker.compose.service": "web", testenv.LabelKey: "1",
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Cli.ContainerStart(ctx, created.ID, client.ContainerStartOptions{}); err != nil {
		t.Fatal(err)
	}
	fires(t, "an unverified extra container", Check(e.Observe()), "I2", "I3", "I4")
	if _, err := e.Cli.ContainerRemove(ctx, created.ID, client.ContainerRemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}

	// The service's container is stopped: I1.
	o := e.observeWorkload(ctx)
	if len(o.Containers) != 1 {
		t.Fatalf("containers after cleanup: %+v", o.Containers)
	}
	if _, err := e.Cli.ContainerStop(ctx, o.Containers[0].ID, client.ContainerStopOptions{}); err != nil {
		t.Fatal(err)
	}
	fires(t, "a stopped replica", Check(e.Observe()), "I1")

	// A notification that carries the API token: I7.
	resp, err := http.Post(e.hookURL, "application/json", strings.NewReader(`{"reason":"401 Bearer `+e.Canaries[CanaryAPIToken]+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	fires(t, "a leaked token", Check(e.Observe()), "I7")

	// A corrupt state file: I6.
	if err := os.WriteFile(e.State, []byte(strings.Repeat("not a bolt file ", 512)), 0o600); err != nil {
		t.Fatal(err)
	}
	fires(t, "a corrupt state file", Check(e.Observe()), "I6")
}

// A Swarm service left paused by a failed update: I5.
func TestPausedSwarmServiceFiresI5(t *testing.T) {
	if testing.Short() && !testenv.InCI() {
		t.Skip("drives the Docker engine (skipped with -short outside CI)")
	}
	e := NewEnv(t, 2, Swarm, "", Options{Policy: "semver",
		SwarmUpdate: &swarm.UpdateConfig{Parallelism: 1, Monitor: 2 * time.Second, FailureAction: swarm.UpdateFailureActionPause, Order: swarm.UpdateOrderStopFirst}})
	ctx := testenv.Context(t, 3*time.Minute)
	bad := e.Push("1.1.0", e.Good(e.badApp("crash")))
	svc, err := e.Cli.ServiceInspect(ctx, e.Service, client.ServiceInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	spec := svc.Service.Spec
	spec.TaskTemplate.ContainerSpec.Image = e.Reg.Ref(e.Repo + ":1.1.0@" + bad.Digest)
	if _, err := e.Cli.ServiceUpdate(ctx, e.Service, client.ServiceUpdateOptions{Version: svc.Service.Version, Spec: spec, EncodedRegistryAuth: e.registryAuth()}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 2*time.Minute, 250*time.Millisecond, func() (bool, string) {
		o := e.observeQuick(ctx)
		return o.UpdateState == "paused", "update state " + o.UpdateState
	})
	fires(t, "a paused service", Check(e.Observe()), "I5")
}
