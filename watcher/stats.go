package watcher

import "sync/atomic"

// Stats counts what the watcher sent since New. Subtract two snapshots
// (Sub) for one pass.
type Stats struct {
	Requests      int64 // HTTP requests sent, every kind, retries included
	Pings         int64 // GET /v2/
	Tokens        int64 // token endpoint requests
	ManifestHeads int64 // manifest HEADs (tag → digest)
	ManifestGets  int64 // manifest GETs (only for candidates and multi-arch checks)
	TagPages      int64 // tag list pages
	Retries       int64 // requests sent again after a 5xx, 429 or network error
	RateLimited   int64 // 429 answers
	Errors        int64 // operations that failed after retries
	NewConns      int64 // connections opened (as net/http reports them)
	CacheHits     int64 // manifest GETs saved by the digest cache
	// SelectionsReused counts tag-following checks whose tag list was
	// byte for byte the one of their previous selection, which was kept.
	SelectionsReused int64
}

// Sub returns s - o, field by field.
func (s Stats) Sub(o Stats) Stats {
	return Stats{
		Requests: s.Requests - o.Requests, Pings: s.Pings - o.Pings, Tokens: s.Tokens - o.Tokens,
		ManifestHeads: s.ManifestHeads - o.ManifestHeads, ManifestGets: s.ManifestGets - o.ManifestGets,
		TagPages: s.TagPages - o.TagPages, Retries: s.Retries - o.Retries, RateLimited: s.RateLimited - o.RateLimited,
		Errors: s.Errors - o.Errors, NewConns: s.NewConns - o.NewConns, CacheHits: s.CacheHits - o.CacheHits,
		SelectionsReused: s.SelectionsReused - o.SelectionsReused,
	}
}

type counters struct {
	requests, pings, tokens, heads, gets, tagPages, retries, rateLimited, errors, newConns, cacheHits atomic.Int64
}

func (c *counters) count(kind string) {
	c.requests.Add(1)
	switch kind {
	case "ping":
		c.pings.Add(1)
	case "token":
		c.tokens.Add(1)
	case "head":
		c.heads.Add(1)
	case "get":
		c.gets.Add(1)
	case "tags":
		c.tagPages.Add(1)
	}
}

// Stats returns the counters since New.
func (w *Watcher) Stats() Stats {
	c := &w.stats
	return Stats{
		Requests: c.requests.Load(), Pings: c.pings.Load(), Tokens: c.tokens.Load(),
		ManifestHeads: c.heads.Load(), ManifestGets: c.gets.Load(), TagPages: c.tagPages.Load(),
		Retries: c.retries.Load(), RateLimited: c.rateLimited.Load(), Errors: c.errors.Load(),
		NewConns: c.newConns.Load(), CacheHits: c.cacheHits.Load(),
		SelectionsReused: w.selected.reused.Load(),
	}
}
