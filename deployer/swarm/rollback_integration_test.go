package swarm_test

import (
	"errors"
	"testing"
	"time"

	"github.com/moby/moby/api/types/swarm"

	"github.com/shipwatch/shipwatch/deployer"
	swarmdeployer "github.com/shipwatch/shipwatch/deployer/swarm"
	"github.com/shipwatch/shipwatch/internal/testenv"
)

func TestRollbackByHandRestoresThePreviousSpec(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	v1 := h.push("1.0.0", testenv.App{Version: "1.0.0", Health: testenv.FastHealth})
	v2 := h.push("1.1.0", testenv.App{Version: "1.1.0", Health: testenv.FastHealth})
	svc := h.service(v1, func(s *swarm.ServiceSpec) {
		s.UpdateConfig = fastUpdate(swarm.UpdateOrderStartFirst)
		s.RollbackConfig = fastRollback()
	})
	d := h.deployer(swarmdeployer.Options{})
	res := d.Deploy(h.ctx, deployer.Plan{Target: h.target(svc.ID), To: v2}, nil)
	h.assertResult(res, svc.ID, deployer.Updated, v2.Digest)

	res = d.Rollback(h.ctx, h.target(svc.ID), "", nil)
	h.assertResult(res, svc.ID, deployer.RolledBack, v1.Digest)
	if res.Cause != nil {
		t.Errorf("cause = %v, want none: the rollback by hand succeeded", res.Cause)
	}
	if res.From != v2.Digest || res.To != v1.Digest {
		t.Errorf("From, To = %s, %s; want %s, %s", short(res.From), short(res.To), short(v2.Digest), short(v1.Digest))
	}
	if got := h.inspect(svc.ID).Spec.TaskTemplate.ContainerSpec.Image; got != v1.Familiar() {
		t.Errorf("spec image = %s, want %s", got, v1.Familiar())
	}

	// Rolling back to what runs already changes nothing.
	version := h.inspect(svc.ID).Version.Index
	res = d.Rollback(h.ctx, h.target(svc.ID), v1.Digest, nil)
	h.assertResult(res, svc.ID, deployer.UpToDate, v1.Digest)
	if got := h.inspect(svc.ID).Version.Index; got != version {
		t.Errorf("spec version %d → %d: an up-to-date rollback updated the service", version, got)
	}
}

// After Swarm rolled an update back by itself, its previous spec is gone:
// a rollback by hand needs the digest from history, and gets there.
func TestRollbackByHandAfterAnAutomaticRollback(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	v1 := h.push("1.0.0", testenv.App{Version: "1.0.0", Health: testenv.FastHealth})
	v2 := h.push("1.1.0", testenv.App{Version: "1.1.0", Health: testenv.FastHealth})
	bad := h.push("1.2.0", testenv.App{Version: "1.2.0", Mode: "crash", CrashAfter: 200 * time.Millisecond})
	svc := h.service(v1, func(s *swarm.ServiceSpec) {
		s.UpdateConfig = fastUpdate(swarm.UpdateOrderStartFirst)
		s.RollbackConfig = fastRollback()
	})
	d := h.deployer(swarmdeployer.Options{})
	res := d.Deploy(h.ctx, deployer.Plan{Target: h.target(svc.ID), To: v2}, nil)
	h.assertResult(res, svc.ID, deployer.Updated, v2.Digest)
	res = d.Deploy(h.ctx, deployer.Plan{Target: h.target(svc.ID), To: bad}, nil)
	h.assertResult(res, svc.ID, deployer.RolledBack, v2.Digest)
	if h.inspect(svc.ID).PreviousSpec != nil {
		t.Fatal("Swarm kept a previous spec after its automatic rollback; this test needs it gone")
	}

	version := h.inspect(svc.ID).Version.Index
	res = d.Rollback(h.ctx, h.target(svc.ID), "", nil)
	h.assertResult(res, svc.ID, deployer.Failed, v2.Digest)
	if !errors.Is(res.Cause, deployer.ErrNoPrevious) {
		t.Errorf("cause = %v, want ErrNoPrevious", res.Cause)
	}
	if got := h.inspect(svc.ID).Version.Index; got != version {
		t.Errorf("spec version %d → %d: a refused rollback changed the service", version, got)
	}
	if got := h.running(svc.ID); len(got) != 1 || got[0] != v2.Digest {
		t.Errorf("running %v, want v2 untouched", got)
	}

	res = d.Rollback(h.ctx, h.target(svc.ID), v1.Digest, nil)
	h.assertResult(res, svc.ID, deployer.RolledBack, v1.Digest)
	if got, want := h.inspect(svc.ID).Spec.TaskTemplate.ContainerSpec.Image, v1.WithTag("").WithDigest(v1.Digest).Familiar(); got != want {
		t.Errorf("spec image = %s, want %s", got, want)
	}
}

// A rollback by hand to a digest that crashes is not a success: Swarm
// restores the version that ran, and the rollback reports Failed.
func TestRollbackByHandToABrokenDigestFails(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	v1 := h.push("1.0.0", testenv.App{Version: "1.0.0", Health: testenv.FastHealth})
	broken := h.push("0.9.0", testenv.App{Version: "0.9.0", Mode: "crash", CrashAfter: 200 * time.Millisecond})
	svc := h.service(v1, func(s *swarm.ServiceSpec) {
		s.UpdateConfig = fastUpdate(swarm.UpdateOrderStartFirst)
		s.RollbackConfig = fastRollback()
	})
	res := h.deployer(swarmdeployer.Options{}).Rollback(h.ctx, h.target(svc.ID), broken.String(), nil)
	h.assertResult(res, svc.ID, deployer.Failed, v1.Digest)
	if !errors.Is(res.Cause, swarmdeployer.ErrSwarmRollback) {
		t.Errorf("cause = %v, want ErrSwarmRollback", res.Cause)
	}
}
