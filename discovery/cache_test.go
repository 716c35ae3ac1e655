package discovery

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/api/types/system"
	"github.com/moby/moby/client"
	"github.com/rs/zerolog"

	"github.com/shipwatch/shipwatch/internal/testenv"
)

// cacheEngine is a fakeEngine safe for the cache's two goroutines, with
// an event stream the test drives.
type cacheEngine struct {
	*fakeEngine
	lists  atomic.Int32
	during func() // called inside ContainerList, once

	mu     sync.Mutex
	swarm  swarm.LocalNodeState
	opened []client.EventsListOptions
	msgs   chan events.Message
	errs   chan error
	refuse error // Events fails at once with it
}

const engineTime = "2026-11-28T01:02:03.456789Z"

func newCacheEngine() *cacheEngine {
	return &cacheEngine{fakeEngine: &fakeEngine{
		containers: []container.Summary{composeContainer("c1", "shop", "web", "registry.example/shop/web:1.0", "sha256:img1", "running")},
		listed:     map[string][]string{"sha256:img1": {"registry.example/shop/web@" + digA}},
	}}
}

func (e *cacheEngine) Info(context.Context, client.InfoOptions) (client.SystemInfoResult, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return client.SystemInfoResult{Info: system.Info{SystemTime: engineTime, Swarm: swarm.Info{LocalNodeState: e.swarm}}}, nil
}

func (e *cacheEngine) ContainerList(ctx context.Context, o client.ContainerListOptions) (client.ContainerListResult, error) {
	e.lists.Add(1)
	if f := e.during; f != nil {
		e.during = nil
		f()
	}
	return e.fakeEngine.ContainerList(ctx, o)
}

func (e *cacheEngine) Events(_ context.Context, o client.EventsListOptions) client.EventsResult {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.opened = append(e.opened, o)
	errs := make(chan error, 1)
	if e.refuse != nil {
		errs <- e.refuse
		close(errs)
		return client.EventsResult{Err: errs}
	}
	e.msgs, e.errs = make(chan events.Message), errs
	return client.EventsResult{Messages: e.msgs, Err: errs}
}

func (e *cacheEngine) stream() (chan events.Message, chan error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.msgs, e.errs
}

// following starts c.Follow and waits until it follows the stream.
func following(t *testing.T, c *Cache) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Follow(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitLive(t, c, true)
}

func waitLive(t *testing.T, c *Cache, live bool) {
	t.Helper()
	testenv.Eventually(t, 5*time.Second, time.Millisecond, func() (bool, string) {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.live == live, "the cache's live state did not change"
	})
}

// emit sends one event and waits until the cache has counted it.
func emit(t *testing.T, c *Cache, e *cacheEngine, m events.Message) {
	t.Helper()
	c.mu.Lock()
	before := c.gen
	c.mu.Unlock()
	msgs, _ := e.stream()
	msgs <- m
	testenv.Eventually(t, 5*time.Second, time.Millisecond, func() (bool, string) {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.gen > before, "the event was not counted"
	})
}

