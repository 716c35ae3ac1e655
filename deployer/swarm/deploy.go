package swarm

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/imageref"
)

// updateAttempts bounds the retries of an update refused with "update out of
// sequence" (Swarm bumps a service's version on every status write, so a
// version read a moment ago is often stale during a rollout).
const updateAttempts = 5

// run collects the steps and the result of one Deploy or Rollback. The
// result starts as Failed and becomes something else only on the paths
// that prove it (STYLE rule 9).
type run struct {
	progress deployer.Progress
	res      deployer.Result
}

func (r *run) step(name string, start time.Time, detail string, err error) {
	s := deployer.Step{Name: name, Start: start, Took: time.Since(start), Detail: detail, Err: err}
	r.res.Steps = append(r.res.Steps, s)
	if r.progress != nil {
		r.progress(s)
	}
}

func (r *run) fail(cause error) deployer.Result {
	r.res.Outcome = deployer.Failed
	r.res.Cause = cause
	return r.res
}

// Deploy updates the service of plan.Target to plan.To (pinned by digest),
// follows Swarm's update to an outcome within the deadline, and rolls back
// when Swarm pauses the update or the deadline passes. Swarm's automatic
// rollback is reported as RolledBack with its Cause, never as Updated.
func (d *Deployer) Deploy(ctx context.Context, plan deployer.Plan, progress deployer.Progress) deployer.Result {
	r := &run{progress: progress, res: deployer.Result{Outcome: deployer.Failed, From: plan.Target.Digest, To: plan.To.Digest}}
	start := time.Now()

	svc, err := d.preflight(ctx, plan)
	cur := specImage(svc.Spec)
	if from := digestOf(cur); from != "" {
		// Until the update is sent, the service runs what its spec pins.
		r.res.From, r.res.Running = from, from
	}
	if err != nil {
		r.step("check", start, "", err)
		return r.fail(err)
	}
	if digestOf(cur) == plan.To.Digest {
		r.step("check", start, fmt.Sprintf("service %s already runs %s", svc.Spec.Name, cur), nil)
		r.res.Outcome, r.res.Running = deployer.UpToDate, plan.To.Digest
		return r.res
	}
	to := pinnedImage(plan.To)
	r.step("check", start, fmt.Sprintf("service %s (%s): %s → %s", svc.Spec.Name, serviceMode(svc.Spec), cur, to), nil)

	start = time.Now()
	auth, err := encodedAuth(ctx, d.opts.Keychain, plan.To)
	if err == nil {
		err = d.checkRegistry(ctx, plan.To, auth)
	}
	r.step("registry", start, registryDetail(plan.To, auth), err)
	if err != nil {
		return r.fail(err)
	}

	if plan.DryRun {
		spec, _ := withImage(svc.Spec, to)
		notes := applyDefaults(&spec, d.opts.Defaults)
		r.step("plan", time.Now(), strings.Join(append([]string{"would update the image to " + to}, notes...), "; "), nil)
		r.res.Outcome, r.res.Running = deployer.Available, digestOf(cur)
		return r.res
	}
	return d.apply(ctx, r, svc, plan.To, auth, false)
}

// preflight validates the plan against the service as it is now, and
// refuses (service untouched) anything shipwatch should not update.
func (d *Deployer) preflight(ctx context.Context, plan deployer.Plan) (swarm.Service, error) {
	t := plan.Target
	if t.Kind != "" && t.Kind != deployer.KindSwarm {
		return swarm.Service{}, fmt.Errorf("target %s is a %s target, not a Swarm service: %w", t.ID, t.Kind, deployer.ErrUnsupported)
	}
	if t.Unmanaged != "" {
		return swarm.Service{}, fmt.Errorf("target %s: %s: %w", targetName(t), t.Unmanaged, deployer.ErrUnsupported)
	}
	to := plan.To
	if to.Domain == "" || to.Path == "" || !imageref.ValidDigest(to.Digest) {
		return swarm.Service{}, fmt.Errorf("plan for %s: image %q is not pinned to a valid digest: shipwatch deploys repo:tag@sha256:… only (rule 1)", targetName(t), to.String())
	}
	svc, err := d.inspect(ctx, serviceRef(t))
	if err != nil {
		return svc, err
	}
	if err := deployable(svc); err != nil {
		return svc, err
	}
	cur, err := imageref.Parse(specImage(svc.Spec))
	if err != nil {
		return svc, fmt.Errorf("service %s: its image %q is not a registry reference (a locally built image?): %w", svc.Spec.Name, specImage(svc.Spec), ErrNotInRegistry)
	}
	if !cur.SameRepo(to) {
		return svc, fmt.Errorf("service %s runs %s, the plan is for %s: refusing to switch repositories (%w)", svc.Spec.Name, cur.Repo(), to.Repo(), deployer.ErrConflict)
	}
	// The image must still be what the plan was made from: a service updated
	// by someone else since discovery is not overwritten.
	if t.Digest != "" && cur.Digest != "" && cur.Digest != t.Digest && cur.Digest != to.Digest {
		return svc, fmt.Errorf("service %s now runs %s, not %s as planned: re-run the pass to plan from what runs (%w)", svc.Spec.Name, cur.Digest, t.Digest, deployer.ErrConflict)
	}
	return svc, nil
}

