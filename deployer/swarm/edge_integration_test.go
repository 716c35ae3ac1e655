package swarm_test

import (
	"errors"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"github.com/shipwatch/shipwatch/deployer"
	swarmdeployer "github.com/shipwatch/shipwatch/deployer/swarm"
	"github.com/shipwatch/shipwatch/internal/testenv"
)

// A service scaled to zero has no task to update, so Swarm never writes an
// UpdateStatus: the update must end at once, with the spec pinned.
func TestDeployZeroReplicas(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	v1 := h.push("1.0.0", testenv.App{Version: "1.0.0"})
	v2 := h.push("1.1.0", testenv.App{Version: "1.1.0"})
	svc := h.service(v1, func(s *swarm.ServiceSpec) { s.Mode = replicas(0) })

	start := time.Now()
	res := h.deployer(swarmdeployer.Options{}).Deploy(h.ctx, deployer.Plan{Target: h.target(svc.ID), To: v2}, nil)
	// Nothing runs: Running reports the digest the spec pins.
	h.assertResult(res, svc.ID, deployer.Updated, v2.Digest)
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("a zero-replica update took %s: it must not wait for an update status that never comes", took)
	}
	after := h.inspect(svc.ID)
	if got := after.Spec.TaskTemplate.ContainerSpec.Image; got != v2.Familiar() {
		t.Errorf("spec image = %s, want %s", got, v2.Familiar())
	}
	if after.UpdateStatus != nil {
		t.Logf("update status %+v (Swarm wrote one after all)", *after.UpdateStatus)
	}
	if n := len(h.running(svc.ID)); n != 0 {
		t.Errorf("%d tasks run, want 0", n)
	}
}

func TestDeployGlobalService(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	v1 := h.push("1.0.0", testenv.App{Version: "1.0.0", Health: testenv.FastHealth})
	v2 := h.push("1.1.0", testenv.App{Version: "1.1.0", Health: testenv.FastHealth})
	svc := h.service(v1, func(s *swarm.ServiceSpec) {
		s.Mode = swarm.ServiceMode{Global: &swarm.GlobalService{}}
		s.UpdateConfig = fastUpdate(swarm.UpdateOrderStopFirst)
	})
	res := h.deployer(swarmdeployer.Options{}).Deploy(h.ctx, deployer.Plan{Target: h.target(svc.ID), To: v2}, nil)
	h.assertResult(res, svc.ID, deployer.Updated, v2.Digest)
	if n := len(h.running(svc.ID)); n != 1 {
		t.Errorf("%d tasks run on the single node, want 1", n)
	}
}

// A plan for the digest that already runs changes nothing: no update is
// sent (the spec version stays), and the outcome is up-to-date, at once.
func TestDeployNoOp(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	v1 := h.push("1.0.0", testenv.App{Version: "1.0.0"})
	svc := h.service(v1, nil)
	for _, to := range []struct{ name, tag string }{{"same reference", "1.0.0"}, {"same digest under another tag", "1.0"}} {
		plan := deployer.Plan{Target: h.target(svc.ID), To: v1.WithTag(to.tag).WithDigest(v1.Digest)}
		res := h.deployer(swarmdeployer.Options{}).Deploy(h.ctx, plan, nil)
		h.assertResult(res, svc.ID, deployer.UpToDate, v1.Digest)
		if got, want := h.inspect(svc.ID).Version.Index, svc.Version.Index; got != want {
			t.Errorf("%s: spec version = %d, want %d: the service was updated", to.name, got, want)
		}
	}
}

