package agent

import (
	"math"
	"testing"
)

// fakeRuntime records what an idleCollector asks of the runtime.
type fakeRuntime struct {
	pct   int
	limit int64
	frees int
	held  int64
}

func (f *fakeRuntime) collector(managed bool) *idleCollector {
	f.pct, f.limit = 100, math.MaxInt64
	return &idleCollector{
		managed: managed, percent: 100, limit: math.MaxInt64,
		setPct:   func(p int) int { old := f.pct; f.pct = p; return old },
		setLimit: func(l int64) int64 { old := f.limit; f.limit = l; return old },
		free:     func() { f.frees++ },
		held:     func() int64 { return f.held },
	}
}

func (f *fakeRuntime) want(t *testing.T, when string, pct int, limit int64, frees int) {
	t.Helper()
	if f.pct != pct || f.limit != limit || f.frees != frees {
		t.Errorf("%s: GC percent %d, memory limit %d, %d frees; want %d, %d, %d", when, f.pct, f.limit, f.frees, pct, limit, frees)
	}
}

func TestCollectorIdlesOnlyBetweenWorkWhileAnAgentRuns(t *testing.T) {
	const mib = 1 << 20
	f := &fakeRuntime{held: 20 * mib}
	c := f.collector(true)

	// Without a running agent (shipwatch check, rollout), work ends as it
	// always did: the garbage goes back, the settings stay.
	c.work()()
	f.want(t, "work without an agent", 100, math.MaxInt64, 1)

	stop := c.start()
	done := c.work()
	f.want(t, "first pass running", 100, math.MaxInt64, 1)
	done()
	f.want(t, "between passes", -1, 40*mib, 2)

	// Work puts the usual settings back for its whole duration, however
	// many pieces of it overlap.
	pass := c.work()
	f.want(t, "a pass", 100, math.MaxInt64, 2)
	api := c.work()
	pass()
	f.want(t, "an API rollout outlasting the pass", 100, math.MaxInt64, 2)
	f.held = 2 * mib
	api()
	f.want(t, "idle again, small heap", -1, 2*mib+idleHeadroomMin, 3)

	stop()
	f.want(t, "agent stopped", 100, math.MaxInt64, 3)
	c.work()()
	f.want(t, "work after the agent stopped", 100, math.MaxInt64, 4)
}

func TestCollectorLeavesTheOperatorsSettingsAlone(t *testing.T) {
	f := &fakeRuntime{held: 20 << 20}
	c := f.collector(false) // GOGC or GOMEMLIMIT set
	stop := c.start()
	c.work()()
	f.want(t, "between passes, GOGC set", 100, math.MaxInt64, 1)
	stop()
	f.want(t, "agent stopped, GOGC set", 100, math.MaxInt64, 1)
}

func TestCollectorNeverLimitsWithoutAReading(t *testing.T) {
	f := &fakeRuntime{held: 0}
	c := f.collector(true)
	defer c.start()()
	c.work()()
	f.want(t, "no reading of the held memory", 100, math.MaxInt64, 1)
}

// TestHeldMemoryIsRead: the runtime metrics the memory limit is set from
// exist under these names.
func TestHeldMemoryIsRead(t *testing.T) {
	if n := heldMemory(); n < 1<<20 {
		t.Fatalf("heldMemory() = %d bytes, want the runtime's memory (at least 1 MiB)", n)
	}
}
