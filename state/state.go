// Package state is shipwatch's memory, one bbolt file: the history of every
// decision and rollout, the quarantine of digests that failed, per-target
// high-water marks (no silent downgrades), the journal of in-flight rollouts
// (so a killed agent can finish or roll back on restart), and pending
// approvals. The engine stays the source of truth for what runs: losing this
// file loses history, never a workload.
package state

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// DefaultPath is where the agent keeps its state unless configured otherwise.
const DefaultPath = "/var/lib/shipwatch/state.db"

// schemaVersion is written into the file; a newer file is refused.
const schemaVersion = 1

var (
	bucketMeta       = []byte("meta")
	bucketHistory    = []byte("history")
	bucketQuarantine = []byte("quarantine")
	bucketHighWater  = []byte("highwater")
	bucketJournal    = []byte("journal")
	bucketApprovals  = []byte("approvals")
	bucketNotified   = []byte("notified")
	allBuckets       = [][]byte{bucketMeta, bucketHistory, bucketQuarantine, bucketHighWater, bucketJournal, bucketApprovals, bucketNotified}
)

// Errors callers branch on.
var (
	// ErrLocked: another shipwatch process holds the state file.
	ErrLocked = errors.New("state file is in use by another shipwatch agent")
	// ErrCorrupt: the file cannot be trusted; the agent must not act on it.
	ErrCorrupt = errors.New("state file is corrupt")
)

// Store is an open state file. It is safe for concurrent use.
type Store struct {
	db   *bolt.DB
	path string
}

// Open opens (creating if needed) the state file at path, taking an
// exclusive lock: a second agent on the same file gets ErrLocked within
// lockWait. The file's integrity is checked before it is used.
func Open(path string, lockWait time.Duration) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: max(lockWait, 10*time.Millisecond)})
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return nil, fmt.Errorf("%w (%s): run one agent per state file, or stop the other one first", ErrLocked, path)
	case err != nil:
		return nil, fmt.Errorf("%w (%s): %v; move it aside to start with empty history (workloads are not affected)", ErrCorrupt, path, err)
	}
	s := &Store{db: db, path: path}
	if err := s.init(); err != nil {
		_ = db.Close()
		return nil, err
	}
	if err := s.Check(); err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) init() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("%w (%s): %v", ErrCorrupt, s.path, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		v := meta.Get([]byte("schema"))
		if v == nil {
			return meta.Put([]byte("schema"), []byte{schemaVersion})
		}
		if len(v) != 1 || v[0] > schemaVersion {
			return fmt.Errorf("%w (%s): written by a newer shipwatch (schema %v); upgrade shipwatch", ErrCorrupt, s.path, v)
		}
		return nil
	})
}

// Close releases the file and its lock.
func (s *Store) Close() error { return s.db.Close() }

// Path is the file's location.
func (s *Store) Path() string { return s.path }

