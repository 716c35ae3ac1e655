package pass

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/discovery"
	"github.com/shipwatch/shipwatch/state"
)

// Rollback restores the version that ran before the last update of the one
// target selector names (or the digest to, when given). When the platform
// has no previous version left (Swarm's previous spec consumed by its own
// automatic rollback), the previous digest recorded in history is used.
func Rollback(ctx context.Context, deps Deps, selector, to string) (TargetResult, error) {
	t, err := findTarget(ctx, deps, selector)
	if err != nil {
		return TargetResult{}, err
	}
	r := rollbackTarget(ctx, deps, t, to, "rollback", "rollback")
	logOutcome(deps.Logger, Rollout, r)
	return r, nil
}

// findTarget discovers the targets and returns the one selector names.
func findTarget(ctx context.Context, deps Deps, selector string) (deployer.Target, error) {
	found, err := discovery.Discover(ctx, deps.Engine)
	if err != nil {
		return deployer.Target{}, fmt.Errorf("discover targets: %w", err)
	}
	var match []deployer.Target
	for _, t := range found.Targets {
		if selected(t, []string{selector}) {
			match = append(match, t)
		}
	}
	switch {
	case len(match) == 0:
		return deployer.Target{}, fmt.Errorf("%w %s; `shipwatch check` lists the targets on this engine", ErrNoTarget, selector)
	case len(match) > 1:
		return deployer.Target{}, fmt.Errorf("%s matches %d targets (%s, %s, …); name exactly one", selector, len(match), match[0].ID, match[1].ID)
	case match[0].Unmanaged != "":
		return deployer.Target{}, fmt.Errorf("%s is not managed by shipwatch: %s", match[0].ID, match[0].Unmanaged)
	}
	return match[0], nil
}

// rollbackTarget rolls t back and records it in history as mode, in the
// same write that ends its journal: an agent killed at any point leaves
// either the journal or the history entry.
func rollbackTarget(ctx context.Context, deps Deps, t deployer.Target, to, why, mode string) (r TargetResult) {
	r = TargetResult{Target: t, Outcome: deployer.Failed}
	recorded, ended := false, false
	defer func() { // the early returns
		if !recorded {
			recordRollback(deps, r, mode, false)
		}
	}()
	d, ok := deps.Deployers[t.Kind]
	if !ok {
		r.Reason = fmt.Sprintf("no deployer for %s targets", t.Kind)
		return r
	}
	if deps.Locks != nil {
		if !deps.Locks.TryLock(t.ID) {
			r.Reason = "another rollout of this target is in progress"
			return r
		}
		defer deps.Locks.Unlock(t.ID)
	}
	dctx, cancel := graceContext(ctx, deps.RolloutGrace)
	defer cancel()
	if deps.Store != nil {
		if err := deps.Store.BeginJournal(state.Journal{Op: "rollback", Target: t.ID, Kind: string(t.Kind), From: t.Digest, FromImage: t.Image.String(), To: to, Step: "start"}); err != nil {
			r.Err, r.Reason = err, "state: cannot write the rollout journal: "+err.Error()
			return r
		}
		defer func() {
			if !ended {
				_ = deps.Store.EndJournal(t.ID)
			}
		}()
	}
	progress := func(s deployer.Step) {
		if deps.Progress != nil {
			deps.Progress(t, s)
		}
	}
	start := time.Now()
	res := d.Rollback(dctx, t, to, progress)
	if to == "" && errors.Is(res.Cause, deployer.ErrNoPrevious) && deps.Store != nil {
		if prev, err := deps.Store.LastDeployed(t.ID); err == nil && prev != "" {
			progress(deployer.Step{Name: "history", Detail: "platform has no previous version; using " + shortDigest(prev) + " from history"})
			res = d.Rollback(dctx, t, prev, progress)
		}
	}
	r.Deploy, r.Took, r.Outcome = &res, time.Since(start), res.Outcome
	switch res.Outcome {
	case deployer.Updated, deployer.RolledBack:
		r.Outcome = deployer.RolledBack
		r.Reason = why + ": now runs " + shortDigest(res.Running)
	case deployer.UpToDate:
		r.Reason = why + ": already runs " + shortDigest(res.Running)
	default:
		r.Err = res.Cause
		r.Reason = fmt.Sprintf("%s failed: %v", why, res.Cause)
		if res.ManualAction {
			r.Reason += " — manual action needed"
		}
	}
	ended = recordRollback(deps, r, mode, true)
	recorded = true
	return r
}

