package pass

import (
	"fmt"
	"sync"
	"time"

	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/notify"
	"github.com/shipwatch/shipwatch/state"
	"github.com/shipwatch/shipwatch/verify/verdict"
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
			if !firstNotice(deps, rep.Mode, r) {
				continue
			}
			persist(deps, rep.Mode, r, false)
		}
		// A rollout's outcome was persisted by deployOne, as its journal
		// ended.
		notifyOutcome(deps, r)
	}
}

// firstNotice reports whether a decision without a rollout (blocked,
// waiting, could not check) is new: the agent writes it once, not on every
// pass that repeats it, and does not notify it again either.
func firstNotice(deps Deps, mode Mode, r TargetResult) bool {
	if mode != Agent {
		return true
	}
	key := "history/" + r.Target.ID + "/" + r.Candidate.Digest + "/" + string(r.Outcome) + "/" + r.Reason
	first, err := deps.Store.FirstNotice(key)
	return err == nil && first
}

// persist writes one target's outcome to the state store in one
// transaction: its history entry, the quarantine of a digest that failed its
// rollout, the high-water mark after an update and, with endJournal, the end
// of its rollout journal. It reports whether the write succeeded.
func persist(deps Deps, mode Mode, r TargetResult, endJournal bool) bool {
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
	o := state.Outcome{Entry: e, EndJournal: endJournal}
	if r.Deploy != nil {
		o.Entry.Running, o.Entry.Deployed = r.Deploy.Running, true
		if r.Deploy.FailedDigest != "" {
			o.Quarantine = &state.Quarantined{Target: r.Target.ID, Digest: r.Deploy.FailedDigest, Image: r.Candidate.Tagged().String(), Reason: causeText(r.Deploy)}
		}
	}
	if r.Outcome == deployer.Updated {
		o.Mark = &state.Mark{Tag: r.Candidate.Tag, Digest: r.Candidate.Digest}
		if from := r.Target.Digest; from != "" && from != r.Candidate.Digest {
			// What ran before is superseded even without a mark of its
			// own (it ran before the agent's first update): a tag moved
			// back to it is a silent downgrade.
			o.Mark.Superseded = []string{from}
		}
		o.ClearApproval = true
	}
	if _, err := deps.Store.Record(o, deps.Config.State.History); err != nil {
		deps.Logger.Error().Err(err).Str("target", r.Target.ID).Msg("record the outcome in the state file")
		return false
	}
	return true
}

func causeText(res *deployer.Result) string {
	if res.Cause == nil {
		return string(res.Outcome)
	}
	return res.Cause.Error()
}

func scanSummary(v *verdict.Verdict) string {
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
