package swarm

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/imageref"
)

// update applies change to the service's current spec, re-reading the
// service and retrying when Swarm answers "update out of sequence". stillOK
// rejects a re-read service that someone else changed meanwhile. It returns
// the service as it was just before the update that was accepted.
func (d *Deployer) update(ctx context.Context, svc swarm.Service, opts func(swarm.Service) (client.ServiceUpdateOptions, error), stillOK func(swarm.Service) error) (swarm.Service, error) {
	for attempt := 1; ; attempt++ {
		o, err := opts(svc)
		if err != nil {
			return svc, err
		}
		_, err = d.eng.ServiceUpdate(ctx, svc.ID, o)
		if err == nil {
			return svc, nil
		}
		if !isOutOfSequence(err) || attempt == updateAttempts {
			return svc, engineError("update service "+svc.Spec.Name, err)
		}
		d.log.Debug().Str("service", svc.Spec.Name).Int("attempt", attempt).Msg("update out of sequence; re-reading the service")
		if svc, err = d.inspect(ctx, svc.ID); err != nil {
			return svc, err
		}
		if err := stillOK(svc); err != nil {
			return svc, err
		}
	}
}

// apply updates the service to target and follows the update to an
// outcome. With byHand, the update is a rollback by hand to an earlier
// digest: reaching it is RolledBack, and not reaching it is Failed.
func (d *Deployer) apply(ctx context.Context, r *run, svc swarm.Service, target imageref.Ref, auth string, byHand bool) deployer.Result {
	res := d.applyUpdate(ctx, r, svc, target, auth)
	if byHand {
		switch {
		case res.Outcome == deployer.Updated:
			res.Outcome = deployer.RolledBack
		case res.Outcome == deployer.RolledBack:
			// The version before this rollback runs again: the rollback
			// itself failed.
			res.Outcome = deployer.Failed
		}
	}
	return res
}