// deployable refuses services shipwatch does not update, and services in
// the middle of an update.
func deployable(svc swarm.Service) error {
	name := svc.Spec.Name
	if svc.Spec.TaskTemplate.ContainerSpec == nil {
		return fmt.Errorf("service %s is not a container service (plugin or network attachment): %w", name, deployer.ErrUnsupported)
	}
	switch m := serviceMode(svc.Spec); m {
	case modeReplicatedJob, modeGlobalJob:
		return fmt.Errorf("service %s is a %s: a job runs to completion and an image change would run it again, so shipwatch leaves jobs alone (update it with docker service update): %w", name, m, deployer.ErrUnsupported)
	}
	if us := svc.UpdateStatus; us != nil {
		switch us.State {
		case swarm.UpdateStateUpdating, swarm.UpdateStateRollbackStarted:
			return fmt.Errorf("service %s: an update is in progress (%s: %s); shipwatch does not fight it, try again when it ends: %w", name, us.State, us.Message, deployer.ErrConflict)
		case swarm.UpdateStatePaused, swarm.UpdateStateRollbackPaused:
			return fmt.Errorf("service %s: its last update is %s (%s); resolve it first (docker service rollback, or docker service update): %w", name, us.State, us.Message, deployer.ErrConflict)
		}
	}
	return nil
}

func serviceRef(t deployer.Target) string {
	if t.Swarm != nil && t.Swarm.ID != "" {
		return t.Swarm.ID
	}
	return t.Name
}

func targetName(t deployer.Target) string {
	if t.Name != "" {
		return t.Name
	}
	return t.ID
}

func (d *Deployer) inspect(ctx context.Context, id string) (swarm.Service, error) {
	if id == "" {
		return swarm.Service{}, fmt.Errorf("target has no service name or ID: %w", deployer.ErrNotFound)
	}
	res, err := d.eng.ServiceInspect(ctx, id, client.ServiceInspectOptions{})
	if err != nil {
		return swarm.Service{}, engineError("inspect service "+id, err)
	}
	return res.Service, nil
}

// engineError wraps an engine error with the sentinel callers test and what
// to do about it.
func engineError(op string, err error) error {
	msg := err.Error()
	switch {
	case cerrdefs.IsNotFound(err):
		return fmt.Errorf("%s: %w (docker service ls on a manager lists the services): %v", op, deployer.ErrNotFound, err)
	case strings.Contains(msg, "not a swarm manager") && strings.Contains(msg, "Worker nodes"):
		return fmt.Errorf("%s: %w: run shipwatch on a manager node: %v", op, ErrNotManager, err)
	case strings.Contains(msg, "not a swarm manager") || strings.Contains(msg, "not part of a swarm"):
		return fmt.Errorf("%s: %w: %v", op, ErrNoSwarm, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

func isOutOfSequence(err error) bool {
	return err != nil && strings.Contains(err.Error(), "update out of sequence")
}

func registryDetail(to imageref.Ref, auth string) string {
	if auth == "" {
		return to.Domain + ": no credentials from shipwatch, the service keeps its stored registry auth"
	}
	return to.Domain + ": credentials passed to the nodes"
}

// checkRegistry asks the registry, through the manager's engine and with
// the credentials the nodes will get, whether it serves to's digest. It
// catches local-only images, missing or refused credentials and a moved
// digest before the service is touched.
func (d *Deployer) checkRegistry(ctx context.Context, to imageref.Ref, auth string) error {
	res, err := d.eng.DistributionInspect(ctx, to.String(), client.DistributionInspectOptions{EncodedRegistryAuth: auth})
	if err != nil {
		return registryError(to, auth != "", err)
	}
	if got := res.Descriptor.Digest.String(); got != to.Digest {
		return fmt.Errorf("registry %s serves %s for %s: %w", to.Domain, got, to.String(), deployer.ErrDigestMismatch)
	}
	return nil
}

func registryError(to imageref.Ref, haveAuth bool, err error) error {
	msg := strings.ToLower(err.Error())
	switch {
	case cerrdefs.IsUnauthorized(err) || cerrdefs.IsPermissionDenied(err) ||
		strings.Contains(msg, "unauthorized") || strings.Contains(msg, "authentication required") || strings.Contains(msg, "denied"):
		if haveAuth {
			return fmt.Errorf("registry %s refused the credentials shipwatch passes to the nodes for %s: %w (check them with docker login %s): %v", to.Domain, to.Repo(), ErrCredentials, to.Domain, err)
		}
		return fmt.Errorf("registry %s wants credentials for %s and shipwatch has none to pass to the nodes: %w (log in where shipwatch reads its registry credentials, e.g. docker login %s; if the repository does not exist, check the image name): %v", to.Domain, to.Repo(), ErrCredentials, to.Domain, err)
	case cerrdefs.IsNotFound(err) || strings.Contains(msg, "manifest unknown") || strings.Contains(msg, "not found") || strings.Contains(msg, "name unknown"):
		return fmt.Errorf("%s is not in registry %s (a locally built image, or a digest the registry no longer serves): %w: push it to a registry the nodes can reach: %v", to.String(), to.Domain, ErrNotInRegistry, err)
	}
	return fmt.Errorf("ask registry %s about %s: %w (try again later): %v", to.Domain, to.String(), ErrRegistry, err)
}

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
