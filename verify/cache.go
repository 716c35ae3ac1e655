package verify

import (
	"container/list"
	"sync"
	"time"
)

// DefaultCacheEntries is the size of a Verifier's own cache.
const DefaultCacheEntries = 4096

// cacheTTL bounds how long verified evidence is reused, so that a signature
// deleted from the registry stops counting within a day.
const cacheTTL = 24 * time.Hour

// Cache keeps the verified evidence of digests that passed verification,
// keyed by (digest, policy hash, trust-material hash): a changed key,
// trusted root or policy never reuses an old result. Only the cryptographic
// work is cached; the rules (scan age above all) are evaluated on every
// call. It is safe for concurrent use.
type Cache struct {
	mu  sync.Mutex
	max int
	ll  *list.List
	m   map[string]*list.Element
}

type cacheItem struct {
	key   string
	set   *evidenceSet
	added time.Time
}

// NewCache returns a cache holding up to maxEntries digests (least recently
// used evicted first); maxEntries <= 0 means DefaultCacheEntries.
func NewCache(maxEntries int) *Cache {
	if maxEntries <= 0 {
		maxEntries = DefaultCacheEntries
	}
	return &Cache{max: maxEntries, ll: list.New(), m: map[string]*list.Element{}}
}

// Len returns the number of cached digests.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}

func cacheKey(digest, policyHash string) string { return digest + "|" + policyHash }

func (c *Cache) get(key string, now time.Time) *evidenceSet {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok {
		return nil
	}
	it := e.Value.(*cacheItem)
	if now.Sub(it.added) > cacheTTL {
		c.ll.Remove(e)
		delete(c.m, key)
		return nil
	}
	c.ll.MoveToFront(e)
	return it.set
}

func (c *Cache) put(key string, set *evidenceSet, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[key]; ok {
		e.Value = &cacheItem{key: key, set: set, added: now}
		c.ll.MoveToFront(e)
		return
	}
	c.m[key] = c.ll.PushFront(&cacheItem{key: key, set: set, added: now})
	for c.ll.Len() > c.max {
		last := c.ll.Back()
		c.ll.Remove(last)
		delete(c.m, last.Value.(*cacheItem).key)
	}
}
