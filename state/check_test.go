package state

import (
	"errors"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// Check decodes every record as its reader does: a record that is valid
// JSON of the wrong shape used to pass the check (so the agent started) and
// fail every reader afterwards. Found by FuzzRecords.
func TestCheckDecodesRecords(t *testing.T) {
	for _, tc := range []struct {
		bucket []byte
		rec    string
	}{
		{bucketHistory, `[]`},
		{bucketHistory, `{"id":"one"}`},
		{bucketQuarantine, `{"since":"yesterday"}`},
		{bucketJournal, `{"pid":"x"}`},
		{bucketNotified, `{}`},
	} {
		s := open(t)
		if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(tc.bucket).Put(u64(1), []byte(tc.rec)) }); err != nil {
			t.Fatal(err)
		}
		if err := s.Check(); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Check with %s record %s: %v, want ErrCorrupt", tc.bucket, tc.rec, err)
		}
	}
}
