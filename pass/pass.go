// Package pass runs one shipwatch pass: discover the targets on the engine,
// watch their registries for a candidate, verify the candidate, deploy it,
// and report one named outcome per target. The daemon's schedule, webhooks,
// the HTTP API, `shipwatch check` and `shipwatch rollout` all call Run; they
// differ only in the Mode they pass.
package pass

import (
	"context"
	"errors"
	"fmt"
	"path"
	"reflect"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/shipwatch/shipwatch/config"
	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/discovery"
	"github.com/shipwatch/shipwatch/imageref"
	"github.com/shipwatch/shipwatch/verify/verdict"
	"github.com/shipwatch/shipwatch/watcher"
)

// Mode says how far a pass goes.
type Mode int

const (
	// Check stops before deploy: the pass is a plan.
	Check Mode = iota
	// Rollout deploys the selected targets by hand (shipwatch rollout).
	Rollout
	// Agent deploys what policy allows (the daemon).
	Agent
)

func (m Mode) String() string {
	return [...]string{"check", "rollout", "agent"}[m]
}

// Watcher finds candidates in registries (implemented by *watcher.Watcher).
type Watcher interface {
	Check(ctx context.Context, reqs []watcher.Request) []watcher.Result
	Resolve(ctx context.Context, ref imageref.Ref) (string, error)
}

// Verifier decides whether a pinned digest may run (implemented by *verify.Verifier).
type Verifier interface {
	Verify(ctx context.Context, image imageref.Ref) verdict.Verdict
}

// TargetSource is where a pass gets the engine's targets from when it may
// reuse an earlier discovery (implemented by *discovery.Cache).
type TargetSource interface {
	// Discover returns the targets; cached says they come from an earlier
	// listing that no engine event has contradicted.
	Discover(ctx context.Context) (res discovery.Result, cached bool, err error)
	// Refresh lists the engine afresh.
	Refresh(ctx context.Context) (discovery.Result, error)
}

// Deps are the parts a pass is made of. Build them once at start-up.
type Deps struct {
	Config    *config.Config
	Engine    discovery.Engine
	Watcher   Watcher
	Verifier  Verifier
	Deployers map[deployer.Kind]deployer.Deployer
	// Targets, when set, may hand a pass an earlier discovery (the agent's
	// event-invalidated *discovery.Cache); nil: every pass lists afresh.
	Targets TargetSource
	// Policies compiles effective policies; built once by NewPolicies.
	Policies *Policies
	Logger   zerolog.Logger
	// Progress, when set, receives rollout steps as they end.
	Progress func(target deployer.Target, step deployer.Step)
	Now      func() time.Time
	// Store, Notifier and Metrics are optional (nil in a plain check).
	Store    Store
	Notifier Notifier
	Metrics  Metrics
	// Locks serialises rollouts per target across concurrent passes.
	Locks *Locks
	// RolloutGrace is how long a rollout in flight may go on after the
	// pass's context ends (agent shutdown): it finishes or rolls back under
	// its own bounded context instead of being abandoned halfway.
	RolloutGrace time.Duration
	// Self is the ID of the container shipwatch itself runs in (if any): it
	// is never updated by itself.
	Self string
}

func (d Deps) now() time.Time {
	if d.Now != nil {
		return d.Now()
	}
	return time.Now()
}

// Options select what one pass does.
type Options struct {
	Mode Mode
	// Targets limits the pass to these targets (ID like "compose/shop/web",
	// or name like "shop/web" or "api"); globs allowed. Empty: all enabled.
	Targets []string
	// To forces the candidate of the single selected target: a tag ("1.5.2")
	// or a digest ("sha256:…"). A forced candidate may be older than what
	// runs (an operator's explicit downgrade).
	To string
	// DryRun stops before deploy, like Check, in any mode.
	DryRun bool
	// AllowDrift lets Compose updates through when the running containers
	// differ from the files on disk.
	AllowDrift bool
	// Filter, when set, keeps only the targets it returns true for (the
	// agent's per-target schedules and webhook hints).
	Filter func(t deployer.Target, p config.Effective) bool
}

// TargetResult is what the pass did with one target.
type TargetResult struct {
	Target    deployer.Target
	Policy    config.Effective
	Candidate imageref.Ref // repo:tag@digest, zero when none
	Change    string       // "digest", "tag" or ""
	Verdict   *verdict.Verdict
	Deploy    *deployer.Result
	Outcome   deployer.Outcome
	Reason    string
	Err       error
	Took      time.Duration
	// NeedsApproval: the candidate waits for an operator's approval.
	NeedsApproval bool
	// Warning is set when a warn-mode policy would have blocked the candidate.
	Warning string
}

