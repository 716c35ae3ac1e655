package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Journal is the record of a rollout in flight, written before its first
// destructive step and removed when it ends. One left behind means the agent
// died mid-rollout: on restart it reconciles with the engine and either
// confirms the new version (healthy, the verified digest) or restores From.
type Journal struct {
	// Op is "rollout" (default) or "rollback".
	Op      string    `json:"op,omitempty"`
	Target  string    `json:"target"`
	Kind    string    `json:"kind"`
	Started time.Time `json:"started"`
	// From is the digest that ran before; FromImage the reference it ran as.
	From      string `json:"from"`
	FromImage string `json:"from_image"`
	// To is the verified repo:tag@digest being rolled out.
	To string `json:"to"`
	// Step is the last step begun.
	Step string `json:"step"`
	PID  int    `json:"pid"`
}

// BeginJournal records j as in flight for its target (replacing any older record).
func (s *Store) BeginJournal(j Journal) error {
	if j.Started.IsZero() {
		j.Started = time.Now().UTC()
	}
	if j.PID == 0 {
		j.PID = os.Getpid()
	}
	return s.db.Update(func(tx *bolt.Tx) error { return put(tx, bucketJournal, []byte(j.Target), j) })
}

// StepJournal records that target's rollout began step.
func (s *Store) StepJournal(target, step string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		var j Journal
		ok, err := get(tx, bucketJournal, []byte(target), &j)
		if err != nil || !ok {
			return err
		}
		j.Step = step
		return put(tx, bucketJournal, []byte(target), j)
	})
}

// EndJournal removes target's in-flight record.
func (s *Store) EndJournal(target string) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketJournal).Delete([]byte(target)) })
}

// Journals returns the rollouts left in flight.
func (s *Store) Journals() ([]Journal, error) {
	var out []Journal
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketJournal).ForEach(func(k, v []byte) error {
			var j Journal
			if err := json.Unmarshal(v, &j); err != nil {
				return fmt.Errorf("%w: journal/%q: %v", ErrCorrupt, k, err)
			}
			out = append(out, j)
			return nil
		})
	})
	return out, err
}

// Approval errors callers branch on.
var (
	ErrNoApproval       = errors.New("nothing to approve")
	ErrApprovalMismatch = errors.New("approval does not match the waiting update")
)

// Approval is an update found and verified that waits for an operator
// (targets with approval: manual, or semver levels that need approval).
type Approval struct {
	Target     string    `json:"target"`
	Candidate  string    `json:"candidate"` // repo:tag@digest
	Reason     string    `json:"reason,omitempty"`
	Since      time.Time `json:"since"`
	Approved   bool      `json:"approved"`
	ApprovedBy string    `json:"approved_by,omitempty"`
	ApprovedAt time.Time `json:"approved_at,omitzero"`
}

// SetPending records that target's candidate waits for approval. A pending
// approval for an older candidate of the same target is replaced; an
// already approved one for the same candidate is kept.
func (s *Store) SetPending(a Approval) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		var old Approval
		ok, err := get(tx, bucketApprovals, []byte(a.Target), &old)
		if err != nil {
			return err
		}
		if ok && old.Candidate == a.Candidate {
			return nil
		}
		if a.Since.IsZero() {
			a.Since = time.Now().UTC()
		}
		a.Approved = false
		return put(tx, bucketApprovals, []byte(a.Target), a)
	})
}

// Approve marks target's pending candidate as approved. candidate, when not
// empty, must match the pending one (so an approval cannot apply to a
// candidate the operator has not seen).
func (s *Store) Approve(target, candidate, by string) (Approval, error) {
	var a Approval
	err := s.db.Update(func(tx *bolt.Tx) error {
		target = resolveTarget(tx, bucketApprovals, target)
		ok, err := get(tx, bucketApprovals, []byte(target), &a)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: no update of %s waits for approval", ErrNoApproval, target)
		}
		if candidate != "" && candidate != a.Candidate {
			return fmt.Errorf("%w: the update waiting for %s is %s, not %s", ErrApprovalMismatch, target, a.Candidate, candidate)
		}
		a.Approved, a.ApprovedBy, a.ApprovedAt = true, by, time.Now().UTC()
		return put(tx, bucketApprovals, []byte(target), a)
	})
	return a, err
}

// Approval returns target's pending or approved candidate.
func (s *Store) Approval(target string) (Approval, bool, error) {
	var a Approval
	var ok bool
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		ok, err = get(tx, bucketApprovals, []byte(target), &a)
		return err
	})
	return a, ok, err
}

// ClearApproval removes target's approval record (after its rollout).
func (s *Store) ClearApproval(target string) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketApprovals).Delete([]byte(target)) })
}

// Approvals lists every pending or approved candidate.
func (s *Store) Approvals() ([]Approval, error) {
	var out []Approval
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketApprovals).ForEach(func(k, v []byte) error {
			var a Approval
			if err := json.Unmarshal(v, &a); err != nil {
				return fmt.Errorf("%w: approvals/%q: %v", ErrCorrupt, k, err)
			}
			out = append(out, a)
			return nil
		})
	})
	return out, err
}

// FirstNotice records key (for example "blocked/<target>/<digest>") and
// reports whether it is new, so that the same blocked digest is notified once.
func (s *Store) FirstNotice(key string) (bool, error) {
	now := time.Now().UTC()
	t, err := s.Seen(key, now)
	return err == nil && t.Equal(now), err
}

// Seen records now as the first time key was seen, unless it was seen
// before, and returns the first time (cooldowns count from it).
func (s *Store) Seen(key string, now time.Time) (time.Time, error) {
	first := now
	err := s.db.Update(func(tx *bolt.Tx) error {
		found, err := get(tx, bucketNotified, []byte(key), &first)
		if err != nil || found {
			return err
		}
		return put(tx, bucketNotified, []byte(key), now)
	})
	return first, err
}