func (d *Deployer) applyUpdate(ctx context.Context, r *run, svc swarm.Service, target imageref.Ref, auth string) deployer.Result {
	start := time.Now()
	to := pinnedImage(target)
	// Follow (and roll back) under a context of our own: a caller that stops
	// waiting must not leave the update half done (STYLE rule 10).
	fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()

	before, err := d.taskList(ctx, svc.ID)
	if err != nil {
		r.step("update", start, "", err)
		return r.fail(err)
	}
	known := make(map[string]bool, len(before))
	for _, t := range before {
		known[t.ID] = true
	}
	baseline := countRunning(before)
	wake := d.subscribe(fctx, svc.ID)

	var notes []string
	prior, err := d.update(ctx, svc, func(s swarm.Service) (client.ServiceUpdateOptions, error) {
		spec, err := withImage(s.Spec, to)
		if err != nil {
			return client.ServiceUpdateOptions{}, fmt.Errorf("service %s: %w", s.Spec.Name, err)
		}
		notes = applyDefaults(&spec, d.opts.Defaults)
		return client.ServiceUpdateOptions{Version: s.Version, Spec: spec, EncodedRegistryAuth: auth}, nil
	}, func(s swarm.Service) error {
		if err := deployable(s); err != nil {
			return err
		}
		if img := specImage(s.Spec); img != specImage(svc.Spec) {
			return fmt.Errorf("service %s changed to %s while shipwatch prepared its update: %w", s.Spec.Name, img, deployer.ErrConflict)
		}
		return nil
	})
	if err != nil {
		r.step("update", start, "", err)
		return r.fail(err)
	}
	// From here on, what runs is known only from what is observed.
	r.res.Running = ""
	after, err := d.inspect(fctx, svc.ID)
	if err != nil {
		r.step("update", start, "", err)
		r.res.ManualAction = true
		return r.fail(fmt.Errorf("the update of %s was sent but its state cannot be read; look at docker service ps %s: %w", svc.Spec.Name, svc.Spec.Name, err))
	}
	ours, wantImage := specKey(after.Spec), specImage(after.Spec)
	if digestOf(wantImage) != target.Digest {
		if !swarmRollingBack(after, prior) {
			// Someone else's update landed right after ours.
			err := fmt.Errorf("service %s runs %s right after shipwatch set %s: %w", svc.Spec.Name, wantImage, to, deployer.ErrConflict)
			r.step("update", start, "", err)
			return r.fail(err)
		}
		// Swarm rolled our update back before we could even read it: follow
		// its rollback (our spec is never seen again).
		ours, wantImage = "", to
	}
	detail := "image " + wantImage
	if len(notes) > 0 {
		detail += "; " + strings.Join(notes, "; ")
	}
	r.step("update", start, detail, nil)

	deadline := d.opts.Deadline
	if deadline == 0 {
		deadline = deriveDeadline(after.Spec, max(len(activeSlots(before)), desiredReplicas(after.Spec)), false)
	}
	minTasks := baseline
	if n := desiredReplicas(after.Spec); n >= 0 && n < minTasks {
		minTasks = n
	}
	var settle time.Duration
	if cfg := effectiveConfig(after.Spec, false); cfg.FailureAction == swarm.UpdateFailureActionContinue {
		settle = cfg.Monitor
	}
	rbDeadline := d.rollbackDeadline(prior.Spec, before)
	f := &follower{d: d, id: svc.ID, run: r, wake: wake, stop: ctx.Done()}
	start = time.Now()
	obs := f.follow(fctx, expectation{
		want: ours, wantImage: wantImage, prev: specKey(prior.Spec), prevImage: specImage(prior.Spec),
		minTasks: minTasks, deadline: start.Add(deadline), settle: settle,
		restoreSettle: effectiveConfig(prior.Spec, true).Monitor, rollbackTime: rbDeadline,
	})
	r.step("follow", start, phaseNames[obs.phase], nil)

	fail := &UpdateError{Service: svc.Spec.Name, Image: wantImage, State: obs.state, Message: obs.message}
	switch obs.phase {
	case phaseConverged:
		r.res.Outcome, r.res.Cause = deployer.Updated, nil
		r.res.Running = runningOrSpec(obs)
		d.writeBack(r, after, stackTag(prior), target)
		return r.res
	case phaseRolledBack:
		fail.Errs = append(fail.Errs, ErrSwarmRollback)
		d.explain(fctx, r, svc.ID, fail, obs.tasks, known, false)
		r.res.Outcome, r.res.Cause = deployer.RolledBack, fail
		r.res.Running = runningOrSpec(obs)
		return r.res
	case phaseRollbackPaused:
		fail.Errs = append(fail.Errs, fmt.Errorf("swarm's rollback paused: the service may run a mix of versions; look at docker service ps %s and roll back by hand", svc.Spec.Name))
		d.explain(fctx, r, svc.ID, fail, nil, known, false)
		r.res.ManualAction = true
		r.res.Running = runningOrSpec(d.settled(fctx, svc.ID))
		return r.fail(fail)
	case phaseRollbackStuck:
		fail.Errs = append(fail.Errs, ErrSwarmRollback, fmt.Errorf("the previous version %s did not run again within %s: look at docker service ps %s", specImage(prior.Spec), rbDeadline, svc.Spec.Name))
		d.explain(fctx, r, svc.ID, fail, nil, known, false)
		r.res.ManualAction = true
		r.res.Running = runningOrSpec(d.settled(fctx, svc.ID))
		return r.fail(fail)
	case phaseConflict:
		err := fmt.Errorf("service %s was changed by someone else while shipwatch followed its update (now %s, update state %q); shipwatch stopped and did not roll back: %w",
			svc.Spec.Name, specImage(obs.svc.Spec), string(obs.state), deployer.ErrConflict)
		r.res.Running = runningOrSpec(d.settled(fctx, svc.ID))
		return r.fail(err)
	case phaseGone:
		r.res.Running = ""
		return r.fail(fmt.Errorf("service %s was removed while shipwatch followed its update: %w", svc.Spec.Name, deployer.ErrNotFound))
	case phasePaused:
		fail.Errs = append(fail.Errs, ErrPaused)
	case phaseDeadline:
		fail.Errs = append(fail.Errs, fmt.Errorf("%w (%s)", ErrDeadline, deadline))
		if obs.err != nil {
			fail.Errs = append(fail.Errs, fmt.Errorf("last engine error: %w", obs.err))
		}
	case phaseInterrupted:
		fail.Errs = append(fail.Errs, ErrInterrupted)
		if err := ctx.Err(); err != nil {
			fail.Errs = append(fail.Errs, err)
		}
	}
	// Paused, deadline or interrupted: restore the previous spec ourselves.
	d.explain(fctx, r, svc.ID, fail, nil, known, obs.phase == phaseDeadline)
	return d.rollBack(fctx, r, svc.ID, prior, ours, fail, minTasks)
}