// Check verifies the file's page structure and that every record decodes.
func (s *Store) Check() error {
	return s.db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return fmt.Errorf("%w (%s): %v", ErrCorrupt, s.path, err)
		}
		for _, name := range allBuckets[1:] {
			b := tx.Bucket(name)
			if b == nil {
				return fmt.Errorf("%w (%s): bucket %s missing", ErrCorrupt, s.path, name)
			}
			err := b.ForEach(func(k, v []byte) error {
				if !json.Valid(v) {
					return fmt.Errorf("%w (%s): record %s/%q is not valid JSON", ErrCorrupt, s.path, name, k)
				}
				// Valid JSON of the wrong shape would pass the check and
				// fail every reader later: decode it as its reader does.
				if err := json.Unmarshal(v, recordOf(name)); err != nil {
					return fmt.Errorf("%w (%s): record %s/%q: %v", ErrCorrupt, s.path, name, k, err)
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// recordOf returns a pointer to the type the records of bucket decode into.
func recordOf(bucket []byte) any {
	switch string(bucket) {
	case string(bucketHistory):
		return &Entry{}
	case string(bucketQuarantine):
		return &Quarantined{}
	case string(bucketHighWater):
		return &Mark{}
	case string(bucketJournal):
		return &Journal{}
	case string(bucketApprovals):
		return &Approval{}
	case string(bucketNotified):
		return &time.Time{}
	}
	return new(any)
}

func put(tx *bolt.Tx, bucket, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Bucket(bucket).Put(key, data)
}

func get(tx *bolt.Tx, bucket, key []byte, v any) (bool, error) {
	data := tx.Bucket(bucket).Get(key)
	if data == nil {
		return false, nil
	}
	if err := json.Unmarshal(data, v); err != nil {
		return false, fmt.Errorf("%w: %s/%q: %v", ErrCorrupt, bucket, key, err)
	}
	return true, nil
}

// Entry is one line of history: a decision or a rollout.
type Entry struct {
	ID         uint64    `json:"id"`
	Time       time.Time `json:"time"`
	Target     string    `json:"target"`
	Mode       string    `json:"mode"` // agent, rollout, rollback
	Image      string    `json:"image"`
	From       string    `json:"from,omitempty"` // digest before
	To         string    `json:"to,omitempty"`   // repo:tag@digest attempted
	Decision   string    `json:"decision,omitempty"`
	Policy     string    `json:"policy,omitempty"`
	Signer     string    `json:"signer,omitempty"`
	Scan       string    `json:"scan,omitempty"`
	Outcome    string    `json:"outcome"`
	Reason     string    `json:"reason,omitempty"`
	DurationMS int64     `json:"duration_ms,omitempty"`
	Running    string    `json:"running,omitempty"` // digest running afterwards
	// Deployed says a rollout was attempted (not only decided).
	Deployed bool `json:"deployed,omitempty"`
}

// AddHistory appends e (its ID and, if zero, Time are set) and trims the
// history to the newest keep entries (0 = keep all).
func (s *Store) AddHistory(e Entry, keep int) (Entry, error) {
	return s.Record(Outcome{Entry: e}, keep)
}

// Outcome is everything one decision or rollout leaves in the state file:
// its line of history and what that line implies. Record writes it in one
// transaction, so that a reader never sees a rollback in history without the
// quarantine it caused, and an agent killed while recording keeps all of it
// or none.
type Outcome struct {
	Entry Entry
	// Quarantine is the digest that failed its rollout, if any.
	Quarantine *Quarantined
	// Mark is the target's new high-water mark after an update.
	Mark *Mark
	// ClearApproval removes the approval the rollout used.
	ClearApproval bool
	// EndJournal removes the rollout journal: the rollout is over.
	EndJournal bool
}

// Record writes o (see Outcome) and trims the history to the newest keep
// entries (0 = keep all). It returns the history entry with its ID and Time
// set.
func (s *Store) Record(o Outcome, keep int) (Entry, error) {
	e := o.Entry
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketHistory)
		id, err := b.NextSequence()
		if err != nil {
			return err
		}
		e.ID = id
		if err := put(tx, bucketHistory, u64(id), e); err != nil {
			return err
		}
		if keep > 0 && b.Stats().KeyN >= keep {
			c := b.Cursor()
			excess := b.Stats().KeyN + 1 - keep
			for k, _ := c.First(); k != nil && excess > 0; k, _ = c.Next() {
				if err := c.Delete(); err != nil {
					return err
				}
				excess--
			}
		}
		if q := o.Quarantine; q != nil {
			if err := putQuarantine(tx, *q, e.Time); err != nil {
				return err
			}
		}
		if m := o.Mark; m != nil {
			if err := setHighWater(tx, e.Target, *m, e.Time); err != nil {
				return err
			}
		}
		if o.ClearApproval {
			if err := tx.Bucket(bucketApprovals).Delete([]byte(e.Target)); err != nil {
				return err
			}
		}
		if o.EndJournal {
			return tx.Bucket(bucketJournal).Delete([]byte(e.Target))
		}
		return nil
	})
	return e, err
}

// History returns the newest entries first, for one target when target is
// not empty, at most limit (0 = all).
func (s *Store) History(target string, limit int) ([]Entry, error) {
	var out []Entry
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketHistory).Cursor()
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			var e Entry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("%w: history/%d: %v", ErrCorrupt, binary.BigEndian.Uint64(k), err)
			}
			if target != "" && !SameTarget(e.Target, target) {
				continue
			}
			out = append(out, e)
			if limit > 0 && len(out) == limit {
				break
			}
		}
		return nil
	})
	return out, err
}

// LastDeployed returns the digest that ran on target before its most recent
// successful update (the rollback point recorded in history), or "".
func (s *Store) LastDeployed(target string) (string, error) {
	hist, err := s.History(target, 0)
	if err != nil {
		return "", err
	}
	for _, e := range hist {
		if e.Outcome == "updated" && e.From != "" {
			return e.From, nil
		}
	}
	return "", nil
}

// SameTarget reports whether the target ID id ("compose/shop/web",
// "swarm/api") is what sel names: the ID itself or its name without the kind
// ("shop/web", "api"), as users type it.
func SameTarget(id, sel string) bool {
	return id == sel || id == "compose/"+sel || id == "swarm/"+sel
}

// resolveTarget returns the ID under which bucket holds sel, or sel.
func resolveTarget(tx *bolt.Tx, bucket []byte, sel string) string {
	b := tx.Bucket(bucket)
	for _, id := range []string{sel, "compose/" + sel, "swarm/" + sel} {
		if b.Get([]byte(id)) != nil {
			return id
		}
	}
	return sel
}

