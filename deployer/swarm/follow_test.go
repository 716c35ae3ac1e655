package swarm

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/api/types/swarm"

	"github.com/shipwatch/shipwatch/deployer"
)

var errEngineDown = fmt.Errorf("Cannot connect to the Docker daemon: %w", syscall.ECONNREFUSED)

// What Swarm does after the update, step by step, and what shipwatch must
// make of it.
func TestDeployFollowsSwarmToAnOutcome(t *testing.T) {
	lastIsRollback := func(f *fakeEngine) bool { return f.updates[len(f.updates)-1].Rollback == "previous" }
	for _, tc := range []struct {
		name   string
		setup  func(f *fakeEngine, o *Options)
		tick   func(f *fakeEngine, n int)
		cancel int // cancel the caller's context at this tick
		want   deployer.Outcome
		cause  []error
		manual bool
		// running is the digest the Result must report.
		running string
		// ourRollback: shipwatch must have asked Swarm to roll back.
		ourRollback bool
	}{
		{name: "completed", tick: func(f *fakeEngine, n int) {
			switch n {
			case 2:
				f.status(swarm.UpdateStateUpdating, "update in progress")
			case 3:
				f.status(swarm.UpdateStateCompleted, "update completed")
			}
		}, want: deployer.Updated, running: testDigest2},
		{name: "no update status ever (nothing to update)", want: deployer.Updated, running: testDigest2},
		{name: "swarm rolled back", tick: func(f *fakeEngine, n int) {
			switch n {
			case 1:
				f.status(swarm.UpdateStateUpdating, "update in progress")
			case 2:
				f.swarmRollback("update rolled back due to failure or early termination of task t1")
			case 3:
				f.status(swarm.UpdateStateRollbackCompleted, "rollback completed")
			}
		}, want: deployer.RolledBack, cause: []error{ErrSwarmRollback}, running: testDigest1},
		{name: "swarm rolled back but the old version does not come back", setup: func(f *fakeEngine, _ *Options) {
			f.tasks = func(f *fakeEngine) []swarm.Task { // a new task every time: a crash loop
				return []swarm.Task{runningTask(fmt.Sprintf("t%d", f.calls["TaskList"]), specImage(f.svc.Spec))}
			}
		}, tick: func(f *fakeEngine, n int) {
			switch n {
			case 1:
				f.swarmRollback("update rolled back due to failure or early termination of task t1")
			case 2:
				f.status(swarm.UpdateStateRollbackCompleted, "rollback completed")
			}
		}, want: deployer.Failed, cause: []error{ErrSwarmRollback}, manual: true, running: testDigest1},
		{name: "paused, rolled back by shipwatch", tick: func(f *fakeEngine, n int) {
			switch {
			case !lastIsRollback(f) && n == 2:
				f.status(swarm.UpdateStatePaused, "update paused due to failure or early termination of task t1")
			case lastIsRollback(f) && n == 2:
				f.status(swarm.UpdateStateRollbackCompleted, "rollback completed")
			}
		}, want: deployer.RolledBack, cause: []error{ErrPaused}, running: testDigest1, ourRollback: true},
		{name: "swarm's rollback paused", tick: func(f *fakeEngine, n int) {
			switch n {
			case 1:
				f.swarmRollback("update rolled back due to failure or early termination of task t1")
			case 2:
				f.status(swarm.UpdateStateRollbackPaused, "rollback paused due to failure or early termination of task t2")
			}
		}, want: deployer.Failed, manual: true, running: testDigest1},
		{name: "deadline, rolled back by shipwatch", setup: func(f *fakeEngine, o *Options) { o.Deadline = 500 * time.Millisecond },
			tick: func(f *fakeEngine, n int) {
				switch {
				case !lastIsRollback(f) && n == 1:
					f.status(swarm.UpdateStateUpdating, "update in progress")
				case lastIsRollback(f) && n == 1:
					f.status(swarm.UpdateStateRollbackCompleted, "rollback completed")
				}
			}, want: deployer.RolledBack, cause: []error{ErrDeadline}, running: testDigest1, ourRollback: true},
		{name: "deadline, and the rollback never ends", setup: func(f *fakeEngine, o *Options) {
			o.Deadline, o.RollbackDeadline = 400*time.Millisecond, 400*time.Millisecond
		}, tick: func(f *fakeEngine, n int) {
			if !lastIsRollback(f) && n == 1 {
				f.status(swarm.UpdateStateUpdating, "update in progress")
			}
		}, want: deployer.Failed, cause: []error{ErrDeadline}, manual: true, running: testDigest1, ourRollback: true},
		{name: "engine unreachable until the deadline", setup: func(f *fakeEngine, o *Options) { o.Deadline = 400 * time.Millisecond },
			tick: func(f *fakeEngine, n int) { f.inspectErr = errEngineDown },
			want: deployer.Failed, cause: []error{ErrDeadline, syscall.ECONNREFUSED}, manual: true},
		{name: "failure action continue: completed but crash-looping", setup: func(f *fakeEngine, o *Options) {
			o.Deadline = 800 * time.Millisecond
			f.svc.Spec.UpdateConfig = &swarm.UpdateConfig{Parallelism: 1, FailureAction: swarm.UpdateFailureActionContinue, Monitor: 500 * time.Millisecond}
			f.tasks = func(f *fakeEngine) []swarm.Task {
				if f.svc.UpdateStatus != nil && f.svc.UpdateStatus.State == swarm.UpdateStateCompleted {
					return []swarm.Task{runningTask(fmt.Sprintf("t%d", f.calls["TaskList"]), specImage(f.svc.Spec))}
				}
				return tasksOfSpec(f)
			}
		}, tick: func(f *fakeEngine, n int) {
			switch {
			case !lastIsRollback(f) && n == 1:
				f.status(swarm.UpdateStateCompleted, "update completed")
			case lastIsRollback(f) && n == 1:
				f.status(swarm.UpdateStateRollbackCompleted, "rollback completed")
			}
		}, want: deployer.RolledBack, cause: []error{ErrDeadline}, running: testDigest1, ourRollback: true},
		{name: "someone else rolled back", tick: func(f *fakeEngine, n int) {
			if n == 2 {
				cur := f.svc.Spec
				f.svc.Spec, f.svc.PreviousSpec = *f.svc.PreviousSpec, &cur
				f.status(swarm.UpdateStateRollbackStarted, "manually requested rollback")
			}
		}, want: deployer.Failed, cause: []error{deployer.ErrConflict}, running: testDigest1},
		{name: "someone else updated", tick: func(f *fakeEngine, n int) {
			if n == 2 {
				f.svc.Spec.TaskTemplate.ContainerSpec.Image = ref3.String()
				f.svc.UpdateStatus = nil
				f.svc.Version.Index++
			}
		}, want: deployer.Failed, cause: []error{deployer.ErrConflict}, running: testDigest3},
		{name: "someone else re-deployed the old spec", tick: func(f *fakeEngine, n int) {
			if n == 2 {
				f.svc.Spec = *f.svc.PreviousSpec
				f.status(swarm.UpdateStateUpdating, "update in progress")
			}
		}, want: deployer.Failed, cause: []error{deployer.ErrConflict}, running: testDigest1},
		{name: "service removed", tick: func(f *fakeEngine, n int) {
			if n == 2 {
				f.svc = nil
			}
		}, want: deployer.Failed, cause: []error{deployer.ErrNotFound}},
		{name: "interrupted: rolled back by shipwatch", cancel: 2, tick: func(f *fakeEngine, n int) {
			switch {
			case !lastIsRollback(f) && n == 1:
				f.status(swarm.UpdateStateUpdating, "update in progress")
			case lastIsRollback(f) && n == 1:
				f.status(swarm.UpdateStateRollbackCompleted, "rollback completed")
			}
		}, want: deployer.RolledBack, cause: []error{ErrInterrupted, context.Canceled}, running: testDigest1, ourRollback: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(ref1.String())
			f.tasks = tasksOfSpec
			var opts Options
			if tc.setup != nil {
				tc.setup(f, &opts)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			f.tick = func(f *fakeEngine, n int) {
				if tc.cancel > 0 && n == tc.cancel && !lastIsRollback(f) {
					cancel()
				}
				if tc.tick != nil {
					tc.tick(f, n)
				}
			}
			start := time.Now()
			res := newFakeDeployer(t, f, opts).Deploy(ctx, deployer.Plan{Target: fakeTarget(f), To: ref2}, nil)
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("took %s: the follow is not bounded", took)
			}
			if res.Outcome != tc.want || res.ManualAction != tc.manual {
				t.Errorf("outcome %s, manual %v (cause %v); want %s, manual %v", res.Outcome, res.ManualAction, res.Cause, tc.want, tc.manual)
			}
			for _, c := range tc.cause {
				if !errors.Is(res.Cause, c) {
					t.Errorf("cause = %v, want %v in it", res.Cause, c)
				}
			}
			if len(tc.cause) == 0 && tc.want == deployer.Updated && res.Cause != nil {
				t.Errorf("cause = %v, want none", res.Cause)
			}
			if res.Running != tc.running {
				t.Errorf("Running = %q, want %q", res.Running, tc.running)
			}
			rolled := false
			for _, u := range f.updates {
				if u.Rollback == "previous" {
					rolled = true
					if u.RegistryAuthFrom != swarm.RegistryAuthFromPreviousSpec {
						t.Errorf("rollback with registry auth from %q, want previous-spec", u.RegistryAuthFrom)
					}
				}
			}
			if rolled != tc.ourRollback {
				t.Errorf("shipwatch asked for a rollback: %v, want %v", rolled, tc.ourRollback)
			}
			if f.updates[0].Spec.TaskTemplate.ContainerSpec.Image != ref2.Familiar() {
				t.Errorf("update image = %s, want %s", f.updates[0].Spec.TaskTemplate.ContainerSpec.Image, ref2.Familiar())
			}
		})
	}
}