// swarmRollingBack says whether svc is in Swarm's own rollback to prior's
// spec (not one somebody asked for by hand).
func swarmRollingBack(svc, prior swarm.Service) bool {
	us := svc.UpdateStatus
	if us == nil || strings.Contains(us.Message, "manually requested") {
		return false
	}
	switch us.State {
	case swarm.UpdateStateRollbackStarted, swarm.UpdateStateRollbackCompleted, swarm.UpdateStateRollbackPaused:
		return specKey(svc.Spec) == specKey(prior.Spec)
	}
	return false
}

// activeSlots are the tasks that should run.
func activeSlots(tasks []swarm.Task) []swarm.Task {
	var out []swarm.Task
	for _, t := range tasks {
		if t.DesiredState == swarm.TaskStateRunning {
			out = append(out, t)
		}
	}
	return out
}

func (d *Deployer) taskList(ctx context.Context, serviceID string) ([]swarm.Task, error) {
	res, err := d.eng.TaskList(ctx, client.TaskListOptions{Filters: make(client.Filters).Add("service", serviceID)})
	if err != nil {
		return nil, engineError("list tasks of service "+serviceID, err)
	}
	return res.Items, nil
}

// explain fills fail with the failed tasks of the new version and the
// reasons they give, sets FailedDigest when the image itself is to blame,
// and fetches the last log lines of one failed task.
func (d *Deployer) explain(ctx context.Context, r *run, id string, fail *UpdateError, tasks []swarm.Task, known map[string]bool, deadline bool) {
	if tasks == nil {
		var err error
		if tasks, err = d.taskList(ctx, id); err != nil {
			fail.Errs = append(fail.Errs, err)
			return
		}
	}
	mine := newTasks(tasks, fail.Image, known)
	fail.Tasks = failures(mine)
	inspectContainers(ctx, d.eng, fail.Tasks)
	reasons, imageFault := diagnosis(fail.Tasks, deadline)
	fail.Errs = append(fail.Errs, reasons...)
	if imageFault {
		r.res.FailedDigest = digestOf(fail.Image)
	}
	for _, t := range mine {
		st := t.Status.State
		if st == swarm.TaskStateFailed || (t.Status.ContainerStatus != nil && t.Status.ContainerStatus.ContainerID != "" && st != swarm.TaskStateRunning) {
			if logs := taskLogs(ctx, d.eng, t.ID, 20); len(logs) > 0 {
				r.res.Logs = logs
				for _, e := range fail.Errs {
					var he *deployer.HealthError
					if errors.As(e, &he) && he.Logs == nil {
						he.Logs = logs
					}
				}
				break
			}
		}
	}
}

// settled reads the service's tasks once more to report what runs (best
// effort: an observation without tasks reports the spec).
func (d *Deployer) settled(ctx context.Context, id string) observation {
	obs := observation{}
	if res, err := d.eng.ServiceInspect(ctx, id, client.ServiceInspectOptions{}); err == nil {
		obs.svc = res.Service
	}
	if tasks, err := d.taskList(ctx, id); err == nil {
		obs.tasks = tasks
	}
	return obs
}

// runningOrSpec is the digest the service runs: the one all its running
// tasks agree on, or the spec's pin when no task runs (zero replicas).
func runningOrSpec(obs observation) string {
	dgst, n := runningDigest(obs.tasks)
	if n > 0 {
		return dgst
	}
	return digestOf(specImage(obs.svc.Spec))
}

