package swarm_test

import (
	"errors"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moby/moby/api/types/swarm"

	"github.com/shipwatch/shipwatch/deployer"
	swarmdeployer "github.com/shipwatch/shipwatch/deployer/swarm"
	"github.com/shipwatch/shipwatch/internal/testenv"
)

func TestDeployHealthyUpdate(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	v1 := h.push("1.0.0", testenv.App{Version: "1.0.0", Health: testenv.FastHealth})
	v2 := h.push("1.1.0", testenv.App{Version: "1.1.0", Health: testenv.FastHealth})
	svc := h.service(v1, func(s *swarm.ServiceSpec) {
		s.Mode = replicas(2)
		s.Labels[swarmdeployer.LabelStackImage] = "as/the-stack-file:wrote"
	})

	var steps []deployer.Step
	res := h.deployer(swarmdeployer.Options{}).Deploy(h.ctx, deployer.Plan{Target: h.target(svc.ID), To: v2}, func(s deployer.Step) { steps = append(steps, s) })
	h.assertResult(res, svc.ID, deployer.Updated, v2.Digest)
	if res.From != v1.Digest || res.To != v2.Digest {
		t.Errorf("From, To = %s, %s; want %s, %s", short(res.From), short(res.To), short(v1.Digest), short(v2.Digest))
	}
	if len(steps) != len(res.Steps) {
		t.Errorf("progress saw %d steps, result has %d", len(steps), len(res.Steps))
	}
	after := h.inspect(svc.ID)
	if got, want := after.Spec.TaskTemplate.ContainerSpec.Image, v2.Familiar(); got != want {
		t.Errorf("spec image = %s, want %s (repo:tag@digest, never a bare tag)", got, want)
	}
	if got := after.Spec.Labels[swarmdeployer.LabelStackImage]; got != "as/the-stack-file:wrote" {
		t.Errorf("label %s = %q, want it left as the stack file wrote it", swarmdeployer.LabelStackImage, got)
	}
	// The service had no update_config: shipwatch's safe defaults apply.
	uc := after.Spec.UpdateConfig
	if uc == nil || uc.FailureAction != swarm.UpdateFailureActionRollback || uc.Order != swarm.UpdateOrderStartFirst || uc.Monitor != 2*time.Second {
		t.Errorf("update config = %+v, want failure action rollback, start-first, monitor 2s", uc)
	}
	if got := len(h.running(svc.ID)); got != 2 {
		t.Errorf("%d tasks run, want 2", got)
	}
}

func TestDeployCrashLoopIsRolledBack(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	v1 := h.push("1.0.0", testenv.App{Version: "1.0.0"})
	bad := h.push("1.1.0", testenv.App{Version: "1.1.0", Mode: "crash", CrashAfter: 200 * time.Millisecond})
	svc := h.service(v1, func(s *swarm.ServiceSpec) {
		s.UpdateConfig = fastUpdate(swarm.UpdateOrderStartFirst)
		s.RollbackConfig = fastRollback()
	})

	res := h.deployer(swarmdeployer.Options{}).Deploy(h.ctx, deployer.Plan{Target: h.target(svc.ID), To: bad}, nil)
	h.assertResult(res, svc.ID, deployer.RolledBack, v1.Digest)
	if !errors.Is(res.Cause, swarmdeployer.ErrSwarmRollback) {
		t.Errorf("cause = %v, want ErrSwarmRollback", res.Cause)
	}
	var he *deployer.HealthError
	if !errors.As(res.Cause, &he) {
		t.Errorf("cause = %v, want a *deployer.HealthError inside", res.Cause)
	}
	if res.FailedDigest != bad.Digest {
		t.Errorf("FailedDigest = %s, want %s (the image crashed: quarantine it)", short(res.FailedDigest), short(bad.Digest))
	}
	var ue *swarmdeployer.UpdateError
	if !errors.As(res.Cause, &ue) || len(ue.Tasks) == 0 {
		t.Errorf("cause = %v, want an UpdateError listing the failed tasks", res.Cause)
	}
}

func TestDeployFailingHealthcheckIsRolledBack(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	v1 := h.push("1.0.0", testenv.App{Version: "1.0.0", Health: testenv.FastHealth})
	bad := h.push("1.1.0", testenv.App{Version: "1.1.0", Mode: "unhealthy", Health: testenv.FastHealth})
	svc := h.service(v1, func(s *swarm.ServiceSpec) {
		s.UpdateConfig = fastUpdate(swarm.UpdateOrderStartFirst)
		s.RollbackConfig = fastRollback()
	})

	res := h.deployer(swarmdeployer.Options{}).Deploy(h.ctx, deployer.Plan{Target: h.target(svc.ID), To: bad}, nil)
	h.assertResult(res, svc.ID, deployer.RolledBack, v1.Digest)
	var he *deployer.HealthError
	if !errors.As(res.Cause, &he) || !strings.Contains(he.Reason, "unhealthy") {
		t.Errorf("cause = %v, want a HealthError saying unhealthy", res.Cause)
	}
	if res.FailedDigest != bad.Digest {
		t.Errorf("FailedDigest = %s, want %s", short(res.FailedDigest), short(bad.Digest))
	}
}

