package compose

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/moby/client"

	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/imageref"
	"github.com/shipwatch/shipwatch/internal/atomicfile"
)

// rollback is Rollback after its checks: it is a rollout to the previous
// version, taken from the local rollback image when it is still there.
func (r *rollout) rollback(ctx context.Context, to string) deployer.Result {
	res := deployer.Result{Outcome: deployer.Failed, From: r.target.Digest}
	// A rollout interrupted after it rewrote a file (the agent was killed)
	// left the file's previous content in a backup: put it back first. The
	// containers may then differ from the files (that is the point), so the
	// drift guard lets this rollback through.
	var restored []string
	err := r.rec.run(stepRestoreInterrupted, func() (string, error) {
		var err error
		restored, err = restoreBackups(r.target)
		if len(restored) == 0 {
			return "no interrupted rollout", err
		}
		return "restored " + strings.Join(restored, ", ") + " from the backup of an interrupted rollout", err
	})
	if err != nil {
		res.Cause = err
		return res
	}
	s, err := r.prepare(ctx, len(restored) > 0)
	if err != nil {
		res.Cause = err
		return res
	}
	res.From, res.Running = s.running, s.running
	var want imageref.Ref
	var localID string
	err = r.rec.run(stepRollbackResolve, func() (string, error) {
		ctx, cancel := quick(ctx)
		defer cancel()
		var detail string
		want, localID, detail, err = r.previous(ctx, s, to)
		return detail, err
	})
	if err != nil {
		res.Cause = err
		return res
	}
	res.To = want.Digest
	var ch *change
	err = r.rec.run(stepPlan, func() (string, error) {
		var detail string
		ch, detail, err = r.plan(s, want)
		return detail, err
	})
	if err != nil {
		res.Cause = err
		return res
	}
	if ch == nil {
		if to == "" {
			res.Cause = fmt.Errorf("%w: %s already runs %s", deployer.ErrNoPrevious, r.target.Name, want)
			return res
		}
		// Asked for the version that runs (a recovery): make sure the
		// file's tag points at it too — an interrupted same-tag rollout may
		// have moved the tag to the new image before converging.
		err = r.rec.run(stepTag, func() (string, error) {
			ctx, cancel := quick(ctx)
			defer cancel()
			if _, pinned := cutDigest(s.config.Image); pinned {
				return "the file pins a digest", nil
			}
			id, err := r.d.imageID(ctx, s.config.Image)
			if err != nil || id == s.imageID {
				return s.config.Image + " already points at the running image", err
			}
			if err := r.d.tag(ctx, s.imageID, s.config.Image); err != nil {
				return "", err
			}
			return fmt.Sprintf("%s → %s (back to the running image)", s.config.Image, shortID(s.imageID)), nil
		})
		if err != nil {
			res.Cause = err
			return res
		}
		res.Outcome, res.Running = deployer.UpToDate, s.running
		return res
	}
	ch.imageID = localID
	ch.success = deployer.RolledBack
	ch.labels = previousLabels(s, rollbackRef(s.image, r.target))
	return r.apply(ctx, ch, res)
}

// previous finds the version to roll back to: to when given, else the one
// recorded by the last rollout on the running containers. localID is the
// local image to use when it is there (the rollback image), "" to pull.
func (r *rollout) previous(ctx context.Context, s *service, to string) (want imageref.Ref, localID, detail string, err error) {
	d := r.d
	labels := s.containers[0].Labels
	recorded := labels[LabelPrevious]
	var prev imageref.Ref
	if recorded != "" {
		if prev, err = imageref.Parse(recorded); err != nil {
			return want, "", "", fmt.Errorf("label %s=%q: %w", LabelPrevious, recorded, err)
		}
	}
	switch {
	case to == "" && recorded == "":
		return want, "", "", fmt.Errorf("%w: the containers of %s carry no %s label (not created by a shipwatch rollout, or recreated since); give the digest to roll back to",
			deployer.ErrNoPrevious, r.target.Name, LabelPrevious)
	case to == "":
		want = prev
	case strings.HasPrefix(to, "sha256:"):
		if !imageref.ValidDigest(to) {
			return want, "", "", fmt.Errorf("rollback to %q: not a valid digest", to)
		}
		want = s.image.Tagged().WithDigest(to)
		if recorded != "" && prev.Digest == to {
			want = prev
		}
	default:
		if want, err = imageref.Parse(to); err != nil {
			return want, "", "", fmt.Errorf("rollback to: %w", err)
		}
		if want.Digest == "" {
			return want, "", "", fmt.Errorf("rollback to %s: give a digest (repo:tag@sha256:… or sha256:…); shipwatch runs only pinned images", to)
		}
		if !want.SameRepo(s.image) {
			return want, "", "", fmt.Errorf("%w: rollback to %s: %s runs %s", deployer.ErrUnsupported, to, r.target.Name, s.image.Repo())
		}
	}
	if want.Tag == "" {
		want.Tag = s.image.Tag
	}

	// The rollback image protected by the last rollout, if it is the one.
	rbRef := rollbackRef(s.image, r.target)
	rbID, err := d.imageID(ctx, rbRef)
	if err != nil {
		return want, "", "", err
	}
	if rbID != "" && rbID != s.imageID && to == "" && (labels[LabelPreviousID] == "" || labels[LabelPreviousID] == rbID) {
		img, err := d.engine.ImageInspect(ctx, rbID)
		if err != nil {
			return want, "", "", fmt.Errorf("inspect rollback image: %w", err)
		}
		if want.Digest == "" || hasRepoDigest(img.RepoDigests, want) {
			return want, rbID, fmt.Sprintf("%s from the local rollback image %s", want, shortID(rbID)), nil
		}
	}
	if want.Digest == "" {
		return want, "", "", fmt.Errorf("%w: the rollback image %s of %s is gone and its digest was not recorded; give the digest to roll back to",
			deployer.ErrNoPrevious, rbRef, r.target.Name)
	}
	return want, "", fmt.Sprintf("%s (pulled if not local)", want), nil
}

