package agent

import (
	"math"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// The Go runtime collects garbage at least every two minutes, even in a
// process that allocated nothing since the last collection. An idle agent
// is such a process: between passes it holds the state it keeps and
// waits. Each of those forced collections marks the whole live heap again
// and finds nothing to free (10–20 ms of CPU each on the benchmark
// machine, two or more between passes on the default @every 5m schedule;
// docs/benchmarks/agent.md).
//
// So while an agent runs and no work is in flight, the collector is
// switched from its percentage goal to a memory limit: the memory the
// runtime holds when the work ended plus as much again (at least
// idleHeadroomMin). A collection then runs only when something allocated
// that much since (API calls and webhooks between passes do), not on a
// timer. Work (a pass, an API check, rollout or rollback, the recovery at
// start) puts the usual settings back for its duration. An operator who
// sets GOGC or GOMEMLIMIT keeps exactly those: the agent then only returns
// a finished pass's garbage to the system, as before.
var collector = &idleCollector{
	managed:  os.Getenv("GOGC") == "" && os.Getenv("GOMEMLIMIT") == "",
	percent:  100,
	limit:    math.MaxInt64,
	setPct:   debug.SetGCPercent,
	setLimit: debug.SetMemoryLimit,
	free:     debug.FreeOSMemory,
	held:     heldMemory,
}

// idleHeadroomMin is the least the heap may grow between passes before a
// collection.
const idleHeadroomMin = 8 << 20

type idleCollector struct {
	managed        bool
	percent        int   // the settings that work runs with
	limit          int64 //
	setPct         func(int) int
	setLimit       func(int64) int64
	free           func()
	held           func() int64
	mu             sync.Mutex
	agents, inWork int
	idle           bool // the memory limit is in force
}

// start registers a running agent; its stop function undoes it, and the
// last agent to stop leaves the usual settings behind.
func (c *idleCollector) start() (stop func()) {
	c.mu.Lock()
	c.agents++
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.agents--
		if c.agents == 0 {
			c.workLocked()
		}
	}
}

// work marks work in flight; done ends it. When the last work in flight
// ends, the garbage is returned to the system and, while an agent runs,
// the collector idles.
func (c *idleCollector) work() (done func()) {
	c.mu.Lock()
	c.inWork++
	c.workLocked()
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.inWork--
		if c.inWork > 0 {
			return
		}
		c.free()
		if held := c.held(); c.managed && c.agents > 0 && held > 0 {
			c.setLimit(held + max(held, idleHeadroomMin))
			c.setPct(-1)
			c.idle = true
		}
	}
}

// workLocked puts the usual settings back.
func (c *idleCollector) workLocked() {
	if !c.idle {
		return
	}
	c.setPct(c.percent)
	c.setLimit(c.limit)
	c.idle = false
}

// heldMemory is the memory the Go runtime holds from the system: what a
// memory limit is compared against.
func heldMemory() int64 {
	s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 || s[1].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return int64(s[0].Value.Uint64() - s[1].Value.Uint64())
}
