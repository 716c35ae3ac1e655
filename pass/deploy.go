package pass

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/state"
)

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
	ended := false // the journal ended with the outcome's record
	if deps.Store != nil {
		j := state.Journal{Target: r.Target.ID, Kind: string(r.Target.Kind), From: r.Target.Digest, FromImage: r.Target.Image.String(), To: r.Candidate.String(), Step: "start"}
		if err := deps.Store.BeginJournal(j); err != nil {
			// Without a journal a crash could not be recovered: do not start.
			r.Outcome, r.Err, r.Reason = deployer.Failed, err, "state: cannot write the rollout journal: "+err.Error()
			return
		}
		defer func() {
			if ended {
				return
			}
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
	// The outcome and the end of the journal are one write: an agent
	// killed before it leaves the journal for the next start to reconcile;
	// after it, the history, quarantine and high-water mark are all there.
	if deps.Store != nil {
		ended = persist(deps, opts.Mode, *r, true)
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
