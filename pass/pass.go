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
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/shipwatch/shipwatch/config"
	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/discovery"
	"github.com/shipwatch/shipwatch/imageref"
	"github.com/shipwatch/shipwatch/state"
	"github.com/shipwatch/shipwatch/verify"
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
	Verify(ctx context.Context, image imageref.Ref) verify.Verdict
}

// Deps are the parts a pass is made of. Build them once at start-up.
type Deps struct {
	Config    *config.Config
	Engine    discovery.Engine
	Watcher   Watcher
	Verifier  Verifier
	Deployers map[deployer.Kind]deployer.Deployer
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
	Verdict   *verify.Verdict
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

	found, err := discovery.Discover(ctx, deps.Engine)
	if err != nil {
		return rep, fmt.Errorf("discover targets: %w", err)
	}
	rep.Notes = found.Notes

	work, ignored, err := selectTargets(deps, found.Targets, opts)
	rep.Ignored = ignored
	if err != nil {
		return rep, err
	}
	results := watch(ctx, deps, work, opts)
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

type work struct {
	target deployer.Target
	policy config.Effective
}

// selectTargets keeps the enabled, manageable targets that the options select.
func selectTargets(deps Deps, targets []deployer.Target, opts Options) ([]work, []Ignored, error) {
	var out []work
	var ignored []Ignored
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
		if opts.Filter != nil && !opts.Filter(t, eff) {
			continue
		}
		out = append(out, work{target: t, policy: eff})
	}
	if len(opts.Targets) > 0 && len(out) == 0 {
		return nil, ignored, fmt.Errorf("%w %s; `shipwatch check` lists the targets on this engine", ErrNoTarget, strings.Join(opts.Targets, ", "))
	}
	if opts.To != "" && len(out) != 1 {
		return nil, ignored, fmt.Errorf("%w: --to needs exactly one target, %d selected", ErrSelection, len(out))
	}
	return out, ignored, nil
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

// watch asks the registries for a candidate for every target in one batch,
// so that targets sharing an image share its requests.
func watch(ctx context.Context, deps Deps, ws []work, opts Options) []TargetResult {
	results := make([]TargetResult, len(ws))
	var reqs []watcher.Request
	var idx []int
	for i, w := range ws {
		r := TargetResult{Target: w.target, Policy: w.policy}
		switch {
		case w.policy.Update == "invalid":
			r.Outcome = deployer.Failed
			_, _, err := config.LabelPolicyOf(w.target.Labels)
			r.Err, r.Reason = err, fmt.Sprintf("invalid shipwatch labels: %v", err)
		case opts.To != "":
			c, err := forced(ctx, deps, w.target, opts.To)
			if err != nil {
				r.Outcome, r.Err, r.Reason = deployer.Failed, err, err.Error()
			} else {
				r.Candidate, r.Change = c, changeOf(w.target, c)
				r.Reason = "requested by hand: " + opts.To
				if r.Change == "" {
					r.Outcome, r.Reason = deployer.UpToDate, "already runs "+shortDigest(c.Digest)
				}
			}
		case w.policy.Freeze:
			r.Outcome, r.Reason = deployer.UpToDate, "frozen by policy ("+w.policy.Source+")"
		case w.policy.Update == config.UpdateNone:
			r.Outcome, r.Reason = deployer.UpToDate, "update: none ("+w.policy.Source+")"
		case w.target.Image.Tag == "":
			r.Outcome, r.Reason = deployer.UpToDate, "deployed by digest without a tag: nothing to follow"
		default:
			pol, err := deps.Policies.For(w.policy)
			if err != nil {
				r.Outcome, r.Err, r.Reason = deployer.Failed, err, err.Error()
				break
			}
			reqs = append(reqs, watcher.Request{Key: w.target.ID, Image: w.target.Image, Running: w.target.Digest, Policy: pol})
			idx = append(idx, i)
		}
		results[i] = r
	}
	if len(reqs) == 0 {
		return results
	}
	for j, res := range deps.Watcher.Check(ctx, reqs) {
		r := &results[idx[j]]
		switch {
		case res.Err != nil:
			r.Outcome, r.Err, r.Reason = deployer.Failed, res.Err, "could not check: "+res.Err.Error()
		case res.Change == watcher.ChangeNone:
			r.Outcome, r.Reason = deployer.UpToDate, res.Reason
		default:
			r.Candidate, r.Reason = res.Candidate, res.Reason
			r.Change = "digest"
			if res.Change == watcher.ChangeTag {
				r.Change = "tag"
			}
		}
	}
	return results
}

// forced resolves an operator's --to into a pinned candidate.
func forced(ctx context.Context, deps Deps, t deployer.Target, to string) (imageref.Ref, error) {
	if imageref.ValidDigest(to) {
		return t.Image.WithDigest(to), nil
	}
	if !imageref.ValidTag(to) {
		return imageref.Ref{}, fmt.Errorf("--to %q is neither a tag nor a sha256 digest", to)
	}
	ref := t.Image.WithTag(to)
	d, err := deps.Watcher.Resolve(ctx, ref)
	if err != nil {
		return imageref.Ref{}, fmt.Errorf("resolve %s: %w", ref.Familiar(), err)
	}
	return ref.WithDigest(d), nil
}

func changeOf(t deployer.Target, c imageref.Ref) string {
	switch {
	case c.Tag != t.Image.Tag:
		return "tag"
	case c.Digest != t.Digest:
		return "digest"
	}
	return ""
}

// verifyAll verifies every candidate (each distinct digest once).
func verifyAll(ctx context.Context, deps Deps, results []TargetResult) []TargetResult {
	cache := map[string]verify.Verdict{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, max(1, deps.Config.Concurrency))
	var todo []string
	for _, r := range results {
		if r.Outcome == "" && r.Candidate.Digest != "" {
			key := r.Candidate.Repo() + "@" + r.Candidate.Digest
			if _, ok := cache[key]; !ok {
				cache[key] = verify.Verdict{}
				todo = append(todo, key)
			}
		}
	}
	for _, key := range todo {
		ref, _ := imageref.Parse(key)
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			v := verifyOne(ctx, deps, ref)
			mu.Lock()
			cache[key] = v
			mu.Unlock()
		}()
	}
	wg.Wait()
	for i := range results {
		r := &results[i]
		if r.Outcome != "" || r.Candidate.Digest == "" {
			continue
		}
		v := cache[r.Candidate.Repo()+"@"+r.Candidate.Digest]
		r.Verdict = &v
		switch {
		case v.Decision == verify.Allowed:
		case v.Decision == verify.Blocked && v.Mode == verify.ModeWarn:
			r.Warning = "verification would block it (" + firstFailure(v) + ") but policy " + v.Policy + " is in warn mode"
			r.Reason += "; " + r.Warning
		case v.Decision == verify.Blocked:
			r.Outcome, r.Reason = deployer.Blocked, "verification blocked "+shortDigest(r.Candidate.Digest)+": "+firstFailure(v)
		default:
			r.Outcome, r.Reason = deployer.Failed, "verification could not decide (will retry): "+firstFailure(v)
		}
	}
	return results
}

