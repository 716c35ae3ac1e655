package state

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func open(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "state.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestHistoryNewestFirstAndTrimmed(t *testing.T) {
	s := open(t)
	for i, target := range []string{"a", "b", "a", "a"} {
		if _, err := s.AddHistory(Entry{Target: target, Outcome: "updated", From: string(rune('0' + i))}, 3); err != nil {
			t.Fatal(err)
		}
	}
	all, err := s.History("", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 3 || all[0].ID != 4 || all[2].ID != 2 {
		t.Fatalf("history = %+v, want ids 4,3,2 (trimmed to 3, newest first)", all)
	}
	a, _ := s.History("a", 1)
	if len(a) != 1 || a[0].ID != 4 {
		t.Errorf("History(a, 1) = %+v, want entry 4", a)
	}
	if d, _ := s.LastDeployed("a"); d != "3" {
		t.Errorf("LastDeployed(a) = %q, want 3", d)
	}
}

func TestQuarantine(t *testing.T) {
	s := open(t)
	s.Quarantine(Quarantined{Target: "compose/p/web", Digest: "sha256:1", Reason: "crash loop"})
	s.Quarantine(Quarantined{Target: "compose/p/web", Digest: "sha256:2"})
	s.Quarantine(Quarantined{Target: "compose/p/web2", Digest: "sha256:1"})
	if _, ok, _ := s.IsQuarantined("compose/p/web", "sha256:1"); !ok {
		t.Error("digest not quarantined")
	}
	if _, ok, _ := s.IsQuarantined("compose/p/web", "sha256:3"); ok {
		t.Error("unrelated digest quarantined")
	}
	// Clearing one target must not touch a target whose ID extends it.
	if n, _ := s.ClearQuarantine("compose/p/web", ""); n != 2 {
		t.Errorf("cleared %d, want 2", n)
	}
	if _, ok, _ := s.IsQuarantined("compose/p/web2", "sha256:1"); !ok {
		t.Error("clearing compose/p/web removed compose/p/web2's quarantine")
	}
}

func TestSecondOpenIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = Open(path, 100*time.Millisecond)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open error = %v, want ErrLocked", err)
	}
}

func TestCorruptFileIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	if err := os.WriteFile(path, []byte("this is not a bbolt file, it is garbage of some length ............................................................................................................................................................................................................................................................................................................................................................"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(path, time.Second)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open(garbage) error = %v, want ErrCorrupt", err)
	}
}

func TestJournalAndApprovals(t *testing.T) {
	s := open(t)
	if err := s.BeginJournal(Journal{Target: "swarm/api", From: "sha256:1", To: "r:1@sha256:2", Step: "update"}); err != nil {
		t.Fatal(err)
	}
	s.StepJournal("swarm/api", "gate")
	js, _ := s.Journals()
	if len(js) != 1 || js[0].Step != "gate" || js[0].PID != os.Getpid() {
		t.Fatalf("journals = %+v", js)
	}
	s.EndJournal("swarm/api")
	if js, _ := s.Journals(); len(js) != 0 {
		t.Errorf("journal left after EndJournal: %+v", js)
	}

	s.SetPending(Approval{Target: "swarm/api", Candidate: "r:2@sha256:2"})
	if _, err := s.Approve("swarm/api", "r:3@sha256:3", "ops"); err == nil {
		t.Error("approving a candidate that is not the pending one succeeded")
	}
	a, err := s.Approve("swarm/api", "r:2@sha256:2", "ops")
	if err != nil || !a.Approved || a.ApprovedBy != "ops" {
		t.Fatalf("Approve = %+v, %v", a, err)
	}
	s.SetPending(Approval{Target: "swarm/api", Candidate: "r:2@sha256:2"})
	if a, _, _ := s.Approval("swarm/api"); !a.Approved {
		t.Error("re-recording the same pending candidate dropped its approval")
	}
	s.SetPending(Approval{Target: "swarm/api", Candidate: "r:4@sha256:4"})
	if a, _, _ := s.Approval("swarm/api"); a.Approved || a.Candidate != "r:4@sha256:4" {
		t.Errorf("a newer candidate must replace the approval and need a new one: %+v", a)
	}

	if first, _ := s.FirstNotice("blocked/x/sha256:1"); !first {
		t.Error("first notice not first")
	}
	if first, _ := s.FirstNotice("blocked/x/sha256:1"); first {
		t.Error("second notice reported as first")
	}
	if err := s.Check(); err != nil {
		t.Errorf("Check: %v", err)
	}
}

