package api

import (
	"sync"
	"time"
)

// maxPendingRepositories bounds the hints waiting at once; beyond it new
// repositories are dropped (the schedule still finds their updates).
const maxPendingRepositories = 1024

// coalescer turns a burst of webhook hints for one repository into one
// call of fire: the first hint waits delay for others (registries send one
// notification per tag, per platform manifest and per index, and GitHub
// may send both "package" and "registry_package"), and two calls for the
// same repository are at least minInterval apart. Hints are never fired
// after stop.
type coalescer struct {
	delay, minInterval time.Duration
	max                int
	fire               func(Hint)

	mu        sync.Mutex
	pending   map[string]*pendingHint // by repository
	lastFired map[string]time.Time
	stopped   bool
}

type pendingHint struct {
	hint  Hint
	timer *time.Timer
}

// addResult says what happened to a hint.
type addResult int

const (
	hintQueued    addResult = iota // first hint of its repository: fire is scheduled
	hintCoalesced                  // merged into a hint already waiting
	hintDropped                    // too many repositories waiting, or stopped
)

func newCoalescer(delay, minInterval time.Duration, max int, fire func(Hint)) *coalescer {
	return &coalescer{delay: delay, minInterval: minInterval, max: max, fire: fire,
		pending: map[string]*pendingHint{}, lastFired: map[string]time.Time{}}
}

// add queues h, or merges it into the hint already waiting for its
// repository. Merged fields that disagree are cleared: two different tags
// pushed in one burst mean "check the repository".
func (c *coalescer) add(h Hint) addResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return hintDropped
	}
	if p, ok := c.pending[h.Repository]; ok {
		p.hint = merge(p.hint, h)
		return hintCoalesced
	}
	if len(c.pending) >= c.max {
		return hintDropped
	}
	now := time.Now()
	wait := c.delay
	if last, ok := c.lastFired[h.Repository]; ok {
		if next := last.Add(c.minInterval).Sub(now); next > wait {
			wait = next
		}
	}
	p := &pendingHint{hint: h}
	c.pending[h.Repository] = p
	p.timer = time.AfterFunc(wait, func() { c.due(h.Repository) })
	return hintQueued
}

// due fires the hint waiting for repo.
func (c *coalescer) due(repo string) {
	c.mu.Lock()
	p, ok := c.pending[repo]
	if !ok || c.stopped {
		c.mu.Unlock()
		return
	}
	delete(c.pending, repo)
	now := time.Now()
	c.lastFired[repo] = now
	c.forgetOld(now)
	c.mu.Unlock()
	c.fire(p.hint)
}

// forgetOld drops lastFired entries that no longer delay anything, so the
// map stays as small as the set of recently pushed repositories.
func (c *coalescer) forgetOld(now time.Time) {
	if len(c.lastFired) < c.max {
		return
	}
	for repo, t := range c.lastFired {
		if now.Sub(t) >= c.minInterval {
			delete(c.lastFired, repo)
		}
	}
}

// stop cancels every waiting hint; later adds are dropped.
func (c *coalescer) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopped = true
	for repo, p := range c.pending {
		p.timer.Stop()
		delete(c.pending, repo)
	}
}

// waiting is how many repositories have a hint waiting (for tests).
func (c *coalescer) waiting() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

func merge(a, b Hint) Hint {
	if a.Tag != b.Tag {
		a.Tag, a.Digest = "", ""
	}
	if a.Digest != b.Digest {
		a.Digest = ""
	}
	return a
}
