package state

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// FuzzRecords writes an arbitrary record into each bucket of a state file,
// as a disk error or an older or hand-edited file could leave it, and checks
// what the agent relies on: Check accepts the file only if every reader can
// decode it, the readers never panic, and a record they cannot decode is
// reported as ErrCorrupt (the agent then stops with a clear error instead of
// acting blind). CI runs it briefly (make fuzz-short).
func FuzzRecords(f *testing.F) {
	f.Add([]byte(`{"id":1,"target":"compose/p/web","outcome":"updated","to":"r/a:1@sha256:1"}`), uint8(0))
	f.Add([]byte(`{"target":"t","digest":"sha256:1","since":"2026-01-01T00:00:00Z"}`), uint8(1))
	f.Add([]byte(`{"tag":"1.0","digest":"sha256:1","superseded":["sha256:0"]}`), uint8(2))
	f.Add([]byte(`{"target":"t","kind":"compose","step":"converge","pid":7}`), uint8(3))
	f.Add([]byte(`{"target":"t","candidate":"r/a:1@sha256:1","approved":true}`), uint8(4))
	f.Add([]byte(`"2026-01-01T00:00:00Z"`), uint8(5))
	f.Add([]byte(`[]`), uint8(0))
	f.Add([]byte(`{"since":"yesterday"}`), uint8(1))
	f.Add([]byte(`{"id":"one"}`), uint8(0))
	f.Fuzz(func(t *testing.T, rec []byte, which uint8) {
		path := filepath.Join(t.TempDir(), "state.db")
		s, err := Open(path, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		bucket := allBuckets[1+int(which)%(len(allBuckets)-1)]
		key := []byte("t")
		if string(bucket) == string(bucketHistory) {
			key = u64(1)
		}
		if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put(key, rec) }); err != nil {
			t.Fatal(err)
		}
		checkErr := s.Check()
		if checkErr != nil && !errors.Is(checkErr, ErrCorrupt) {
			t.Fatalf("Check: %v, want nil or ErrCorrupt", checkErr)
		}
		var readErrs []error
		_, err = s.History("", 0)
		readErrs = append(readErrs, err)
		_, err = s.Journals()
		readErrs = append(readErrs, err)
		_, err = s.QuarantineList()
		readErrs = append(readErrs, err)
		_, _, err = s.IsQuarantined("t", "")
		readErrs = append(readErrs, err)
		_, _, err = s.HighWater("t")
		readErrs = append(readErrs, err)
		_, err = s.Approvals()
		readErrs = append(readErrs, err)
		_, _, err = s.Approval("t")
		readErrs = append(readErrs, err)
		_, err = s.Seen("t", time.Unix(0, 0))
		readErrs = append(readErrs, err)
		for _, err := range readErrs {
			if err == nil {
				continue
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("a reader failed with %v, want ErrCorrupt", err)
			}
			if checkErr == nil {
				t.Fatalf("Check accepted a %s record %q that a reader cannot decode: %v", bucket, rec, err)
			}
		}
		s.Close()
		if s2, err := Open(path, time.Second); (err == nil) != (checkErr == nil) {
			t.Fatalf("reopen: %v, but Check said %v", err, checkErr)
		} else if err == nil {
			s2.Close()
		}
	})
}