func verifyOne(ctx context.Context, deps Deps, ref imageref.Ref) verify.Verdict {
	if deps.Verifier == nil {
		return verify.Verdict{Image: ref.String(), Decision: verify.Blocked, Reasons: []verify.Reason{{Rule: "policy", Message: "verification is not configured: nothing is trusted, so nothing is deployed (configure verify.policies)"}}}
	}
	return deps.Verifier.Verify(ctx, ref)
}

func firstFailure(v verify.Verdict) string {
	var msgs []string
	for _, r := range v.Reasons {
		if !r.OK {
			msgs = append(msgs, r.Message)
		}
	}
	if len(msgs) == 0 {
		return "no reason given"
	}
	return strings.Join(msgs, "; ")
}

// deployAll rolls out the allowed candidates, wave by wave (a wave starts
// only if every rollout of the waves before it succeeded). Within a wave,
// the services of one Compose project go one after the other, dependencies
// first; different projects and Swarm services go in parallel, at most
// Config.Concurrency at once; a target never has two rollouts at a time.
func deployAll(ctx context.Context, deps Deps, results []TargetResult, opts Options) []TargetResult {
	var idx []int
	for i, r := range results {
		if r.Outcome == "" && r.Candidate.Digest != "" {
			idx = append(idx, i)
		}
	}
	failedWave := -1
	for _, wave := range waveOrder(results, idx) {
		if failedWave >= 0 {
			for _, i := range wave {
				results[i].Outcome = deployer.Available
				results[i].Reason = fmt.Sprintf("verified; held back because a rollout in wave %d failed", failedWave)
			}
			continue
		}
		var wg sync.WaitGroup
		sem := make(chan struct{}, max(1, deps.Config.Concurrency))
		for _, group := range groupByProject(results, wave) {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				for _, i := range group {
					deployOne(ctx, deps, &results[i], opts)
				}
			}()
		}
		wg.Wait()
		for _, i := range wave {
			if o := results[i].Outcome; o == deployer.RolledBack || o == deployer.Failed {
				failedWave = results[i].Policy.Wave
			}
		}
	}
	return results
}