// Ignored is a discovered target the pass did not work on, and why.
type Ignored struct {
	ID     string
	Reason string
}

// Report is the result of one pass.
type Report struct {
	Mode    Mode
	DryRun  bool
	Started time.Time
	Took    time.Duration
	Targets []TargetResult
	Ignored []Ignored
	Notes   []string
	// ReusedDiscovery: the pass worked from an earlier discovery that the
	// engine's events said still held. A pass that finds something to act
	// on lists afresh first, so only a pass that acted on nothing says so.
	ReusedDiscovery bool
	// Schedules are the cron specs that enabled targets on the engine set
	// for themselves (config or shipwatch.schedule label), each with one
	// target that uses it, whether or not this pass worked on them: the
	// agent registers them from here instead of discovering again.
	Schedules map[string]string
}

// Count returns how many targets ended in outcome o.
func (r Report) Count(o deployer.Outcome) int {
	n := 0
	for _, t := range r.Targets {
		if t.Outcome == o {
			n++
		}
	}
	return n
}

// Selection errors.
var (
	// ErrNoTarget: the selection matched no target.
	ErrNoTarget = errors.New("no target matches")
	// ErrSelection: the options do not fit the selection (--to with several targets).
	ErrSelection = errors.New("invalid selection")
)

// Run runs one pass. It returns an error only when the pass as a whole could
// not run (engine unreachable, bad selection); per-target failures are
// outcomes in the report.
func Run(ctx context.Context, deps Deps, opts Options) (Report, error) {
	now := time.Now
	if deps.Now != nil {
		now = deps.Now
	}
	rep := Report{Mode: opts.Mode, DryRun: opts.DryRun, Started: now()}
	defer func() { rep.Took = now().Sub(rep.Started) }()

	found, cached, err := discoverTargets(ctx, deps)
	if err != nil {
		return rep, err
	}
	rep.Notes, rep.ReusedDiscovery = found.Notes, cached

	work, ignored, schedules, err := selectTargets(deps, found.Targets, opts)
	rep.Ignored, rep.Schedules = ignored, schedules
	if err != nil {
		return rep, err
	}
	results := watch(ctx, deps, work, opts)
	if cached && hasCandidate(results) {
		// Nothing is verified, gated, deployed or notified on the word of
		// an earlier listing: list again, and when the engine has changed
		// since (an event not yet seen), start over from what it says now.
		fresh, err := deps.Targets.Refresh(ctx)
		if err != nil {
			return rep, fmt.Errorf("discover targets: %w", err)
		}
		rep.ReusedDiscovery = false
		if !reflect.DeepEqual(fresh.Targets, found.Targets) {
			deps.Logger.Debug().Msg("the engine changed since the reused discovery: the pass starts again from a fresh one")
			deps.Targets = listed(fresh)
			return Run(ctx, deps, opts)
		}
	}
	preVerifyGates(deps, results, opts)
	results = verifyAll(ctx, deps, results)
	if opts.Mode == Check || opts.DryRun {
		for i := range results {
			if results[i].Outcome == "" && results[i].Candidate.Digest != "" {
				results[i].Outcome = deployer.Available
			}
		}
	} else {
		deployGates(deps, results, opts, now())
		results = deployAll(ctx, deps, results, opts)
	}
	for i := range results {
		r := &results[i]
		if r.Outcome == "" { // not decided on any path: never report success by accident
			r.Outcome, r.Reason = deployer.Failed, "internal error: no outcome decided"
		}
		logOutcome(deps.Logger, opts.Mode, *r)
	}
	rep.Targets = results
	rep.Took = now().Sub(rep.Started)
	record(deps, rep)
	return rep, nil
}

// discoverTargets lists the engine's targets, from deps.Targets when set.
func discoverTargets(ctx context.Context, deps Deps) (found discovery.Result, cached bool, err error) {
	if deps.Targets != nil {
		found, cached, err = deps.Targets.Discover(ctx)
	} else {
		found, err = discovery.Discover(ctx, deps.Engine)
	}
	if err != nil {
		return found, false, fmt.Errorf("discover targets: %w", err)
	}
	return found, cached, nil
}

// listed is a TargetSource that hands out one fresh discovery.
type listed discovery.Result

func (l listed) Discover(context.Context) (discovery.Result, bool, error) {
	return discovery.Result(l), false, nil
}

func (l listed) Refresh(context.Context) (discovery.Result, error) { return discovery.Result(l), nil }

