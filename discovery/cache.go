package discovery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"
	"github.com/rs/zerolog"

	"github.com/shipwatch/shipwatch/deployer"
)

// Events is the engine's event stream (implemented by *client.Client).
type Events interface {
	Events(ctx context.Context, options client.EventsListOptions) client.EventsResult
}

// DefaultMaxAge is how long a Cache trusts a discovery when the engine
// reports no change at all: a safety net for a change no event announces.
const DefaultMaxAge = time.Hour

// watchedEvents are the engine events after which a discovery may differ:
// a container appearing, going, starting, stopping or being renamed; an
// image pulled, tagged, untagged, pushed (new RepoDigests), loaded or
// deleted; a Swarm service created, updated or removed. Health checks
// (exec_* and health_status events, several per container and minute on a
// busy host) and the like are filtered out by the engine.
var watchedEvents = map[string][]string{
	"container": {"create", "start", "restart", "die", "stop", "destroy", "rename", "pause", "unpause"},
	"image":     {"pull", "push", "tag", "untag", "delete", "load", "import"},
	"service":   {"create", "update", "remove"},
}

func eventFilters() client.Filters {
	f := make(client.Filters)
	seen := map[string]bool{}
	for typ, actions := range watchedEvents {
		f.Add("type", typ)
		for _, a := range actions {
			if !seen[a] {
				seen[a] = true
				f.Add("event", a)
			}
		}
	}
	return f
}

// Cache keeps the last discovery and hands it out again until the engine's
// event stream reports a change that discovery would see. Listing 1000
// containers costs a pass about a fifth of its CPU (docs/benchmarks/agent.md);
// an idle host changes nothing between passes.
//
// It trusts a kept discovery only while it follows the event stream (Follow),
// when the stream has reported no watched event since the listing began,
// when the engine's swarm state is the same, and for at most MaxAge. Losing
// the stream (engine restart, socket gone) makes every Discover list afresh
// until the stream is back. Callers that act on a target — deploy, verify,
// notify — list again with Refresh first (pass.Run does).
type Cache struct {
	eng    Engine
	events Events
	maxAge time.Duration
	log    zerolog.Logger
	now    func() time.Time
	lost   bool // Follow's own: the stream was lost and is not back yet

	mu   sync.Mutex
	live bool   // following the event stream
	gen  uint64 // bumped by each watched event and each change of live
	kept *kept
}

type kept struct {
	res   Result
	gen   uint64
	at    time.Time
	swarm swarmState
}

type swarmState struct {
	state   swarm.LocalNodeState
	manager bool
}

func swarmOf(sw swarm.Info) swarmState {
	return swarmState{state: sw.LocalNodeState, manager: sw.ControlAvailable}
}

// CacheOptions configure a Cache.
type CacheOptions struct {
	// MaxAge bounds how long a discovery is reused; 0 means DefaultMaxAge.
	MaxAge time.Duration
	Logger zerolog.Logger
}

// NewCache returns a cache over eng. It reuses nothing until Follow runs.
func NewCache(eng Engine, events Events, opts CacheOptions) *Cache {
	if opts.MaxAge <= 0 {
		opts.MaxAge = DefaultMaxAge
	}
	return &Cache{eng: eng, events: events, maxAge: opts.MaxAge, log: opts.Logger, now: time.Now}
}

// Discover returns the kept discovery when it can be trusted (cached is
// true), and otherwise discovers afresh and keeps the result.
func (c *Cache) Discover(ctx context.Context) (res Result, cached bool, err error) {
	return c.discover(ctx, false)
}

// Refresh discovers afresh and keeps the result.
func (c *Cache) Refresh(ctx context.Context) (Result, error) {
	res, _, err := c.discover(ctx, true)
	return res, err
}

func (c *Cache) discover(ctx context.Context, fresh bool) (Result, bool, error) {
	// One small request per pass: joining, leaving or being promoted in a
	// swarm changes what discovery lists without a watched event.
	info, err := c.eng.Info(ctx, client.InfoOptions{})
	if err != nil {
		return Result{}, false, fmt.Errorf("engine info: %w", err)
	}
	sw := swarmOf(info.Info.Swarm)
	c.mu.Lock()
	if k := c.kept; !fresh && c.live && k != nil && k.gen == c.gen && k.swarm == sw && c.now().Sub(k.at) < c.maxAge {
		c.mu.Unlock()
		return k.res.clone(), true, nil
	}
	gen := c.gen // an event during the listing makes its result stale at once
	c.mu.Unlock()
	res, err := discover(ctx, c.eng, info.Info.Swarm)
	if err != nil {
		return res, false, err
	}
	c.mu.Lock()
	c.kept = &kept{res: res.clone(), gen: gen, at: c.now(), swarm: sw}
	c.mu.Unlock()
	return res, false, nil
}

// clone copies what a caller may reorder or append to; the targets'
// labels and platform details are shared and never written.
func (r Result) clone() Result {
	r.Targets = append([]deployer.Target(nil), r.Targets...)
	r.Notes = append([]string(nil), r.Notes...)
	return r
}

// changed invalidates the kept discovery.
func (c *Cache) changed(live bool) {
	c.mu.Lock()
	c.gen++
	c.live = live
	c.mu.Unlock()
}

// Follow follows the engine's event stream until ctx ends, and opens it
// again (after 1 s, doubling up to 30 s) whenever it is lost.
func (c *Cache) Follow(ctx context.Context) {
	const first, most = time.Second, 30 * time.Second
	wait := first
	for {
		opened, err := c.follow(ctx)
		c.changed(false)
		if ctx.Err() != nil {
			return
		}
		c.lost = true
		ev := c.log.Debug() // failing to open it again: said once already
		if opened || wait == first {
			wait, ev = first, c.log.Warn()
		}
		ev.Err(err).Str("retry_in", wait.String()).
			Msg("engine event stream lost: every pass lists the engine's containers afresh until it is back")
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, most)
	}
}

// follow opens the event stream and reads it until it fails; opened says
// whether it got as far as reading.
func (c *Cache) follow(ctx context.Context) (opened bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the client's reading goroutine
	opts := client.EventsListOptions{Filters: eventFilters()}
	// Events from the engine's own clock on: the engine may subscribe this
	// stream only after it answered, and replays what happened in between.
	info, err := c.eng.Info(ctx, client.InfoOptions{})
	if err != nil {
		return false, fmt.Errorf("engine info: %w", err)
	}
	if _, err := time.Parse(time.RFC3339Nano, info.Info.SystemTime); err == nil {
		opts.Since = info.Info.SystemTime
	}
	stream := c.events.Events(ctx, opts)
	select {
	case err := <-stream.Err: // the request itself failed
		return false, streamErr(err)
	default:
	}
	c.changed(true)
	ev := c.log.Debug()
	if c.lost {
		c.lost, ev = false, c.log.Info()
	}
	ev.Msg("following the engine's events: a discovery is reused until a container, image or service changes")
	for {
		select {
		case <-stream.Messages:
			c.changed(true)
		case err := <-stream.Err:
			return true, streamErr(err)
		case <-ctx.Done():
			return true, ctx.Err()
		}
	}
}

func streamErr(err error) error {
	if err == nil || errors.Is(err, io.EOF) {
		return errors.New("the engine closed the event stream")
	}
	return err
}
