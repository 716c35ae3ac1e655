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
		settled, err := r.d.settleRecreate(ctx, r.target)
		if len(settled) > 0 {
			// Discovery saw the containers before they were settled: the
			// image it found running is no longer a sign of someone
			// else's change.
			cs := *r.target.Compose
			cs.ImageID = ""
			r.target.Compose = &cs
		}
		if err != nil {
			return strings.Join(settled, "; "), err
		}
		restored, err = restoreBackups(r.target)
		var done []string
		if len(restored) > 0 {
			done = append(done, "restored "+strings.Join(restored, ", ")+" from the backup of an interrupted rollout")
		}
		done = append(done, settled...)
		if len(done) == 0 {
			return "no interrupted rollout", err
		}
		return strings.Join(done, "; "), err
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

// settleRecreate finishes or undoes a container replacement that Compose
// left halfway. Compose replaces a container by creating the new one under
// a temporary name ("<first 12 hex digits of the old ID>_<name>"), then
// stopping and removing the old one, then renaming the new one. An agent
// (or helper) killed in between leaves the temporary container next to the
// old one — it is removed and the old one started again if it was stopped —
// or alone, when it gets its name back; the rollback then replaces it as
// usual. Only containers that were never started are touched.
func (d *Deployer) settleRecreate(ctx context.Context, t deployer.Target) ([]string, error) {
	ctx, cancel := quick(ctx)
	defer cancel()
	ctrs, err := d.serviceContainers(ctx, t.Compose.Project, t.Compose.Service)
	if err != nil {
		return nil, err
	}
	var done []string
	for _, c := range ctrs {
		name := canonicalName(c)
		prefix, final, ok := strings.Cut(name, "_")
		if !ok || c.State != "created" || len(prefix) != 12 || strings.Trim(prefix, "0123456789abcdef") != "" || final == "" {
			continue
		}
		old := -1
		for i, o := range ctrs {
			if o.ID != c.ID && strings.HasPrefix(o.ID, prefix) {
				old = i
			}
		}
		if old < 0 {
			if _, err := d.engine.ContainerRename(ctx, c.ID, client.ContainerRenameOptions{NewName: final}); err != nil {
				return done, fmt.Errorf("finish an interrupted recreate: rename %s to %s: %w", name, final, err)
			}
			done = append(done, fmt.Sprintf("renamed %s, left by an interrupted recreate, to %s", name, final))
			continue
		}
		if _, err := d.engine.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true}); err != nil && !isNotFound(err) {
			return done, fmt.Errorf("undo an interrupted recreate: remove %s: %w", name, err)
		}
		done = append(done, fmt.Sprintf("removed %s, left by an interrupted recreate", name))
		if o := ctrs[old]; o.State != "running" {
			if _, err := d.engine.ContainerStart(ctx, o.ID, client.ContainerStartOptions{}); err != nil {
				return done, fmt.Errorf("undo an interrupted recreate: start %s again: %w", canonicalName(o), err)
			}
			done = append(done, "started "+canonicalName(o)+" again")
		}
	}
	return done, nil
}