// recordRollback writes r to history and, with endJournal, ends its journal
// in the same transaction. It reports whether the write succeeded.
func recordRollback(deps Deps, r TargetResult, mode string, endJournal bool) bool {
	if deps.Store == nil {
		return true
	}
	e := state.Entry{Target: r.Target.ID, Mode: mode, Image: r.Target.Image.String(), From: r.Target.Digest,
		Outcome: string(r.Outcome), Reason: r.Reason, DurationMS: r.Took.Milliseconds()}
	if r.Deploy != nil {
		e.Running, e.To = r.Deploy.Running, r.Deploy.To
	}
	if _, err := deps.Store.Record(state.Outcome{Entry: e, EndJournal: endJournal}, deps.Config.State.History); err != nil {
		deps.Logger.Error().Err(err).Str("target", r.Target.ID).Msg("record history")
		return false
	}
	return true
}

// Recover finishes what a previous process left in flight: for every rollout
// journal it finds, it restores the version that ran before (or, for an
// interrupted rollback, completes the rollback), reconciling with what the
// engine reports. The interrupted digest is not quarantined (nothing proved
// it bad); the next pass offers it again.
func Recover(ctx context.Context, deps Deps, journals []state.Journal) []TargetResult {
	var out []TargetResult
	for _, j := range journals {
		log := deps.Logger.With().Str("target", j.Target).Str("step", j.Step).Int("pid", j.PID).Logger()
		log.Warn().Msg("found a rollout interrupted by a previous agent: reconciling")
		t, err := findTarget(ctx, deps, j.Target)
		if err != nil {
			log.Error().Err(err).Msg("interrupted rollout: target gone; nothing to restore")
			if deps.Store != nil {
				_ = deps.Store.EndJournal(j.Target)
				_, _ = deps.Store.AddHistory(state.Entry{Target: j.Target, Mode: "recover", To: j.To, From: j.From, Outcome: string(deployer.Failed), Reason: "interrupted rollout; the target no longer exists: " + err.Error()}, deps.Config.State.History)
			}
			continue
		}
		t = waitSwarmSettled(ctx, deps, t)
		to := j.From
		if j.Op == "rollback" {
			to = j.To
		}
		r := rollbackTarget(ctx, deps, t, to, "recovered interrupted "+opName(j.Op), "recover")
		logOutcome(deps.Logger, Agent, r)
		out = append(out, r)
	}
	return out
}

// swarmSettleWait bounds how long recovery waits for a Swarm update that
// the previous agent started to end.
const swarmSettleWait = 5 * time.Minute

// waitSwarmSettled returns t once it is not in the middle of a Swarm update.
// An agent killed right after its ServiceUpdate leaves Swarm carrying the
// update on alone; the deployer refuses to fight an update in progress, so
// restoring at once would fail and the update would then complete
// unrecorded. Bounded by swarmSettleWait and ctx.
func waitSwarmSettled(ctx context.Context, deps Deps, t deployer.Target) deployer.Target {
	deadline := time.Now().Add(swarmSettleWait)
	for t.Swarm != nil && (t.Swarm.UpdateState == "updating" || t.Swarm.UpdateState == "rollback_started") && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return t
		case <-time.After(time.Second):
		}
		next, err := findTarget(ctx, deps, t.ID)
		if err != nil {
			return t
		}
		t = next
	}
	return t
}

func opName(op string) string {
	if op == "" {
		return "rollout"
	}
	return op
}
