package swarm

import (
	"context"
	"fmt"
	"time"

	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/imageref"
)

// Rollback restores the version that ran before the last update of target.
// With to empty it asks Swarm for the previous spec (`docker service
// rollback`); that spec is gone once Swarm rolled an update back by itself,
// and Rollback then fails with deployer.ErrNoPrevious, service untouched.
// With to set ("sha256:…", or a full "repo:tag@sha256:…" from history) it
// updates the service to that digest, through Swarm's previous spec when
// that spec runs it (a bare digest keeps the tag that names it in the
// registry, if the stack file's or the previous spec's does). The outcome is RolledBack when the restored version
// runs, UpToDate when it already ran, Failed otherwise (ManualAction when
// nothing could be restored).
func (d *Deployer) Rollback(ctx context.Context, target deployer.Target, to string, progress deployer.Progress) deployer.Result {
	r := &run{progress: progress, res: deployer.Result{Outcome: deployer.Failed, From: target.Digest}}
	start := time.Now()
	if target.Kind != "" && target.Kind != deployer.KindSwarm {
		err := fmt.Errorf("target %s is a %s target, not a Swarm service: %w", target.ID, target.Kind, deployer.ErrUnsupported)
		r.step("check", start, "", err)
		return r.fail(err)
	}
	svc, err := d.inspect(ctx, serviceRef(target))
	if err == nil {
		err = deployable(svc)
	}
	cur := specImage(svc.Spec)
	// Until an update is sent, the service runs what its spec pins.
	r.res.From, r.res.Running = digestOf(cur), digestOf(cur)
	if err != nil {
		r.step("check", start, "", err)
		return r.fail(err)
	}

	if to == "" {
		prev := previousSpec(svc)
		if prev == nil {
			err := fmt.Errorf("service %s has no previous spec (Swarm drops it when it rolls an update back by itself): %w; pass the digest to restore from the rollout history", svc.Spec.Name, deployer.ErrNoPrevious)
			r.step("check", start, "", err)
			return r.fail(err)
		}
		if d := digestOf(specImage(*prev)); d != "" && d == digestOf(cur) {
			// A later update that kept the image (a docker stack deploy of
			// the same file, a scale) replaced the previous spec: going back
			// to it would restore nothing.
			err := fmt.Errorf("service %s: its previous spec runs the same digest %s (a later update, such as docker stack deploy, replaced the one before): %w; pass the digest to restore from the rollout history", svc.Spec.Name, d, deployer.ErrNoPrevious)
			r.step("check", start, "", err)
			return r.fail(err)
		}
		r.res.To = digestOf(specImage(*prev))
		r.step("check", start, fmt.Sprintf("service %s: %s → previous spec %s", svc.Spec.Name, cur, specImage(*prev)), nil)
		return d.rollbackPrevious(ctx, r, svc, *prev)
	}

	want, err := rollbackRef(svc, to)
	if err != nil {
		r.step("check", start, "", err)
		return r.fail(err)
	}
	r.res.To = want.Digest
	if digestOf(cur) == want.Digest {
		r.step("check", start, fmt.Sprintf("service %s already runs %s", svc.Spec.Name, cur), nil)
		r.res.Outcome, r.res.Running = deployer.UpToDate, want.Digest
		return r.res
	}
	if prev := previousSpec(svc); prev != nil && digestOf(specImage(*prev)) == want.Digest {
		r.step("check", start, fmt.Sprintf("service %s: %s → previous spec %s", svc.Spec.Name, cur, specImage(*prev)), nil)
		return d.rollbackPrevious(ctx, r, svc, *prev)
	}
	r.step("check", start, fmt.Sprintf("service %s: %s → %s (no previous spec with that digest: updating to it)", svc.Spec.Name, cur, want.Familiar()), nil)

	start = time.Now()
	auth, err := deployer.EncodedRegistryAuth(ctx, d.opts.Keychain, want)
	if err == nil {
		err = d.checkRegistry(ctx, want, auth)
	}
	if err == nil && want.Tag == "" {
		want.Tag = d.tagOf(ctx, svc, want, auth)
	}
	detail := registryDetail(want, auth)
	if want.Tag != "" && imageref.ValidDigest(to) {
		detail += "; " + want.Digest + " is tag " + want.Tag
	}
	r.step("registry", start, detail, err)
	if err != nil {
		return r.fail(err)
	}
	return d.apply(ctx, r, svc, want, auth, true)
}