// groupByProject splits an ordered wave into groups that may run in
// parallel: one per Compose project (keeping the order), one per Swarm service.
func groupByProject(results []TargetResult, wave []int) [][]int {
	var keys []string
	groups := map[string][]int{}
	for _, i := range wave {
		t := results[i].Target
		key := t.ID
		if t.Compose != nil {
			key = "compose/" + t.Compose.Project
		}
		if _, ok := groups[key]; !ok {
			keys = append(keys, key)
		}
		groups[key] = append(groups[key], i)
	}
	out := make([][]int, 0, len(keys))
	for _, k := range keys {
		out = append(out, groups[k])
	}
	return out
}

func deployOne(ctx context.Context, deps Deps, r *TargetResult, opts Options) {
	d, ok := deps.Deployers[r.Target.Kind]
	if !ok {
		r.Outcome, r.Reason = deployer.Failed, fmt.Sprintf("no deployer for %s targets", r.Target.Kind)
		return
	}
	if deps.Locks != nil {
		if !deps.Locks.TryLock(r.Target.ID) {
			r.Outcome, r.Reason = deployer.Available, "verified; another rollout of this target is in progress"
			return
		}
		defer deps.Locks.Unlock(r.Target.ID)
	}
	dctx, cancel := graceContext(ctx, deps.RolloutGrace)
	defer cancel()
	log := deps.Logger.With().Str("target", r.Target.ID).Logger()
	if deps.Store != nil {
		j := state.Journal{Target: r.Target.ID, Kind: string(r.Target.Kind), From: r.Target.Digest, FromImage: r.Target.Image.String(), To: r.Candidate.String(), Step: "start"}
		if err := deps.Store.BeginJournal(j); err != nil {
			// Without a journal a crash could not be recovered: do not start.
			r.Outcome, r.Err, r.Reason = deployer.Failed, err, "state: cannot write the rollout journal: "+err.Error()
			return
		}
		defer func() {
			if err := deps.Store.EndJournal(r.Target.ID); err != nil {
				log.Error().Err(err).Msg("end rollout journal")
			}
		}()
	}
	progress := func(s deployer.Step) {
		if deps.Store != nil {
			if err := deps.Store.StepJournal(r.Target.ID, s.Name); err != nil {
				log.Error().Err(err).Msg("journal step")
			}
		}
		if deps.Progress != nil {
			deps.Progress(r.Target, s)
		}
	}
	log.Debug().Str("to", r.Candidate.String()).Str("change", r.Change).Msg("rollout starting")
	start := time.Now()
	res := d.Deploy(dctx, deployer.Plan{Target: r.Target, To: r.Candidate, AllowDrift: opts.AllowDrift}, progress)
	r.Deploy, r.Took = &res, time.Since(start)
	r.Outcome = res.Outcome
	switch res.Outcome {
	case deployer.Updated:
		r.Reason = "now runs " + r.Candidate.Familiar()
	case deployer.UpToDate:
		r.Reason = "already runs " + shortDigest(r.Candidate.Digest)
	default:
		r.Err = res.Cause
		r.Reason = fmt.Sprintf("%s: %v", res.Outcome, res.Cause)
		if res.ManualAction {
			r.Reason += " — manual action needed"
		}
	}
	if r.Warning != "" {
		r.Reason += "; " + r.Warning
	}
}

// graceContext returns a context that outlives parent by grace: a rollout
// that is running when the agent is told to stop gets grace to finish or
// roll back, rather than being cut halfway.
func graceContext(parent context.Context, grace time.Duration) (context.Context, context.CancelFunc) {
	if grace <= 0 {
		return context.WithCancel(parent)
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	stop := context.AfterFunc(parent, func() {
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-t.C:
			cancel()
		case <-ctx.Done():
		}
	})
	return ctx, func() { stop(); cancel() }
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
	found, err := discovery.Discover(ctx, deps.Engine)
	if err != nil {
		return nil, fmt.Errorf("discover targets: %w", err)
	}
	ws, _, err := selectTargets(deps, found.Targets, Options{})
	if err != nil {
		return nil, err
	}
	out := make([]Enabled, 0, len(ws))
	for _, w := range ws {
		out = append(out, Enabled{Target: w.target, Policy: w.policy})
	}
	return out, nil
}
