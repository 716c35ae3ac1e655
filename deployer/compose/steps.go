package compose

import (
	"time"

	"github.com/rs/zerolog"

	"github.com/shipwatch/shipwatch/deployer"
)

// Step names, in the order a rollout runs them. They appear in
// Result.Steps, in progress output and in docs/compose.md.
const (
	stepLoad               = "load project"
	stepDrift              = "drift guard"
	stepPlan               = "plan"
	stepPull               = "pull"
	stepVerifyDigest       = "verify digest"
	stepProtect            = "protect previous image"
	stepRewrite            = "rewrite files"
	stepTag                = "tag image"
	stepConverge           = "converge"
	stepHealth             = "health gate"
	stepFinish             = "finish"
	stepRestoreFiles       = "rollback: restore files"
	stepRestoreTag         = "rollback: restore image tag"
	stepRestoreConverge    = "rollback: converge"
	stepRestoreHealth      = "rollback: health gate"
	stepRollbackResolve    = "resolve previous version"
	stepRollbackInternal   = "rollback"
	stepRestoreInterrupted = "restore interrupted rollout"
)

// recorder times the steps of one rollout, hands each to the progress
// callback as it ends and keeps them for the Result.
type recorder struct {
	now      func() time.Time
	progress deployer.Progress
	log      zerolog.Logger
	target   string
	steps    []deployer.Step
}

// run times fn as the step name. fn returns a short detail for the output.
func (r *recorder) run(name string, fn func() (string, error)) error {
	start := r.now()
	detail, err := fn()
	r.add(deployer.Step{Name: name, Start: start, Took: r.now().Sub(start), Detail: detail, Err: err})
	return err
}

// add records a step that was timed elsewhere.
func (r *recorder) add(s deployer.Step) {
	r.steps = append(r.steps, s)
	r.log.Debug().Str("target", r.target).Str("step", s.Name).Dur("took", s.Took).Str("detail", s.Detail).Err(s.Err).Msg("compose rollout step")
	if r.progress != nil {
		r.progress(s)
	}
}

// took returns how long the named steps took together.
func (r *recorder) took(names ...string) time.Duration {
	var d time.Duration
	for _, s := range r.steps {
		for _, n := range names {
			if s.Name == n {
				d += s.Took
			}
		}
	}
	return d
}
