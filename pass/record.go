package pass

import (
	"fmt"
	"sync"
	"time"

	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/notify"
	"github.com/shipwatch/shipwatch/state"
	"github.com/shipwatch/shipwatch/verify"
)

// Notifier tells people what happened (implemented by *notify.Notifier).
type Notifier interface {
	Notify(ev notify.Event)
}

// Metrics counts what passes do (implemented by *metrics.Metrics).
type Metrics interface {
	Pass(mode string, took time.Duration)
	Check(outcome string)
	Update(target, outcome string, took time.Duration)
	LastSuccess(target string, t time.Time)
	Verification(decision string)
}

// Locks makes sure only one rollout per target runs at a time in this process
// (the state file's lock keeps other agents out).
type Locks struct {
	mu   sync.Mutex
	busy map[string]bool
}

// TryLock takes target's lock if it is free.
func (l *Locks) TryLock(target string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.busy == nil {
		l.busy = map[string]bool{}
	}
	if l.busy[target] {
		return false
	}
	l.busy[target] = true
	return true
}

// Unlock releases target's lock.
func (l *Locks) Unlock(target string) {
	l.mu.Lock()
	delete(l.busy, target)
	l.mu.Unlock()
}

// record writes what the pass decided and did: history for every target
// that had a candidate, quarantine for digests that failed their rollout,
// high-water marks after updates, notifications and metrics.
func record(deps Deps, rep Report) {
	if deps.Metrics != nil {
		deps.Metrics.Pass(rep.Mode.String(), rep.Took)
	}
	for _, r := range rep.Targets {
		if deps.Metrics != nil {
			deps.Metrics.Check(string(r.Outcome))
			if r.Verdict != nil {
				deps.Metrics.Verification(string(r.Verdict.Decision))
			}
			if r.Deploy != nil {
				deps.Metrics.Update(r.Target.ID, string(r.Outcome), r.Took)
			}
			if r.Outcome == deployer.Updated || r.Outcome == deployer.UpToDate {
				deps.Metrics.LastSuccess(r.Target.ID, rep.Started.Add(rep.Took))
			}
		}
		if deps.Store == nil || rep.Mode == Check || rep.DryRun {
			continue
		}
		if r.Candidate.Digest == "" && r.Deploy == nil && r.Outcome != deployer.Failed {
			continue // nothing happened worth a line of history
		}
		if r.Deploy == nil {
			if !persist(deps, rep.Mode, r) {
				continue
			}
		}
		// A rollout's outcome was persisted by deployOne, before its
		// journal ended.
		notifyOutcome(deps, r)
	}
}

// persist writes one target's outcome to the state store: its history
// entry, the quarantine of a digest that failed its rollout, the
// high-water mark after an update. It reports false when the entry repeats
// a decision already written (nothing to notify either).
func persist(deps Deps, mode Mode, r TargetResult) bool {
	log := deps.Logger.With().Str("target", r.Target.ID).Logger()
	if r.Deploy == nil && mode == Agent {
		// A decision without a rollout (blocked, waiting, could not
		// check) is written once, not on every pass that repeats it.
		key := "history/" + r.Target.ID + "/" + r.Candidate.Digest + "/" + string(r.Outcome) + "/" + r.Reason
		if first, err := deps.Store.FirstNotice(key); err != nil || !first {
			return false
		}
	}
	e := state.Entry{
		Time:   deps.now().UTC(),
		Target: r.Target.ID, Mode: mode.String(), Image: r.Target.Image.String(),
		From: r.Target.Digest, Outcome: string(r.Outcome), Reason: r.Reason,
		DurationMS: r.Took.Milliseconds(),
	}
	if r.Candidate.Digest != "" {
		e.To = r.Candidate.String()
	}
	if v := r.Verdict; v != nil {
		e.Decision, e.Policy, e.Signer = string(v.Decision), v.Policy, v.Signer
		e.Scan = scanSummary(v)
	}
	if r.Deploy != nil {
		e.Running, e.Deployed = r.Deploy.Running, true
	}
	if _, err := deps.Store.AddHistory(e, deps.Config.State.History); err != nil {
		log.Error().Err(err).Msg("record history")
	}
	if r.Deploy != nil && r.Deploy.FailedDigest != "" {
		q := state.Quarantined{Target: r.Target.ID, Digest: r.Deploy.FailedDigest, Image: r.Candidate.Tagged().String(), Reason: causeText(r.Deploy)}
		if err := deps.Store.Quarantine(q); err != nil {
			log.Error().Err(err).Msg("quarantine failed digest")
		}
	}
	if r.Outcome == deployer.Updated {
		mark := state.Mark{Tag: r.Candidate.Tag, Digest: r.Candidate.Digest}
		if from := r.Target.Digest; from != "" && from != r.Candidate.Digest {
			// What ran before is superseded even without a mark of its
			// own (it ran before the agent's first update): a tag moved
			// back to it is a silent downgrade.
			mark.Superseded = []string{from}
		}
		if err := deps.Store.SetHighWater(r.Target.ID, mark); err != nil {
			log.Error().Err(err).Msg("record high-water mark")
		}
		if err := deps.Store.ClearApproval(r.Target.ID); err != nil {
			log.Error().Err(err).Msg("clear approval")
		}
	}
	return true
}

func causeText(res *deployer.Result) string {
	if res.Cause == nil {
		return string(res.Outcome)
	}
	return res.Cause.Error()
}

func scanSummary(v *verify.Verdict) string {
	if v.Scan == nil {
		return ""
	}
	return fmt.Sprintf("%+v", *v.Scan)
}

// notifyOutcome sends one notification per event worth telling; a blocked
// digest is told once, however many passes see it.
func notifyOutcome(deps Deps, r TargetResult) {
	if deps.Notifier == nil {
		return
	}
	kind := ""
	switch {
	case r.Outcome == deployer.Updated:
		kind = "updated"
	case r.Outcome == deployer.RolledBack:
		kind = "rolled-back"
	case r.Outcome == deployer.Blocked:
		kind = "blocked"
	case r.Outcome == deployer.Failed:
		kind = "failed"
	case r.NeedsApproval:
		kind = "approval-needed"
	default:
		return
	}
	if kind == "blocked" || kind == "approval-needed" || (kind == "failed" && r.Deploy == nil) {
		first, err := deps.Store.FirstNotice(kind + "/" + r.Target.ID + "/" + r.Candidate.Digest + "/" + r.Reason)
		if err != nil || !first {
			return
		}
	}
	ev := notify.Event{
		Kind: kind, Target: r.Target.ID, Image: r.Target.Image.String(),
		From: r.Target.Digest, To: r.Candidate.Digest, Reason: r.Reason, Time: time.Now().UTC(),
	}
	if v := r.Verdict; v != nil {
		ev.Signer, ev.Scan = v.Signer, scanSummary(v)
	}
	deps.Notifier.Notify(ev)
}
