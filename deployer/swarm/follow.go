package swarm

import (
	"context"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"
)

// phase is where a followed update ended.
type phase int

const (
	phaseConverged      phase = iota // the service runs the wanted spec
	phaseRolledBack                  // Swarm rolled the update back by itself and the previous version runs
	phasePaused                      // Swarm paused the update
	phaseRollbackPaused              // Swarm paused a rollback: a human must look
	phaseRollbackStuck               // Swarm's rollback did not bring the previous version back in time
	phaseDeadline                    // no outcome within the deadline
	phaseConflict                    // someone else changed the service
	phaseGone                        // the service was removed
	phaseInterrupted                 // the caller's context ended
)

var phaseNames = map[phase]string{
	phaseConverged: "converged", phaseRolledBack: "rolled back by swarm", phasePaused: "paused",
	phaseRollbackPaused: "rollback paused", phaseRollbackStuck: "rollback did not restore the service",
	phaseDeadline: "deadline", phaseConflict: "changed by someone else", phaseGone: "removed",
	phaseInterrupted: "interrupted",
}

// expectation is what a follower waits for.
type expectation struct {
	want      string // key of the spec the service should converge on
	wantImage string // its image, as stored in the spec
	prev      string // key of the spec a rollback restores ("" if unknown)
	prevImage string
	// ours says that we asked for a rollback (Rollback: "previous"): the
	// rollback_* states belong to us and rollback_completed is success.
	ours     bool
	minTasks int // running tasks needed to call the service converged
	deadline time.Time
	// settle is how long the wanted version must run (the same tasks, none
	// replaced) before it counts: used with failure action "continue", where
	// Swarm completes an update even when its tasks keep failing, and for
	// rollbacks, which Swarm completes without monitoring when the restart
	// logic already recreated the old tasks.
	settle time.Duration
	// restoreSettle is settle for the previous version after Swarm's own
	// rollback, and rollbackTime extends the deadline when that rollback
	// starts.
	restoreSettle time.Duration
	rollbackTime  time.Duration
}

// observation is the last thing the follower saw.
type observation struct {
	phase   phase
	svc     swarm.Service
	tasks   []swarm.Task // nil when not read at the end
	state   swarm.UpdateState
	message string
	err     error // the last engine error, for a deadline reached while the engine failed
	// swarmRollback: Swarm was rolling our update back by itself.
	swarmRollback bool
}

// follower reads a service until it reaches an outcome.
type follower struct {
	d    *Deployer
	id   string
	run  *run
	wake <-chan struct{}
	stop <-chan struct{} // the caller's context: stop following and let the caller roll back

	stableSince time.Time // since when the same tasks run the wanted image
	stableTasks string
}

// follow polls the service (and, when needed, its tasks) at the poll
// interval or when an event wakes it, until exp is met or something else
// happens. ctx bounds the engine calls; it is not the caller's context, so
// that a rollback can still be followed after the caller gave up.
func (f *follower) follow(ctx context.Context, exp expectation) observation {
	var (
		last     swarm.UpdateState = "-"
		lastErr  error
		extended bool
	)
	for {
		obs, done := f.look(ctx, exp)
		if obs.err != nil {
			lastErr = obs.err
		} else {
			lastErr = nil
			if obs.state != last {
				f.run.step("swarm "+stateName(obs.state), time.Now(), obs.message, nil)
				f.d.log.Debug().Str("service", f.id).Str("state", string(obs.state)).Str("status", obs.message).Msg("swarm update state")
				last = obs.state
			}
		}
		if done {
			return obs
		}
		if obs.swarmRollback && !extended {
			// Swarm's rollback gets its own time, whatever the update used.
			extended = true
			if d := time.Now().Add(exp.rollbackTime); d.After(exp.deadline) {
				exp.deadline = d
			}
		}
		if time.Now().After(exp.deadline) {
			obs.phase, obs.err = phaseDeadline, lastErr
			if obs.swarmRollback {
				obs.phase = phaseRollbackStuck
			}
			return obs
		}
		timer := time.NewTimer(f.d.poll)
		select {
		case <-f.stop:
			timer.Stop()
			obs.phase = phaseInterrupted
			return obs
		case <-ctx.Done():
			timer.Stop()
			obs.phase, obs.err = phaseInterrupted, ctx.Err()
			return obs
		case <-f.wake:
			timer.Stop()
		case <-timer.C:
		}
	}
}

func stateName(s swarm.UpdateState) string {
	if s == "" {
		return "no update status"
	}
	return string(s)
}