// The registry serves the manifest to the pre-flight check and then stops
// serving it, as a registry that loses an image (or a node that cannot
// reach it) would: the nodes cannot pull, Swarm rolls back, and the digest
// is not blamed (not quarantined).
func TestDeployUnpullableImageIsRolledBack(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	v1 := h.push("1.0.0", testenv.App{Version: "1.0.0"})
	gone := h.push("1.1.0", testenv.App{Version: "1.1.0"})
	svc := h.service(v1, func(s *swarm.ServiceSpec) {
		s.UpdateConfig = fastUpdate(swarm.UpdateOrderStopFirst)
		s.RollbackConfig = fastRollback()
	})
	var checked atomic.Bool
	h.reg.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if checked.Load() && strings.Contains(r.URL.Path, "/manifests/") && (strings.HasSuffix(r.URL.Path, gone.Digest) || strings.HasSuffix(r.URL.Path, "/1.1.0")) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}`))
			return true
		}
		return false
	})

	res := h.deployer(swarmdeployer.Options{}).Deploy(h.ctx, deployer.Plan{Target: h.target(svc.ID), To: gone}, func(s deployer.Step) {
		if s.Name == "registry" {
			checked.Store(true)
		}
	})
	h.assertResult(res, svc.ID, deployer.RolledBack, v1.Digest)
	if !errors.Is(res.Cause, swarmdeployer.ErrPull) {
		t.Errorf("cause = %v, want ErrPull", res.Cause)
	}
	if res.FailedDigest != "" {
		t.Errorf("FailedDigest = %s, want none: a pull failure is not the image's fault", short(res.FailedDigest))
	}
}

func TestDeploySlowHealthyStartIsNotRolledBack(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	health := &testenv.Health{Interval: 250 * time.Millisecond, Timeout: time.Second, StartPeriod: 15 * time.Second, Retries: 3}
	v1 := h.push("1.0.0", testenv.App{Version: "1.0.0", Health: testenv.FastHealth})
	slow := h.push("1.1.0", testenv.App{Version: "1.1.0", Mode: "slow", Slow: 4 * time.Second, Health: health})
	svc := h.service(v1, func(s *swarm.ServiceSpec) {
		s.UpdateConfig = fastUpdate(swarm.UpdateOrderStartFirst)
		s.RollbackConfig = fastRollback()
	})

	start := time.Now()
	res := h.deployer(swarmdeployer.Options{}).Deploy(h.ctx, deployer.Plan{Target: h.target(svc.ID), To: slow}, nil)
	h.assertResult(res, svc.ID, deployer.Updated, slow.Digest)
	if took := time.Since(start); took < 4*time.Second {
		t.Errorf("deploy took %s: it cannot have waited for the 4s slow start", took)
	}
}

// start-first starts the new task before stopping the old one; stop-first
// the other way round. The task timestamps tell which happened.
func TestDeployRespectsUpdateOrder(t *testing.T) {
	t.Parallel()
	for _, order := range []swarm.UpdateOrder{swarm.UpdateOrderStartFirst, swarm.UpdateOrderStopFirst} {
		t.Run(string(order), func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			v1 := h.push("1.0.0", testenv.App{Version: "1.0.0", Health: testenv.FastHealth})
			v2 := h.push("1.1.0", testenv.App{Version: "1.1.0", Health: testenv.FastHealth})
			svc := h.service(v1, func(s *swarm.ServiceSpec) {
				s.UpdateConfig = fastUpdate(order)
				s.RollbackConfig = fastRollback()
			})
			res := h.deployer(swarmdeployer.Options{}).Deploy(h.ctx, deployer.Plan{Target: h.target(svc.ID), To: v2}, nil)
			h.assertResult(res, svc.ID, deployer.Updated, v2.Digest)
			if got := h.inspect(svc.ID).Spec.UpdateConfig.Order; got != order {
				t.Errorf("order = %s, want the service's own %s kept", got, order)
			}

			var oldStopped, newRunning time.Time
			for _, tk := range h.tasks(svc.ID) {
				switch {
				case tk.Spec.ContainerSpec.Image == v1.Familiar() && tk.DesiredState == swarm.TaskStateShutdown:
					oldStopped = tk.Status.Timestamp // last state change: its shutdown
				case tk.Spec.ContainerSpec.Image == v2.Familiar() && tk.Status.State == swarm.TaskStateRunning:
					newRunning = tk.Status.Timestamp // running since
				}
			}
			if oldStopped.IsZero() || newRunning.IsZero() {
				t.Fatalf("old task stopped at %v, new task running at %v: want both", oldStopped, newRunning)
			}
			if order == swarm.UpdateOrderStartFirst && oldStopped.Before(newRunning) {
				t.Errorf("start-first: old task stopped at %s, before the new one ran at %s", oldStopped.Format(time.StampMilli), newRunning.Format(time.StampMilli))
			}
			if order == swarm.UpdateOrderStopFirst && newRunning.Before(oldStopped) {
				t.Errorf("stop-first: new task ran at %s, before the old one stopped at %s", newRunning.Format(time.StampMilli), oldStopped.Format(time.StampMilli))
			}
		})
	}
}

// Without an update_config of its own, a service with a host-mode published
// port gets stop-first: a second task could not bind the port on the node.
func TestDeployDefaultsToStopFirstForHostPorts(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	v1 := h.push("1.0.0", testenv.App{Version: "1.0.0", Health: testenv.FastHealth})
	v2 := h.push("1.1.0", testenv.App{Version: "1.1.0", Health: testenv.FastHealth})
	port := freePort(t)
	svc := h.service(v1, func(s *swarm.ServiceSpec) {
		s.EndpointSpec = &swarm.EndpointSpec{Ports: []swarm.PortConfig{{Protocol: "tcp", TargetPort: 8080, PublishedPort: port, PublishMode: swarm.PortConfigPublishModeHost}}}
	})
	res := h.deployer(swarmdeployer.Options{}).Deploy(h.ctx, deployer.Plan{Target: h.target(svc.ID), To: v2}, nil)
	h.assertResult(res, svc.ID, deployer.Updated, v2.Digest)
	uc := h.inspect(svc.ID).Spec.UpdateConfig
	if uc == nil || uc.Order != swarm.UpdateOrderStopFirst || uc.FailureAction != swarm.UpdateFailureActionRollback {
		t.Errorf("update config = %+v, want stop-first with failure action rollback", uc)
	}
}

func freePort(t *testing.T) uint32 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return uint32(l.Addr().(*net.TCPAddr).Port)
}

// A service whose update_config says failure action "pause": Swarm pauses
// the failed update and shipwatch rolls it back itself.
func TestDeployPausedUpdateIsRolledBackByShipwatch(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	v1 := h.push("1.0.0", testenv.App{Version: "1.0.0"})
	bad := h.push("1.1.0", testenv.App{Version: "1.1.0", Mode: "crash", CrashAfter: 200 * time.Millisecond})
	svc := h.service(v1, func(s *swarm.ServiceSpec) {
		s.UpdateConfig = fastUpdate(swarm.UpdateOrderStopFirst)
		s.UpdateConfig.FailureAction = swarm.UpdateFailureActionPause
		s.RollbackConfig = fastRollback()
	})
	res := h.deployer(swarmdeployer.Options{}).Deploy(h.ctx, deployer.Plan{Target: h.target(svc.ID), To: bad}, nil)
	h.assertResult(res, svc.ID, deployer.RolledBack, v1.Digest)
	if !errors.Is(res.Cause, swarmdeployer.ErrPaused) {
		t.Errorf("cause = %v, want ErrPaused", res.Cause)
	}
	if !hasStep(res, "rollback") {
		t.Errorf("no rollback step: shipwatch did not roll back the paused update")
	}
	if st := h.inspect(svc.ID).UpdateStatus; st == nil || st.State != swarm.UpdateStateRollbackCompleted {
		t.Errorf("update status = %+v, want rollback_completed", st)
	}
}

func hasStep(res deployer.Result, name string) bool {
	for _, s := range res.Steps {
		if s.Name == name {
			return true
		}
	}
	return false
}

// Swarm rolls back to the old version and that one fails too: the rollback
// pauses, and a human must look.
func TestDeployFailedRollbackNeedsManualAction(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	// v1 runs a few seconds, long enough to be created, then crashes.
	v1 := h.push("1.0.0", testenv.App{Version: "1.0.0", Mode: "crash", CrashAfter: 3 * time.Second})
	bad := h.push("1.1.0", testenv.App{Version: "1.1.0", Mode: "crash", CrashAfter: 200 * time.Millisecond})
	svc := h.service(v1, func(s *swarm.ServiceSpec) {
		s.UpdateConfig = fastUpdate(swarm.UpdateOrderStopFirst)
		s.RollbackConfig = fastRollback()
		s.RollbackConfig.Monitor = 6 * time.Second
		delay := 100 * time.Millisecond
		s.TaskTemplate.RestartPolicy = &swarm.RestartPolicy{Delay: &delay}
	})
	res := h.deployer(swarmdeployer.Options{RollbackDeadline: 20 * time.Second}).Deploy(h.ctx, deployer.Plan{Target: h.target(svc.ID), To: bad}, nil)
	logSteps(t, res)
	if res.Outcome != deployer.Failed || !res.ManualAction {
		t.Errorf("outcome %s, manual action %v; want failed with manual action", res.Outcome, res.ManualAction)
	}
	if res.Running == bad.Digest {
		t.Errorf("Result.Running = the failed digest %s", short(bad.Digest))
	}
	if got := h.inspect(svc.ID).Spec.TaskTemplate.ContainerSpec.Image; got != v1.Familiar() {
		t.Errorf("spec image = %s, want %s (Swarm's rollback restored the spec)", got, v1.Familiar())
	}
}
