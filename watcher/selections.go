package watcher

import (
	"crypto/sha256"
	"sync"
	"sync/atomic"
)

// maxSelections bounds the selections kept between checks; past it the
// cache starts over (targets that went away leave entries behind).
const maxSelections = 20_000

// selectionKey is what a selection depends on besides the tag list: the
// repository, the running tag and the compiled policy (policies are
// immutable, and callers keep one per spec; see pass.Policies).
type selectionKey struct {
	repo, running string
	policy        *Policy
}

type selectionEntry struct {
	list [sha256.Size]byte // digest of the tag list's pages
	sel  Selection
}

// selections keeps each tag-following target's last selection with the
// tag list it was made from. Policy.Select is pure, so the same list
// gives the same selection; the list's digest covers every byte of every
// page, so any change to the tags (or to the page boundaries) misses.
type selections struct {
	mu     sync.Mutex
	byKey  map[selectionKey]selectionEntry
	reused atomic.Int64
}

func (s *selections) get(k selectionKey, list [sha256.Size]byte) (Selection, bool) {
	s.mu.Lock()
	e, ok := s.byKey[k]
	s.mu.Unlock()
	if !ok || e.list != list {
		return Selection{}, false
	}
	s.reused.Add(1)
	return e.sel, true
}

func (s *selections) put(k selectionKey, list [sha256.Size]byte, sel Selection) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byKey == nil || len(s.byKey) >= maxSelections {
		s.byKey = map[selectionKey]selectionEntry{}
	}
	s.byKey[k] = selectionEntry{list: list, sel: sel}
}
