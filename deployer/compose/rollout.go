package compose

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/imageref"
)

// quickTimeout bounds each step that only makes a few engine calls or
// reads files (load, drift, protect, rewrite, tag, finish), so that a hung
// engine cannot hold a rollout forever; pull, converge and the health gate
// have their own, longer deadlines.
const quickTimeout = 2 * time.Minute

func quick(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, quickTimeout)
}

// rollout is one Deploy or Rollback of one target.
type rollout struct {
	d      *Deployer
	rec    *recorder
	target deployer.Target
}

// change moves a service from what runs to another image.
type change struct {
	s       *service
	want    imageref.Ref // the image to run, pinned when its digest is known
	written string       // the service's image: once changed, interpolated
	edit    *fileEdit    // nil when the files already read written
	// imageID is the local image to run: set up front when it is already
	// local (a rollback), else found by pulling want.
	imageID string
	labels  map[string]string // shipwatch's labels for the new containers
	// success is the outcome when the change is proven healthy.
	success deployer.Outcome
}

// progress records how far a change got, so that a failure undoes exactly
// what was done.
type progress struct {
	protected bool // the running image carries the rollback tag
	// replacedID is the image the rollback tag protected before (""
	// when there was none): a restore gives the tag back to it, so that
	// the version recorded as previous stays protected.
	replacedID  string
	fileWritten bool
	tagMoved    bool // the written reference may point at the new image
	converging  bool // the SDK was asked to converge: containers may have changed
}

// deploy is Deploy after its checks: load, guard, plan, apply.
func (r *rollout) deploy(ctx context.Context, plan deployer.Plan) deployer.Result {
	res := deployer.Result{Outcome: deployer.Failed, From: plan.Target.Digest, To: plan.To.Digest}
	if !imageref.ValidDigest(plan.To.Digest) {
		res.Cause = fmt.Errorf("plan for %s is not pinned by digest (%s): shipwatch deploys only verified digests", plan.Target.Name, plan.To)
		return res
	}
	s, err := r.prepare(ctx, plan.AllowDrift)
	if err != nil {
		res.Cause = err
		return res
	}
	res.From, res.Running = s.running, s.running
	var ch *change
	err = r.rec.run(stepPlan, func() (string, error) {
		var detail string
		ch, detail, err = r.plan(s, plan.To)
		return detail, err
	})
	if err != nil {
		res.Cause = err
		return res
	}
	if ch == nil {
		res.Outcome = deployer.UpToDate
		return res
	}
	if plan.DryRun {
		res.Outcome = deployer.Available
		return res
	}
	ch.success = deployer.Updated
	ch.labels = previousLabels(s, rollbackRef(s.image, r.target))
	return r.apply(ctx, ch, res)
}

// prepare loads the project and applies the drift guard.
func (r *rollout) prepare(ctx context.Context, allowDrift bool) (*service, error) {
	var s *service
	err := r.rec.run(stepLoad, func() (string, error) {
		ctx, cancel := quick(ctx)
		defer cancel()
		var detail string
		var err error
		s, detail, err = r.d.load(ctx, r.target)
		return detail, err
	})
	if err != nil {
		return nil, err
	}
	err = r.rec.run(stepDrift, func() (string, error) {
		ctx, cancel := quick(ctx)
		defer cancel()
		detail, err := r.d.drift(ctx, s)
		if allowDrift && errors.Is(err, deployer.ErrDrift) {
			return "drift allowed, applying the files as they are: " + err.Error(), nil
		}
		return detail, err
	})
	return s, err
}

// plan decides what must change for s to run to; nil means nothing.
func (r *rollout) plan(s *service, to imageref.Ref) (*change, string, error) {
	if !to.SameRepo(s.image) {
		return nil, "", fmt.Errorf("%w: %s runs %s, the plan is for %s; shipwatch does not move services between repositories",
			deployer.ErrUnsupported, r.target.Name, s.image.Repo(), to.Repo())
	}
	tag := to.Tag
	if tag == "" {
		tag = s.image.Tag
	}
	_, pinnedInFile := cutDigest(s.config.Image)
	if pinnedInFile && to.Digest == "" {
		return nil, "", fmt.Errorf("%w: the compose file pins %s by digest and the digest to go to is unknown", deployer.ErrUnsupported, s.config.Image)
	}
	if err := checkNoBackups(append(append([]string{}, s.loadOpts.ConfigPaths...), s.envFiles...)); err != nil {
		return nil, "", err
	}
	written := rewrittenRef(s.config.Image, tag, to.Digest)
	if written == s.config.Image && to.Digest != "" && s.running == to.Digest {
		return nil, fmt.Sprintf("already runs %s", to.Digest), nil
	}
	ch := &change{s: s, want: to, written: written}
	if written == s.config.Image {
		return ch, fmt.Sprintf("same reference %s, new digest %s: retag and converge", written, to.Digest), nil
	}
	edit, err := planImageEdit(imageEditInput{
		service:    s.name,
		files:      s.loadOpts.ConfigPaths,
		envFiles:   s.envFiles,
		workingDir: s.loadOpts.WorkingDir,
		env:        s.project.Environment,
		current:    s.config.Image,
		want:       written,
	})
	if err != nil {
		return nil, "", err
	}
	if err := checkNoBackups([]string{edit.file}); err != nil {
		return nil, "", err
	}
	ch.edit = &edit
	return ch, "rewrite " + edit.String(), nil
}