// removeReplaced removes the image the previous successful rollout
// replaced, now that another success made it useless: its tags in the
// service's repository (except those any service of the project uses) and
// then the image, unless a container still uses it or other repositories
// still tag it.
func (d *Deployer) removeReplaced(ctx context.Context, id string, repo imageref.Ref, p *types.Project) (string, error) {
	ctrs, err := d.engine.ContainerList(ctx, client.ContainerListOptions{All: true})
	if err != nil {
		return "", fmt.Errorf("cleanup: list containers: %w", err)
	}
	for _, c := range ctrs.Items {
		if c.ImageID == id {
			return fmt.Sprintf("old image %s kept: container %s uses it", shortID(id), canonicalName(c)), nil
		}
	}
	img, err := d.engine.ImageInspect(ctx, id)
	if err != nil {
		return "", fmt.Errorf("cleanup: inspect %s: %w", shortID(id), err)
	}
	inUse := map[string]bool{}
	for _, svc := range p.AllServices() {
		if ref, err := imageref.Parse(svc.Image); err == nil {
			inUse[ref.String()] = true
		}
	}
	kept := 0
	for _, t := range img.RepoTags {
		ref, err := imageref.Parse(t)
		if err != nil || !ref.SameRepo(repo) || inUse[ref.String()] {
			kept++
			continue
		}
		if _, err := d.engine.ImageRemove(ctx, t, client.ImageRemoveOptions{}); err != nil {
			return "", fmt.Errorf("cleanup: untag %s: %w", t, err)
		}
	}
	if kept > 0 {
		return fmt.Sprintf("old image %s untagged, kept for its other tags", shortID(id)), nil
	}
	if _, err := d.engine.ImageRemove(ctx, id, client.ImageRemoveOptions{PruneChildren: true}); err != nil && !isNotFound(err) {
		return "", fmt.Errorf("cleanup: remove %s: %w", shortID(id), err)
	}
	return fmt.Sprintf("old image %s removed", shortID(id)), nil
}

// restoreBackups puts back every file that an interrupted rollout of target
// rewrote (its *.shipwatch-backup twin holds the content from before) and
// removes the backups. It returns the files it restored.
func restoreBackups(t deployer.Target) ([]string, error) {
	candidates := append(append([]string{}, t.Compose.ConfigFiles...), t.Compose.EnvFiles...)
	if wd := t.Compose.WorkingDir; wd != "" {
		candidates = append(candidates, filepath.Join(wd, ".env"))
		if more, err := filepath.Glob(filepath.Join(wd, "*"+backupSuffix)); err == nil {
			for _, m := range more {
				candidates = append(candidates, strings.TrimSuffix(m, backupSuffix))
			}
		}
	}
	var restored []string
	seen := map[string]bool{}
	for _, f := range candidates {
		if seen[f] {
			continue
		}
		seen[f] = true
		before, err := os.ReadFile(f + backupSuffix)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return restored, fmt.Errorf("read backup %s: %w", f+backupSuffix, err)
		}
		if err := atomicfile.Write(f, before); err != nil {
			return restored, fmt.Errorf("restore %s from %s: %w", f, f+backupSuffix, err)
		}
		if err := os.Remove(f + backupSuffix); err != nil {
			return restored, fmt.Errorf("remove %s: %w", f+backupSuffix, err)
		}
		restored = append(restored, f)
	}
	return restored, nil
}