// look reads the service once and says whether the follow is over.
func (f *follower) look(ctx context.Context, exp expectation) (observation, bool) {
	res, err := f.d.eng.ServiceInspect(ctx, f.id, client.ServiceInspectOptions{})
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return observation{phase: phaseGone, err: err}, true
		}
		// A manager election or a slow engine: keep trying until the deadline.
		return observation{err: err}, false
	}
	svc := res.Service
	obs := observation{svc: svc}
	if svc.UpdateStatus != nil {
		obs.state, obs.message = svc.UpdateStatus.State, svc.UpdateStatus.Message
	}
	key := specKey(svc.Spec)
	manual := strings.Contains(obs.message, "manually requested")
	rollbackState := obs.state == swarm.UpdateStateRollbackStarted || obs.state == swarm.UpdateStateRollbackCompleted || obs.state == swarm.UpdateStateRollbackPaused

	switch {
	case key == exp.want && (!rollbackState || exp.ours):
		switch obs.state {
		case swarm.UpdateStatePaused:
			if exp.ours {
				// Our rollback request was overtaken: someone else updated
				// to the same spec and it paused. Not ours to judge.
				obs.phase = phaseConflict
				return obs, true
			}
			obs.phase = phasePaused
			return obs, true
		case swarm.UpdateStateRollbackPaused:
			obs.phase = phaseRollbackPaused
			return obs, true
		case "", swarm.UpdateStateCompleted, swarm.UpdateStateRollbackCompleted:
			// No status at all: the update changed no task (zero replicas,
			// no node eligible) or Swarm has not picked it up yet; the tasks
			// tell which.
			return f.settled(ctx, obs, exp.wantImage, exp.minTasks, exp.settle, phaseConverged)
		}
		f.stableSince = time.Time{}
		return obs, false // updating, rollback_started
	case key == exp.prev && exp.prev != "" && !exp.ours && rollbackState && !manual:
		// Swarm's automatic rollback of our update.
		obs.swarmRollback = true
		switch obs.state {
		case swarm.UpdateStateRollbackCompleted:
			return f.settled(ctx, obs, exp.prevImage, exp.minTasks, exp.restoreSettle, phaseRolledBack)
		case swarm.UpdateStateRollbackPaused:
			obs.phase = phaseRollbackPaused
			return obs, true
		}
		return obs, false
	default:
		// Any other spec, the old spec put back by someone else, or a
		// rollback somebody else asked for: not ours to fight.
		obs.phase = phaseConflict
		return obs, true
	}
}

// settled reads the tasks and ends the follow with done once image has run
// on the same tasks for settle.
func (f *follower) settled(ctx context.Context, obs observation, image string, minTasks int, settle time.Duration, done phase) (observation, bool) {
	tasks, err := f.tasks(ctx)
	if err != nil {
		obs.err = err
		return obs, false
	}
	obs.tasks = tasks
	if !converged(tasks, image, minTasks) {
		f.stableSince = time.Time{}
		return obs, false
	}
	ids := runningIDs(tasks)
	if f.stableSince.IsZero() || ids != f.stableTasks {
		f.stableSince, f.stableTasks = time.Now(), ids
	}
	if time.Since(f.stableSince) < settle {
		return obs, false
	}
	obs.phase = done
	return obs, true
}

func (f *follower) tasks(ctx context.Context) ([]swarm.Task, error) {
	res, err := f.d.eng.TaskList(ctx, client.TaskListOptions{Filters: make(client.Filters).Add("service", f.id)})
	if err != nil {
		return nil, err
	}
	return res.Items, nil
}

// subscribe wakes the follower on every event of the service (Swarm emits
// one per update-state change), so outcomes are seen without waiting for
// the next poll. If the events stream fails, polling alone continues.
func (d *Deployer) subscribe(ctx context.Context, serviceID string) <-chan struct{} {
	wake := make(chan struct{}, 1)
	ev := d.eng.Events(ctx, client.EventsListOptions{Filters: make(client.Filters).Add("type", "service").Add("service", serviceID)})
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case err := <-ev.Err:
				if err != nil && ctx.Err() == nil {
					d.log.Debug().Err(err).Str("service", serviceID).Msg("swarm events stream ended; polling only")
				}
				return
			case _, ok := <-ev.Messages:
				if !ok {
					return
				}
				select {
				case wake <- struct{}{}:
				default:
				}
			}
		}
	}()
	return wake
}