// checkNoBackups refuses to start while a backup of an interrupted rollout
// is next to one of the files: the file may hold a reference that never
// ran, and a new backup would overwrite the only copy of the original.
func checkNoBackups(files []string) error {
	for _, f := range files {
		if _, err := os.Stat(f + backupSuffix); err == nil {
			return fmt.Errorf("%w: %s exists: an earlier rollout was interrupted; compare it with %s, keep the right one, remove the backup and try again",
				deployer.ErrConflict, f+backupSuffix, f)
		}
	}
	return nil
}

func cutDigest(ref string) (string, bool) {
	for i := len(ref) - 1; i >= 0; i-- {
		if ref[i] == '@' {
			return ref[:i], true
		}
	}
	return ref, false
}

// apply runs the change: get the image, protect the running one, rewrite,
// retag, converge, gate; on any failure after the first destructive step,
// restore. res carries From/To set by the caller.
func (r *rollout) apply(ctx context.Context, ch *change, res deployer.Result) deployer.Result {
	d, s := r.d, ch.s
	if ch.imageID == "" {
		if err := r.fetch(ctx, ch); err != nil {
			res.Cause = err
			return res
		}
	}
	if ch.imageID == s.imageID && ch.written == s.config.Image {
		res.Outcome = deployer.UpToDate
		if ch.success == deployer.RolledBack {
			res.Outcome = deployer.RolledBack
		}
		res.Running = s.running
		return res
	}

	var done progress
	rbRef := rollbackRef(s.image, r.target)
	err := r.rec.run(stepProtect, func() (string, error) {
		ctx, cancel := quick(ctx)
		defer cancel()
		var err error
		if done.replacedID, err = d.imageID(ctx, rbRef); err != nil {
			return "", err
		}
		if err := d.tag(ctx, s.imageID, rbRef); err != nil {
			return "", err
		}
		done.protected = true
		return fmt.Sprintf("image %s kept as %s", shortID(s.imageID), rbRef), nil
	})
	if err != nil {
		res.Cause = err
		return res
	}

	project := s.project
	if ch.edit != nil {
		err = r.rec.run(stepRewrite, func() (string, error) {
			ctx, cancel := quick(ctx)
			defer cancel()
			if err := ch.edit.apply(); err != nil {
				return "", err
			}
			done.fileWritten = true
			p, err := d.loadProject(ctx, s.loadOpts, s.name)
			if err == nil {
				err = verifyRewrite(s.project, p, s.name, ch.written)
			}
			if err != nil {
				return "", err
			}
			project = p
			return fmt.Sprintf("%s (backup in %s)", ch.edit, ch.edit.file+backupSuffix), nil
		})
		if err != nil {
			return r.restore(ctx, ch, done, err, res)
		}
	}

	if _, pinned := cutDigest(ch.written); !pinned {
		err = r.rec.run(stepTag, func() (string, error) {
			ctx, cancel := quick(ctx)
			defer cancel()
			done.tagMoved = true
			if err := d.tag(ctx, ch.imageID, ch.written); err != nil {
				return "", err
			}
			return fmt.Sprintf("%s → %s", ch.written, shortID(ch.imageID)), nil
		})
		if err != nil {
			return r.restore(ctx, ch, done, err, res)
		}
	}

	var ids []string
	err = r.rec.run(stepConverge, func() (string, error) {
		done.converging = true
		var err error
		ids, err = d.converge(ctx, project, s.name, len(s.containers), ch.labels, ch.imageID)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%d container(s) recreated from %s", len(ids), shortID(ch.imageID)), nil
	})
	if err != nil {
		return r.restore(ctx, ch, done, err, res)
	}

	err = r.rec.run(stepHealth, func() (string, error) {
		return d.gate().wait(ctx, ids)
	})
	if err != nil {
		return r.restore(ctx, ch, done, err, res)
	}

	_ = r.rec.run(stepFinish, func() (string, error) {
		ctx, cancel := quick(ctx)
		defer cancel()
		var errs []error
		detail := "done"
		if ch.edit != nil {
			errs = append(errs, ch.edit.dropBackup())
		}
		if replaced := done.replacedID; d.opts.CleanupOld && replaced != "" && replaced != s.imageID && replaced != ch.imageID {
			msg, err := d.removeReplaced(ctx, replaced, s.image, project)
			detail, errs = msg, append(errs, err)
		}
		// The rollout succeeded: a cleanup problem is reported, not undone.
		return detail, errors.Join(errs...)
	})
	res.Outcome = ch.success
	res.Running = ch.want.Digest
	return res
}