// expect runs one Discover and checks whether it reused a discovery and
// how many container listings the engine has served in all.
func expect(t *testing.T, c *Cache, e *cacheEngine, wantCached bool, wantLists int32) Result {
	t.Helper()
	res, cached, err := c.Discover(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if cached != wantCached || e.lists.Load() != wantLists {
		t.Fatalf("Discover: cached=%v after %d listings, want cached=%v after %d", cached, e.lists.Load(), wantCached, wantLists)
	}
	if len(res.Targets) != 1 || res.Targets[0].Digest != digA {
		t.Fatalf("Discover returned %+v, want the one web target at %s", res.Targets, digA)
	}
	return res
}

func TestCacheReusesADiscoveryUntilTheEngineReportsAChange(t *testing.T) {
	e := newCacheEngine()
	c := NewCache(e, e, CacheOptions{Logger: zerolog.Nop()})
	expect(t, c, e, false, 1) // not following the events yet: nothing is reused
	expect(t, c, e, false, 2)

	following(t, c)
	expect(t, c, e, false, 3) // the stream opened after that listing
	res := expect(t, c, e, true, 3)
	res.Targets[0].ID = "changed by a caller"
	expect(t, c, e, true, 3) // callers get their own slice

	emit(t, c, e, events.Message{Type: "container", Action: "die"})
	expect(t, c, e, false, 4)
	expect(t, c, e, true, 4)

	if _, err := c.Refresh(context.Background()); err != nil || e.lists.Load() != 5 {
		t.Fatalf("Refresh: err=%v after %d listings, want a fresh listing (5)", err, e.lists.Load())
	}

	e.mu.Lock()
	opts := e.opened[0]
	e.mu.Unlock()
	if opts.Since != engineTime {
		t.Errorf("stream opened with since=%q, want the engine's own time %q (events between its answer and its subscription are replayed)", opts.Since, engineTime)
	}
	for _, typ := range []string{"container", "image", "service"} {
		if !opts.Filters["type"][typ] {
			t.Errorf("stream filters %v do not ask for %s events", opts.Filters, typ)
		}
	}
	for _, a := range []string{"create", "start", "die", "destroy", "rename", "pull", "tag", "untag", "delete", "update", "remove"} {
		if !opts.Filters["event"][a] {
			t.Errorf("stream filters %v do not ask for %q events", opts.Filters, a)
		}
	}
	for _, a := range []string{"exec_create", "exec_start", "exec_die", "health_status", "attach", "resize"} {
		if opts.Filters["event"][a] {
			t.Errorf("stream filters ask for %q events, which never change a discovery", a)
		}
	}
}

func TestCacheDropsAListingThatAnEventOverlapped(t *testing.T) {
	e := newCacheEngine()
	c := NewCache(e, e, CacheOptions{Logger: zerolog.Nop()})
	following(t, c)
	e.during = func() { emit(t, c, e, events.Message{Type: "image", Action: "untag"}) }
	expect(t, c, e, false, 1)
	expect(t, c, e, false, 2) // the first listing may have missed that change
	expect(t, c, e, true, 2)
}

func TestCacheListsAfreshWhileTheStreamIsLost(t *testing.T) {
	e := newCacheEngine()
	c := NewCache(e, e, CacheOptions{Logger: zerolog.Nop()})
	following(t, c)
	expect(t, c, e, false, 1)
	expect(t, c, e, true, 1)

	_, errs := e.stream()
	e.mu.Lock()
	e.refuse = errors.New("connection refused") // the engine restarting
	e.mu.Unlock()
	errs <- errors.New("unexpected EOF")
	waitLive(t, c, false)
	expect(t, c, e, false, 2)
	expect(t, c, e, false, 3)

	testenv.Eventually(t, 5*time.Second, 10*time.Millisecond, func() (bool, string) {
		e.mu.Lock()
		defer e.mu.Unlock()
		return len(e.opened) >= 2, "the stream was not opened again after a second"
	})
	expect(t, c, e, false, 4) // refused: still listing afresh

	e.mu.Lock()
	e.refuse = nil
	e.mu.Unlock()
	waitLive(t, c, true) // reopened after the backoff
	expect(t, c, e, false, 5)
	expect(t, c, e, true, 5)
}

func TestCacheListsAfreshOnASwarmChangeAndWhenOld(t *testing.T) {
	e := newCacheEngine()
	c := NewCache(e, e, CacheOptions{Logger: zerolog.Nop(), MaxAge: time.Hour})
	now := time.Now()
	var clock sync.Mutex
	c.now = func() time.Time { clock.Lock(); defer clock.Unlock(); return now }
	following(t, c)
	expect(t, c, e, false, 1)
	expect(t, c, e, true, 1)

	e.mu.Lock()
	e.swarm = swarm.LocalNodeStateActive // joined a swarm: no watched event says so
	e.mu.Unlock()
	expect(t, c, e, false, 2)
	expect(t, c, e, true, 2)

	clock.Lock()
	now = now.Add(time.Hour)
	clock.Unlock()
	expect(t, c, e, false, 3)
	expect(t, c, e, true, 3)
}

func composeContainer(id, project, service, ref, imageID, state string) container.Summary {
	return container.Summary{ID: id, Image: ref, ImageID: imageID, Labels: composeLabels(project, service), State: container.ContainerState(state)}
}