// hasCandidate says whether the watch found anything the pass would act on.
func hasCandidate(results []TargetResult) bool {
	for _, r := range results {
		if r.Outcome == "" && r.Candidate.Digest != "" {
			return true
		}
	}
	return false
}

type work struct {
	target deployer.Target
	policy config.Effective
}

// selectTargets keeps the enabled, manageable targets that the options
// select. It also returns the schedules of the enabled targets, before
// opts.Filter (see Report.Schedules).
func selectTargets(deps Deps, targets []deployer.Target, opts Options) ([]work, []Ignored, map[string]string, error) {
	out := make([]work, 0, len(targets))
	var ignored []Ignored
	schedules := map[string]string{}
	for _, t := range targets {
		if len(opts.Targets) > 0 && !selected(t, opts.Targets) {
			continue
		}
		if t.Unmanaged != "" {
			ignored = append(ignored, Ignored{ID: t.ID, Reason: t.Unmanaged})
			continue
		}
		if isSelf(t, deps.Self) {
			ignored = append(ignored, Ignored{ID: t.ID, Reason: "this is shipwatch's own container: shipwatch does not update itself (update it with docker compose pull && docker compose up -d)"})
			continue
		}
		eff, err := deps.Config.Resolve(config.TargetRef{Kind: string(t.Kind), Name: t.Name, Labels: t.Labels})
		if err != nil {
			out = append(out, work{target: t, policy: config.Effective{Enabled: true, Update: "invalid"}})
			continue
		}
		// A target named on the command line is worked on even when not
		// opted in: the operator asked for it.
		if !eff.Enabled && len(opts.Targets) == 0 {
			ignored = append(ignored, Ignored{ID: t.ID, Reason: "not enabled (label shipwatch.enable=true or a targets entry opts it in)"})
			continue
		}
		if _, seen := schedules[eff.Schedule]; eff.Schedule != "" && !seen {
			schedules[eff.Schedule] = t.ID
		}
		if opts.Filter != nil && !opts.Filter(t, eff) {
			continue
		}
		out = append(out, work{target: t, policy: eff})
	}
	if len(opts.Targets) > 0 && len(out) == 0 {
		return nil, ignored, schedules, fmt.Errorf("%w %s; `shipwatch check` lists the targets on this engine", ErrNoTarget, strings.Join(opts.Targets, ", "))
	}
	if opts.To != "" && len(out) != 1 {
		return nil, ignored, schedules, fmt.Errorf("%w: --to needs exactly one target, %d selected", ErrSelection, len(out))
	}
	return out, ignored, schedules, nil
}

func isSelf(t deployer.Target, self string) bool {
	if self == "" || t.Compose == nil {
		return false
	}
	for _, id := range t.Compose.Containers {
		if strings.HasPrefix(id, self) {
			return true
		}
	}
	return false
}

func selected(t deployer.Target, patterns []string) bool {
	for _, p := range patterns {
		for _, name := range []string{t.ID, t.Name} {
			if ok, _ := path.Match(p, name); ok {
				return true
			}
		}
	}
	return false
}

func logOutcome(log zerolog.Logger, mode Mode, r TargetResult) {
	ev := log.Info()
	switch r.Outcome {
	case deployer.UpToDate:
		ev = log.Debug()
	case deployer.Failed, deployer.RolledBack:
		ev = log.Warn()
	case deployer.Blocked:
		ev = log.Warn()
	}
	ev = ev.Str("mode", mode.String()).Str("target", r.Target.ID).Str("outcome", string(r.Outcome)).Str("reason", r.Reason)
	if r.Candidate.Digest != "" {
		ev = ev.Str("candidate", r.Candidate.String())
	}
	ev.Msg("target outcome")
}

func shortDigest(d string) string {
	if i := strings.IndexByte(d, ':'); i >= 0 && len(d) > i+13 {
		return d[:i+13]
	}
	return d
}

// Enabled is a discovered target with its effective policy.
type Enabled struct {
	Target deployer.Target
	Policy config.Effective
}

// EnabledTargets discovers the targets and resolves their policies, without
// asking any registry (the agent uses it to set up per-target schedules).
func EnabledTargets(ctx context.Context, deps Deps) ([]Enabled, error) {
	found, _, err := discoverTargets(ctx, deps)
	if err != nil {
		return nil, err
	}
	ws, _, _, err := selectTargets(deps, found.Targets, Options{})
	if err != nil {
		return nil, err
	}
	out := make([]Enabled, 0, len(ws))
	for _, w := range ws {
		out = append(out, Enabled{Target: w.target, Policy: w.policy})
	}
	return out, nil
}