// rollBack asks Swarm to restore the spec the update replaced (Rollback:
// "previous") and follows that rollback. cause says why; the outcome is
// RolledBack when the previous version runs again, Failed with ManualAction
// when it does not.
func (d *Deployer) rollBack(ctx context.Context, r *run, id string, prior swarm.Service, ours string, cause error, minTasks int) deployer.Result {
	start := time.Now()
	cur, err := d.inspect(ctx, id)
	if err != nil {
		r.step("rollback", start, "", err)
		r.res.ManualAction = true
		return r.fail(errors.Join(cause, err))
	}
	wake := d.subscribe(ctx, id)
	alreadyRolling := func(s swarm.Service) bool {
		us := s.UpdateStatus
		return us != nil && (us.State == swarm.UpdateStateRollbackStarted || us.State == swarm.UpdateStateRollbackCompleted || us.State == swarm.UpdateStateRollbackPaused) &&
			specKey(s.Spec) == specKey(prior.Spec)
	}
	if !alreadyRolling(cur) {
		_, err = d.update(ctx, cur, func(s swarm.Service) (client.ServiceUpdateOptions, error) {
			return client.ServiceUpdateOptions{Version: s.Version, Spec: s.Spec, Rollback: "previous", RegistryAuthFrom: swarm.RegistryAuthFromPreviousSpec}, nil
		}, func(s swarm.Service) error {
			if alreadyRolling(s) {
				return errRollingAlready
			}
			if specKey(s.Spec) != ours {
				return fmt.Errorf("service %s was changed by someone else before shipwatch could roll it back: %w", s.Spec.Name, deployer.ErrConflict)
			}
			return nil
		})
		if err != nil && !errors.Is(err, errRollingAlready) {
			// Swarm may have started its own rollback at the same moment.
			if again, ierr := d.inspect(ctx, id); ierr != nil || !alreadyRolling(again) {
				r.step("rollback", start, "", err)
				r.res.ManualAction = !errors.Is(err, deployer.ErrConflict)
				r.res.Running = runningOrSpec(d.settled(ctx, id))
				return r.fail(errors.Join(cause, fmt.Errorf("roll back: %w", err)))
			}
		}
	}
	r.step("rollback", start, "requested rollback to "+specImage(prior.Spec), nil)

	deadline := d.rollbackDeadline(prior.Spec, nil)
	f := &follower{d: d, id: id, run: r, wake: wake}
	start = time.Now()
	obs := f.follow(ctx, expectation{
		want: specKey(prior.Spec), wantImage: specImage(prior.Spec), prev: ours, ours: true,
		minTasks: minTasks, deadline: start.Add(deadline), settle: effectiveConfig(prior.Spec, true).Monitor,
	})
	r.step("follow rollback", start, phaseNames[obs.phase], nil)
	r.res.Running = runningOrSpec(obs)
	if obs.tasks == nil {
		r.res.Running = runningOrSpec(d.settled(ctx, id))
	}
	switch obs.phase {
	case phaseConverged:
		r.res.Outcome, r.res.Cause = deployer.RolledBack, cause
		return r.res
	case phaseConflict:
		return r.fail(errors.Join(cause, fmt.Errorf("service changed by someone else during the rollback: %w", deployer.ErrConflict)))
	case phaseGone:
		return r.fail(errors.Join(cause, fmt.Errorf("service removed during the rollback: %w", deployer.ErrNotFound)))
	case phaseDeadline:
		r.res.ManualAction = true
		return r.fail(errors.Join(cause, fmt.Errorf("the rollback did not finish within %s either (update state %q: %s): look at docker service ps", deadline, string(obs.state), obs.message)))
	default: // rollback paused
		r.res.ManualAction = true
		return r.fail(errors.Join(cause, fmt.Errorf("the rollback failed too (update state %q: %s): look at docker service ps and restore the service by hand", string(obs.state), obs.message)))
	}
}

// rollbackDeadline bounds a rollback to spec: Options.RollbackDeadline, or
// derived from the rollback config and the number of tasks.
func (d *Deployer) rollbackDeadline(spec swarm.ServiceSpec, tasks []swarm.Task) time.Duration {
	if d.opts.RollbackDeadline > 0 {
		return d.opts.RollbackDeadline
	}
	return deriveDeadline(spec, max(len(activeSlots(tasks)), desiredReplicas(spec), 1), true)
}

var errRollingAlready = errors.New("swarm is already rolling back")
