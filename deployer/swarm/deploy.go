package swarm

import (
	"context"
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
	auth, err := deployer.EncodedRegistryAuth(ctx, d.opts.Keychain, plan.To)
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