// fetch makes the image to run local: already there by digest, or pulled.
func (r *rollout) fetch(ctx context.Context, ch *change) error {
	d := r.d
	var local bool
	err := r.rec.run(stepPull, func() (string, error) {
		qctx, cancel := quick(ctx)
		defer cancel()
		if id, err := d.checkLocalDigest(qctx, ch.want); err == nil {
			ch.imageID, local = id, true
			return "already local", nil
		}
		_, err := d.pullByDigest(ctx, ch.want)
		if err != nil {
			return "", err
		}
		return "pulled " + ch.want.Repo() + "@" + ch.want.Digest, nil
	})
	if err != nil || local {
		return err
	}
	return r.rec.run(stepVerifyDigest, func() (string, error) {
		ctx, cancel := quick(ctx)
		defer cancel()
		id, err := d.checkLocalDigest(ctx, ch.want)
		if err != nil {
			return "", err
		}
		ch.imageID = id
		return fmt.Sprintf("image %s is %s", shortID(id), ch.want.Digest), nil
	})
}

// restore undoes a failed change under its own deadline (the caller's
// context may be what ended it) and reports the outcome: rolled back when
// the previous version runs and is healthy again, failed with manual action
// needed when it could not be restored. It never retries.
func (r *rollout) restore(ctx context.Context, ch *change, done progress, cause error, res deployer.Result) deployer.Result {
	d, s := r.d, ch.s
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.opts.RestoreTimeout)
	defer cancel()
	var he *deployer.HealthError
	if errors.As(cause, &he) {
		res.Logs = he.Logs
		res.FailedDigest = ch.want.Digest
	}
	res.Cause = cause
	// The backup of a rewritten file is dropped when the restore ends, not
	// when the file is put back: an agent killed in between must find it
	// (the containers may still run the new version).
	dropBackup := func() error {
		if done.fileWritten {
			return ch.edit.dropBackup()
		}
		return nil
	}
	fail := func(err error) deployer.Result {
		res.Outcome = deployer.Failed
		res.ManualAction = true
		res.Running = ""
		res.Cause = errors.Join(cause, fmt.Errorf("restoring the previous version failed, manual action needed (previous image %s is tagged %s): %w",
			shortID(s.imageID), rollbackRef(s.image, r.target), err), dropBackup())
		return res
	}
	if done.fileWritten {
		if err := r.rec.run(stepRestoreFiles, func() (string, error) {
			return "restored " + ch.edit.file + " (its backup is kept until the restore ends)", ch.edit.putBack()
		}); err != nil {
			return fail(err)
		}
	}
	_, pinned := cutDigest(s.config.Image)
	retag := !pinned && (done.tagMoved || done.fileWritten)
	reprotect := done.protected && done.replacedID != "" && done.replacedID != s.imageID
	if retag || reprotect {
		if err := r.rec.run(stepRestoreTag, func() (string, error) {
			var moved []string
			if retag {
				if err := retryUnreachable(rctx, func() error { return d.tag(rctx, s.imageID, s.config.Image) }); err != nil {
					return "", err
				}
				moved = append(moved, fmt.Sprintf("%s → %s", s.config.Image, shortID(s.imageID)))
			}
			if reprotect {
				rbRef := rollbackRef(s.image, r.target)
				if err := retryUnreachable(rctx, func() error { return d.tag(rctx, done.replacedID, rbRef) }); err != nil {
					return "", err
				}
				moved = append(moved, fmt.Sprintf("%s → %s", rbRef, shortID(done.replacedID)))
			}
			return strings.Join(moved, ", "), nil
		}); err != nil {
			return fail(err)
		}
	}
	if !done.converging {
		// Nothing that runs was touched.
		if err := dropBackup(); err != nil {
			return fail(err)
		}
		res.Outcome = deployer.Failed
		res.Running = s.running
		return res
	}
	var ids []string
	if err := r.rec.run(stepRestoreConverge, func() (string, error) {
		err := retryUnreachable(rctx, func() error {
			var err error
			ids, err = d.converge(rctx, s.project, s.name, len(s.containers), ownLabels(s.containers[0].Labels), s.imageID)
			return err
		})
		return fmt.Sprintf("%d container(s) back on %s", len(ids), shortID(s.imageID)), err
	}); err != nil {
		return fail(err)
	}
	if err := r.rec.run(stepRestoreHealth, func() (string, error) {
		var detail string
		err := retryUnreachable(rctx, func() error {
			var err error
			detail, err = d.gate().wait(rctx, ids)
			return err
		})
		return detail, err
	}); err != nil {
		return fail(err)
	}
	if err := dropBackup(); err != nil {
		return fail(err)
	}
	res.Outcome = deployer.RolledBack
	if ch.success == deployer.RolledBack {
		// A manual rollback that failed and was undone: the version from
		// before the rollback runs again; nothing was rolled back.
		res.Outcome = deployer.Failed
	}
	res.Running = s.running
	return res
}