func TestHighWaterSuperseded(t *testing.T) {
	s := open(t)
	for _, d := range []string{"sha256:1", "sha256:2", "sha256:3", "sha256:2"} {
		if err := s.SetHighWater("t", Mark{Tag: "1.0", Digest: d}); err != nil {
			t.Fatal(err)
		}
	}
	m, ok, err := s.HighWater("t")
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if m.Digest != "sha256:2" || strings.Join(m.Superseded, ",") != "sha256:1,sha256:3" {
		t.Errorf("mark = %+v, want digest 2 and superseded 1,3", m)
	}
}

func TestSeenKeepsFirstTime(t *testing.T) {
	s := open(t)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if got, _ := s.Seen("k", t0); !got.Equal(t0) {
		t.Errorf("first Seen = %v, want %v", got, t0)
	}
	if got, _ := s.Seen("k", t0.Add(time.Hour)); !got.Equal(t0) {
		t.Errorf("second Seen = %v, want the first time %v", got, t0)
	}
}

func TestTargetsByName(t *testing.T) {
	s := open(t)
	s.AddHistory(Entry{Target: "compose/shop/web", Outcome: "updated"}, 0)
	s.AddHistory(Entry{Target: "swarm/api", Outcome: "updated"}, 0)
	if h, _ := s.History("shop/web", 0); len(h) != 1 || h[0].Target != "compose/shop/web" {
		t.Errorf("History(shop/web) = %+v", h)
	}
	s.SetPending(Approval{Target: "swarm/api", Candidate: "r:1@sha256:1"})
	if a, err := s.Approve("api", "", "ops"); err != nil || a.Target != "swarm/api" {
		t.Errorf("Approve(api) = %+v, %v", a, err)
	}
	s.Quarantine(Quarantined{Target: "compose/shop/web", Digest: "sha256:9"})
	if n, _ := s.ClearQuarantine("shop/web", ""); n != 1 {
		t.Errorf("ClearQuarantine(shop/web) cleared %d, want 1", n)
	}
}

func TestRecordWritesAnOutcomeWhole(t *testing.T) {
	s := open(t)
	const target = "swarm/api"
	if err := s.BeginJournal(Journal{Target: target, From: "sha256:old", To: "app:1@sha256:bad"}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPending(Approval{Target: target, Candidate: "app:1@sha256:new"}); err != nil {
		t.Fatal(err)
	}
	e, err := s.Record(Outcome{
		Entry:      Entry{Target: target, Outcome: "rolled-back"},
		Quarantine: &Quarantined{Target: target, Digest: "sha256:bad"},
		Mark:       &Mark{Tag: "1", Digest: "sha256:old"},
		EndJournal: true, ClearApproval: true,
	}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if e.ID != 1 || e.Time.IsZero() {
		t.Errorf("recorded entry = %+v, want ID 1 and a time", e)
	}
	q, ok, _ := s.IsQuarantined(target, "sha256:bad")
	if !ok || !q.Since.Equal(e.Time) {
		t.Errorf("quarantine = %+v (%v), want it since the entry's time %s", q, ok, e.Time)
	}
	if m, ok, _ := s.HighWater(target); !ok || m.Digest != "sha256:old" {
		t.Errorf("high-water mark = %+v (%v), want sha256:old", m, ok)
	}
	if js, _ := s.Journals(); len(js) != 0 {
		t.Errorf("journals after the outcome = %+v, want none", js)
	}
	if _, ok, _ := s.Approval(target); ok {
		t.Error("approval kept after the outcome that used it")
	}
}

func TestRecordIsAllOrNothing(t *testing.T) {
	s := open(t)
	const target = "swarm/api"
	if err := s.BeginJournal(Journal{Target: target}); err != nil {
		t.Fatal(err)
	}
	// A corrupt high-water mark fails the write after the history line
	// and the quarantine were put: neither may stay.
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketHighWater).Put([]byte(target), []byte("{")) }); err != nil {
		t.Fatal(err)
	}
	_, err := s.Record(Outcome{
		Entry:      Entry{Target: target, Outcome: "updated"},
		Quarantine: &Quarantined{Target: target, Digest: "sha256:x"},
		Mark:       &Mark{Digest: "sha256:new"},
		EndJournal: true,
	}, 0)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Record over a corrupt mark: %v, want ErrCorrupt", err)
	}
	if h, _ := s.History("", 0); len(h) != 0 {
		t.Errorf("history after a failed record = %+v, want none", h)
	}
	if _, ok, _ := s.IsQuarantined(target, "sha256:x"); ok {
		t.Error("quarantine kept from a failed record")
	}
	if js, _ := s.Journals(); len(js) != 1 {
		t.Errorf("journals after a failed record = %+v, want the one in flight", js)
	}
}