func u64(n uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, n)
	return b
}

// Quarantined is a digest that failed its rollout on a target. It is not
// tried again until the registry offers a different digest or an operator
// clears it.
type Quarantined struct {
	Target string    `json:"target"`
	Digest string    `json:"digest"`
	Image  string    `json:"image"`
	Reason string    `json:"reason"`
	Since  time.Time `json:"since"`
}

func qkey(target, digest string) []byte { return []byte(target + "\x00" + digest) }

// Quarantine records q.
func (s *Store) Quarantine(q Quarantined) error {
	return s.db.Update(func(tx *bolt.Tx) error { return putQuarantine(tx, q, time.Now().UTC()) })
}

// putQuarantine records q, since now unless q says when.
func putQuarantine(tx *bolt.Tx, q Quarantined, now time.Time) error {
	if q.Since.IsZero() {
		q.Since = now
	}
	return put(tx, bucketQuarantine, qkey(q.Target, q.Digest), q)
}

// IsQuarantined reports whether digest is quarantined for target.
func (s *Store) IsQuarantined(target, digest string) (Quarantined, bool, error) {
	var q Quarantined
	var ok bool
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		ok, err = get(tx, bucketQuarantine, qkey(target, digest), &q)
		return err
	})
	return q, ok, err
}

// ClearQuarantine removes the quarantine of digest on target (every digest
// of target when digest is ""; every entry when both are "") and returns how
// many entries it removed.
func (s *Store) ClearQuarantine(target, digest string) (int, error) {
	n := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketQuarantine).Cursor()
		for _, id := range []string{"compose/" + target, "swarm/" + target} {
			if k, _ := c.Seek([]byte(id + "\x00")); k != nil && bytes.HasPrefix(k, []byte(id+"\x00")) {
				target = id // the user typed the name without its kind
			}
		}
		prefix := []byte(target + "\x00")
		if target == "" {
			prefix = nil
		}
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			if digest != "" && !bytes.Equal(k, qkey(target, digest)) {
				continue
			}
			if err := c.Delete(); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}

// QuarantineList returns every quarantined digest, oldest first.
func (s *Store) QuarantineList() ([]Quarantined, error) {
	var out []Quarantined
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketQuarantine).ForEach(func(k, v []byte) error {
			var q Quarantined
			if err := json.Unmarshal(v, &q); err != nil {
				return fmt.Errorf("%w: quarantine/%q: %v", ErrCorrupt, k, err)
			}
			out = append(out, q)
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Since.Before(out[j].Since) })
	return out, err
}

// Mark is the newest version a target has run under shipwatch.
type Mark struct {
	Tag    string    `json:"tag"`
	Digest string    `json:"digest"`
	Since  time.Time `json:"since"`
	// Superseded are the digests this target ran before and moved past
	// (newest last, bounded): a tag that moves back to one of them is a
	// silent downgrade.
	Superseded []string `json:"superseded,omitempty"`
}

// MaxSuperseded bounds Mark.Superseded.
const MaxSuperseded = 50

// HighWater returns target's mark.
func (s *Store) HighWater(target string) (Mark, bool, error) {
	var m Mark
	var ok bool
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		ok, err = get(tx, bucketHighWater, []byte(target), &m)
		return err
	})
	return m, ok, err
}

// SetHighWater records target's mark. The previous mark's digest (and its
// superseded list) carry over into m.Superseded.
func (s *Store) SetHighWater(target string, m Mark) error {
	return s.db.Update(func(tx *bolt.Tx) error { return setHighWater(tx, target, m, time.Now().UTC()) })
}

// setHighWater is SetHighWater within tx; m is since now unless it says when.
func setHighWater(tx *bolt.Tx, target string, m Mark, now time.Time) error {
	if m.Since.IsZero() {
		m.Since = now
	}
	var old Mark
	ok, err := get(tx, bucketHighWater, []byte(target), &old)
	if err != nil {
		return err
	}
	if ok {
		sup := append(old.Superseded, m.Superseded...)
		if old.Digest != "" && old.Digest != m.Digest {
			sup = append(sup, old.Digest)
		}
		m.Superseded = dedupTail(sup, m.Digest, MaxSuperseded)
	}
	return put(tx, bucketHighWater, []byte(target), m)
}

// dedupTail removes duplicates and current from list, keeping the newest n.
func dedupTail(list []string, current string, n int) []string {
	seen := map[string]bool{current: true}
	var out []string
	for i := len(list) - 1; i >= 0 && len(out) < n; i-- {
		if !seen[list[i]] {
			seen[list[i]] = true
			out = append(out, list[i])
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}