// Another client updates the service while shipwatch follows its update:
// shipwatch stops with ErrConflict and does not roll back over it.
func TestDeployConcurrentChangeIsAConflict(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	health := &testenv.Health{Interval: 250 * time.Millisecond, Timeout: time.Second, StartPeriod: 30 * time.Second, Retries: 3}
	v1 := h.push("1.0.0", testenv.App{Version: "1.0.0", Health: testenv.FastHealth})
	v2 := h.push("1.1.0", testenv.App{Version: "1.1.0", Mode: "slow", Slow: 8 * time.Second, Health: health})
	v3 := h.push("1.2.0", testenv.App{Version: "1.2.0", Health: testenv.FastHealth})
	svc := h.service(v1, func(s *swarm.ServiceSpec) {
		s.UpdateConfig = fastUpdate(swarm.UpdateOrderStartFirst)
		s.RollbackConfig = fastRollback()
	})

	done := make(chan deployer.Result, 1)
	go func() {
		done <- h.deployer(swarmdeployer.Options{}).Deploy(h.ctx, deployer.Plan{Target: h.target(svc.ID), To: v2}, nil)
	}()
	// Once shipwatch's update is under way, another client changes the image.
	testenv.Eventually(t, 30*time.Second, 100*time.Millisecond, func() (bool, string) {
		s := h.inspect(svc.ID)
		return s.Spec.TaskTemplate.ContainerSpec.Image == v2.Familiar() && s.UpdateStatus != nil && s.UpdateStatus.State == swarm.UpdateStateUpdating,
			"waiting for shipwatch's update to start"
	})
	for attempt := 0; ; attempt++ {
		s := h.inspect(svc.ID)
		s.Spec.TaskTemplate.ContainerSpec.Image = v3.Familiar()
		_, err := h.cli.ServiceUpdate(h.ctx, svc.ID, client.ServiceUpdateOptions{Version: s.Version, Spec: s.Spec})
		if err == nil {
			break
		}
		if attempt == 5 {
			t.Fatalf("the other client's update: %v", err)
		}
	}

	var res deployer.Result
	select {
	case res = <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("Deploy did not return after a conflicting change")
	}
	logSteps(t, res)
	if res.Outcome != deployer.Failed || !errors.Is(res.Cause, deployer.ErrConflict) {
		t.Errorf("outcome %s, cause %v; want failed with ErrConflict", res.Outcome, res.Cause)
	}
	if res.Running != v1.Digest {
		t.Errorf("Result.Running = %s, want %s (v2 never became healthy, v3 had not started)", short(res.Running), short(v1.Digest))
	}
	if hasStep(res, "rollback") {
		t.Error("shipwatch rolled back over someone else's change")
	}
	// The other client's version is what ends up running.
	testenv.Eventually(t, time.Minute, 250*time.Millisecond, func() (bool, string) {
		got := h.running(svc.ID)
		return len(got) == 1 && got[0] == v3.Digest, "waiting for v3 to run"
	})
	if got := h.inspect(svc.ID).Spec.TaskTemplate.ContainerSpec.Image; got != v3.Familiar() {
		t.Errorf("spec image = %s, want the other client's %s", got, v3.Familiar())
	}
}

// A new version that never becomes healthy keeps Swarm's updater waiting
// forever; shipwatch's deadline ends the wait and rolls back.
func TestDeployDeadlineRollsBack(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	health := &testenv.Health{Interval: 250 * time.Millisecond, Timeout: time.Second, StartPeriod: 5 * time.Minute, Retries: 3}
	v1 := h.push("1.0.0", testenv.App{Version: "1.0.0", Health: testenv.FastHealth})
	never := h.push("1.1.0", testenv.App{Version: "1.1.0", Mode: "slow", Slow: time.Hour, Health: health})
	svc := h.service(v1, func(s *swarm.ServiceSpec) {
		s.UpdateConfig = fastUpdate(swarm.UpdateOrderStartFirst)
		s.RollbackConfig = fastRollback()
	})
	start := time.Now()
	res := h.deployer(swarmdeployer.Options{Deadline: 6 * time.Second}).Deploy(h.ctx, deployer.Plan{Target: h.target(svc.ID), To: never}, nil)
	h.assertResult(res, svc.ID, deployer.RolledBack, v1.Digest)
	if !errors.Is(res.Cause, swarmdeployer.ErrDeadline) {
		t.Errorf("cause = %v, want ErrDeadline", res.Cause)
	}
	var he *deployer.HealthError
	if !errors.As(res.Cause, &he) {
		t.Errorf("cause = %v, want a HealthError (never became healthy)", res.Cause)
	}
	if res.FailedDigest != never.Digest {
		t.Errorf("FailedDigest = %s, want %s", short(res.FailedDigest), short(never.Digest))
	}
	if took := time.Since(start); took < 6*time.Second {
		t.Errorf("deploy returned after %s, before its 6s deadline", took)
	}
}

// A task that no node can take stays pending and Swarm waits for it
// forever. Here the service's own config asks for start-first while
// allowing one replica per node, so the new task can never be placed on
// the single node: the pending time counts against the deadline, and the
// digest is not blamed.
func TestDeployStuckPendingHitsDeadline(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	v1 := h.push("1.0.0", testenv.App{Version: "1.0.0"})
	v2 := h.push("1.1.0", testenv.App{Version: "1.1.0"})
	svc := h.service(v1, func(s *swarm.ServiceSpec) {
		s.UpdateConfig = fastUpdate(swarm.UpdateOrderStartFirst)
		s.RollbackConfig = fastRollback()
		s.TaskTemplate.Placement = &swarm.Placement{MaxReplicas: 1}
	})
	res := h.deployer(swarmdeployer.Options{Deadline: 6 * time.Second}).Deploy(h.ctx, deployer.Plan{Target: h.target(svc.ID), To: v2}, nil)
	h.assertResult(res, svc.ID, deployer.RolledBack, v1.Digest)
	var ue *swarmdeployer.UpdateError
	if !errors.Is(res.Cause, swarmdeployer.ErrDeadline) || !errors.As(res.Cause, &ue) {
		t.Fatalf("cause = %v, want an UpdateError with ErrDeadline", res.Cause)
	}
	pending := false
	for _, f := range ue.Tasks {
		pending = pending || f.State == string(swarm.TaskStatePending)
	}
	if !pending {
		t.Errorf("task failures %v, want the pending task reported", ue.Tasks)
	}
	if res.FailedDigest != "" {
		t.Errorf("FailedDigest = %s, want none: no node could run it, not the image's fault", short(res.FailedDigest))
	}
}