// tagOf finds, for a rollback to a bare digest, a tag that names that
// digest in the registry now: the stack file's tag (com.docker.stack.image)
// or the previous spec's. Found, the rollback keeps a tag (and a stack file
// can be written back); not found, the service is pinned to repo@digest.
func (d *Deployer) tagOf(ctx context.Context, svc swarm.Service, want imageref.Ref, auth string) string {
	var candidates []string
	if l, err := imageref.Parse(svc.Spec.Labels[LabelStackImage]); err == nil && l.SameRepo(want) && l.Tag != "" {
		candidates = append(candidates, l.Tag)
	}
	if prev := previousSpec(svc); prev != nil {
		if p, err := imageref.Parse(specImage(*prev)); err == nil && p.SameRepo(want) && p.Tag != "" {
			candidates = append(candidates, p.Tag)
		}
	}
	seen := map[string]bool{}
	for _, tag := range candidates {
		if seen[tag] {
			continue
		}
		seen[tag] = true
		res, err := d.eng.DistributionInspect(ctx, want.WithTag(tag).String(), client.DistributionInspectOptions{EncodedRegistryAuth: auth})
		if err == nil && res.Descriptor.Digest.String() == want.Digest {
			return tag
		}
	}
	return ""
}

func previousSpec(svc swarm.Service) *swarm.ServiceSpec {
	if p := svc.PreviousSpec; p != nil && p.TaskTemplate.ContainerSpec != nil && p.TaskTemplate.ContainerSpec.Image != "" {
		return p
	}
	return nil
}

// rollbackRef is the pinned reference to roll back to: to itself when it is
// a full reference, else the service's repository pinned to the digest to
// ("repo@sha256:…").
func rollbackRef(svc swarm.Service, to string) (imageref.Ref, error) {
	base := stackTag(svc)
	if base.Path == "" {
		return imageref.Ref{}, fmt.Errorf("service %s: its image %q is not a registry reference: %w", svc.Spec.Name, specImage(svc.Spec), ErrNotInRegistry)
	}
	if imageref.ValidDigest(to) {
		// Never put the digest under the current (wrong) tag: pin the
		// repository alone; tagOf may find the right tag in the registry.
		base.Tag = ""
		return base.WithDigest(to), nil
	}
	ref, err := imageref.Parse(to)
	if err != nil {
		return imageref.Ref{}, fmt.Errorf("roll back %s to %q: want sha256:… or repo:tag@sha256:…: %w", svc.Spec.Name, to, err)
	}
	if ref.Digest == "" {
		return imageref.Ref{}, fmt.Errorf("roll back %s to %s: a rollback target must be pinned by digest (repo:tag@sha256:…), not a tag", svc.Spec.Name, to)
	}
	if !ref.SameRepo(base) {
		return imageref.Ref{}, fmt.Errorf("roll back %s to %s: the service runs %s, another repository: %w", svc.Spec.Name, to, base.Repo(), deployer.ErrConflict)
	}
	if ref.Tag == "" {
		ref.Tag = base.Tag
	}
	return ref, nil
}

// rollbackPrevious is `docker service rollback`, followed to an outcome.
func (d *Deployer) rollbackPrevious(ctx context.Context, r *run, svc swarm.Service, prev swarm.ServiceSpec) deployer.Result {
	fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	tasks, err := d.taskList(fctx, svc.ID)
	if err != nil {
		return r.fail(err)
	}
	minTasks := countRunning(tasks)
	if n := desiredReplicas(prev); n >= 0 && n < minTasks {
		minTasks = n
	}
	prior := svc
	prior.Spec = prev
	res := d.rollBack(fctx, r, svc.ID, prior, specKey(svc.Spec), nil, minTasks)
	if res.Outcome == deployer.RolledBack {
		d.writeBack(r, svc, stackTag(svc), stackTag(prior))
		res = r.res
	}
	return res
}
