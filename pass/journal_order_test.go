package pass

import (
	"context"
	"testing"

	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/state"
	"github.com/shipwatch/shipwatch/verify"
)

// journalWatch is the state store that records, when a rollout's journal
// ends, what the history says about the target at that moment.
type journalWatch struct {
	*state.Store
	atEnd []int // history entries of the target when its journal ended
	mark  []bool
}

func (j *journalWatch) EndJournal(target string) error {
	h, _ := j.Store.History(target, 0)
	j.atEnd = append(j.atEnd, len(h))
	_, ok, _ := j.Store.HighWater(target)
	j.mark = append(j.mark, ok)
	return j.Store.EndJournal(target)
}

// A rollout's outcome is in the state file before its journal ends. An
// agent killed between the two used to leave a rollout nothing recorded:
// no journal for the next start to recover, no history entry, no
// high-water mark (so no downgrade protection). Found by the fault suite
// (internal/faults, class kill-swarm, SIGKILL when Swarm reported the update
// completed).
func TestRolloutRecordedBeforeItsJournalEnds(t *testing.T) {
	f := newFixture(t, "")
	w := &journalWatch{Store: f.store}
	f.deps.Store = w
	f.service("web", "1.4", nil)
	f.v.decisions[dNew] = verify.Allowed
	f.offer("web", "1.4", dNew)

	res := f.run(t, Options{Mode: Agent})

	if res["web"].Outcome != deployer.Updated {
		t.Fatalf("outcome %s (%s), want updated", res["web"].Outcome, res["web"].Reason)
	}
	if len(w.atEnd) != 1 || w.atEnd[0] != 1 || !w.mark[0] {
		t.Errorf("when the journal ended: %v history entries, mark recorded %v; want the update's entry and its mark", w.atEnd, w.mark)
	}
	if h, _ := f.store.History("compose/p/web", 0); len(h) != 1 {
		t.Errorf("history has %d entries after the pass, want exactly 1 (not written twice)", len(h))
	}
	if got := f.n.kinds(); got != "updated:compose/p/web" {
		t.Errorf("notifications = %s, want one updated", got)
	}
}

// The same for a recovery (and a rollback by hand): its history entry is
// written before its journal ends.
func TestRecoveryRecordedBeforeItsJournalEnds(t *testing.T) {
	f := newFixture(t, "")
	w := &journalWatch{Store: f.store}
	f.deps.Store = w
	f.service("web", "1.4", nil)
	j := state.Journal{Target: "compose/p/web", Kind: "compose", From: dOld, FromImage: "registry.example.com/web:1.4", To: "registry.example.com/web:1.4@" + dNew, Step: "converge"}
	if err := f.store.BeginJournal(j); err != nil {
		t.Fatal(err)
	}

	res := Recover(context.Background(), f.deps, []state.Journal{j})

	if len(res) != 1 || res[0].Outcome != deployer.RolledBack {
		t.Fatalf("recovery = %+v, want rolled-back", res)
	}
	if len(w.atEnd) != 1 || w.atEnd[0] != 1 {
		t.Errorf("history entries when the recovery's journal ended: %v, want its entry", w.atEnd)
	}
	if h, _ := f.store.History("compose/p/web", 0); len(h) != 1 || h[0].Mode != "recover" {
		t.Errorf("history = %+v, want one recover entry", h)
	}
}