func TestDeployServiceRemovedWhileWaiting(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	health := &testenv.Health{Interval: 250 * time.Millisecond, Timeout: time.Second, StartPeriod: 5 * time.Minute, Retries: 3}
	v1 := h.push("1.0.0", testenv.App{Version: "1.0.0"})
	never := h.push("1.1.0", testenv.App{Version: "1.1.0", Mode: "slow", Slow: time.Hour, Health: health})
	svc := h.service(v1, func(s *swarm.ServiceSpec) { s.UpdateConfig = fastUpdate(swarm.UpdateOrderStartFirst) })

	done := make(chan deployer.Result, 1)
	go func() {
		done <- h.deployer(swarmdeployer.Options{}).Deploy(h.ctx, deployer.Plan{Target: h.target(svc.ID), To: never}, nil)
	}()
	testenv.Eventually(t, 30*time.Second, 100*time.Millisecond, func() (bool, string) {
		s := h.inspect(svc.ID)
		return s.UpdateStatus != nil && s.UpdateStatus.State == swarm.UpdateStateUpdating, "waiting for the update to start"
	})
	testenv.RemoveService(t, h.cli, svc.ID)
	var res deployer.Result
	select {
	case res = <-done:
	case <-time.After(time.Minute):
		t.Fatal("Deploy did not return after the service was removed")
	}
	logSteps(t, res)
	if res.Outcome != deployer.Failed || !errors.Is(res.Cause, deployer.ErrNotFound) {
		t.Errorf("outcome %s, cause %v; want failed with ErrNotFound", res.Outcome, res.Cause)
	}
	if res.Running != "" {
		t.Errorf("Result.Running = %s, want nothing: the service is gone", short(res.Running))
	}
	if _, err := h.cli.ServiceInspect(h.ctx, svc.ID, client.ServiceInspectOptions{}); !cerrdefs.IsNotFound(err) {
		t.Errorf("service inspect after removal: %v, want not found", err)
	}
}

// Jobs run to completion: shipwatch refuses them, untouched.
func TestDeployRefusesJobs(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	v1 := h.push("1.0.0", testenv.App{Version: "1.0.0"})
	v2 := h.push("1.1.0", testenv.App{Version: "1.1.0"})
	one := uint64(1)
	spec := swarm.ServiceSpec{
		Annotations:  swarm.Annotations{Name: testenv.Name("job"), Labels: map[string]string{testenv.LabelKey: "1"}},
		TaskTemplate: swarm.TaskSpec{ContainerSpec: &swarm.ContainerSpec{Image: v1.Familiar()}},
		Mode:         swarm.ServiceMode{ReplicatedJob: &swarm.ReplicatedJob{MaxConcurrent: &one, TotalCompletions: &one}},
	}
	created, err := h.cli.ServiceCreate(h.ctx, client.ServiceCreateOptions{Spec: spec})
	if err != nil {
		t.Fatalf("create job: %v", err)
	}
	t.Cleanup(func() { testenv.RemoveService(t, h.cli, created.ID) })
	before := h.inspect(created.ID)

	res := h.deployer(swarmdeployer.Options{}).Deploy(h.ctx, deployer.Plan{Target: h.target(created.ID), To: v2}, nil)
	logSteps(t, res)
	if res.Outcome != deployer.Failed || !errors.Is(res.Cause, deployer.ErrUnsupported) {
		t.Errorf("outcome %s, cause %v; want failed with ErrUnsupported", res.Outcome, res.Cause)
	}
	after := h.inspect(created.ID)
	if after.Version.Index != before.Version.Index || after.Spec.TaskTemplate.ContainerSpec.Image != v1.Familiar() {
		t.Errorf("job changed: version %d → %d, image %s", before.Version.Index, after.Version.Index, after.Spec.TaskTemplate.ContainerSpec.Image)
	}
}
