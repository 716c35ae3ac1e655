package agent

import (
	"os"
	"runtime"
	"sync"
)

// An agent spends its passes waiting: on registries, on the engine, on
// health checks. With more than one processor (P) the Go runtime wakes
// another thread for nearly every response that arrives and hands
// goroutines from thread to thread; on a virtual machine each of those
// wake-ups is a costly context switch. On the benchmark machine a pass
// over 1000 images took as long on one P as on two and used a fifth to a
// third less CPU (docs/benchmarks/agent.md, "One processor").
//
// So while an agent runs, GOMAXPROCS is 1. An operator who sets
// GOMAXPROCS keeps exactly that; when the last agent in the process
// stops, the runtime's default (which follows the CPU quota) is back.
var procs = &procLimit{
	managed: os.Getenv("GOMAXPROCS") == "",
	set:     runtime.GOMAXPROCS,
	reset:   runtime.SetDefaultGOMAXPROCS,
}

type procLimit struct {
	managed bool
	set     func(int) int
	reset   func()
	mu      sync.Mutex
	agents  int
}

// start registers a running agent; its stop function undoes it.
func (p *procLimit) start() (stop func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.agents++
	if p.managed && p.agents == 1 {
		p.set(1)
	}
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.agents--
		if p.managed && p.agents == 0 {
			p.reset()
		}
	}
}
