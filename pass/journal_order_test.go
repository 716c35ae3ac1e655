package pass

import (
	"context"
	"sort"
	"strings"
	"testing"

	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/state"
	"github.com/shipwatch/shipwatch/verify/verdict"
)

// journalWatch is the state store that notes how each journal ended: in
// the same write as the outcome it records ("with updated, mark"), or on its
// own ("alone").
type journalWatch struct {
	*state.Store
	ends []string
}

func (j *journalWatch) Record(o state.Outcome, keep int) (state.Entry, error) {
	if o.EndJournal {
		note := "with " + o.Entry.Outcome
		if o.Mark != nil {
			note += ", mark"
		}
		if o.Quarantine != nil {
			note += ", quarantine"
		}
		j.ends = append(j.ends, note)
	}
	return j.Store.Record(o, keep)
}

func (j *journalWatch) EndJournal(target string) error {
	j.ends = append(j.ends, "alone")
	return j.Store.EndJournal(target)
}

// A rollout's outcome is written in the same transaction that ends its
// journal. An agent killed between the two used to leave a rollout nothing
// recorded: no journal for the next start to recover, no history entry, no
// high-water mark (so no downgrade protection). Found by the fault suite
// (internal/faults, class kill-swarm, SIGKILL when Swarm reported the update
// completed). And a reader of the history saw a rollback before the
// quarantine it caused (class unhealthy, CI on 2026-11-28).
func TestRolloutRecordedAsItsJournalEnds(t *testing.T) {
	f := newFixture(t, "")
	w := &journalWatch{Store: f.store}
	f.deps.Store = w
	f.service("web", "1.4", nil)
	f.service("api", "2.0", nil)
	f.offer("web", "1.4", dNew)
	f.offer("api", "2.0", dBad)
	f.v.decisions[dNew], f.v.decisions[dBad] = verdict.Allowed, verdict.Allowed
	f.d.outcomes[dBad] = deployer.RolledBack

	res := f.run(t, Options{Mode: Agent})

	if res["web"].Outcome != deployer.Updated || res["api"].Outcome != deployer.RolledBack {
		t.Fatalf("outcomes: web %s, api %s; want updated, rolled-back", res["web"].Outcome, res["api"].Outcome)
	}
	sort.Strings(w.ends)
	if got := strings.Join(w.ends, "; "); got != "with rolled-back, quarantine; with updated, mark" {
		t.Errorf("journals ended: %s; want each with its outcome", got)
	}
	if h, _ := f.store.History("compose/p/web", 0); len(h) != 1 {
		t.Errorf("history has %d entries after the pass, want exactly 1 (not written twice)", len(h))
	}
	if got := f.n.kinds(); got != "updated:compose/p/web,rolled-back:compose/p/api" && got != "rolled-back:compose/p/api,updated:compose/p/web" {
		t.Errorf("notifications = %s, want one updated and one rolled-back", got)
	}
}

// The same for a recovery (and a rollback by hand): its history entry is
// written as its journal ends.
func TestRecoveryRecordedAsItsJournalEnds(t *testing.T) {
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
	if got := strings.Join(w.ends, "; "); got != "with rolled-back" {
		t.Errorf("journal ended: %s; want with the recovery's entry", got)
	}
	if h, _ := f.store.History("compose/p/web", 0); len(h) != 1 || h[0].Mode != "recover" {
		t.Errorf("history = %+v, want one recover entry", h)
	}
}
