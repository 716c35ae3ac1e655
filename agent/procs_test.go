package agent

import "testing"

// fakeProcs records what a procLimit asks of the runtime.
type fakeProcs struct {
	procs  int
	resets int
}

func (f *fakeProcs) limit(managed bool) *procLimit {
	f.procs = 2
	return &procLimit{
		managed: managed,
		set:     func(n int) int { old := f.procs; f.procs = n; return old },
		reset:   func() { f.procs = 2; f.resets++ },
	}
}

func TestOneProcessorWhileAnyAgentRuns(t *testing.T) {
	var f fakeProcs
	p := f.limit(true)
	stopA := p.start()
	if f.procs != 1 {
		t.Fatalf("one agent running: GOMAXPROCS %d, want 1", f.procs)
	}
	stopB := p.start()
	stopA()
	if f.procs != 1 || f.resets != 0 {
		t.Fatalf("one of two agents stopped: GOMAXPROCS %d after %d resets, want 1 and none", f.procs, f.resets)
	}
	stopB()
	if f.procs != 2 || f.resets != 1 {
		t.Fatalf("every agent stopped: GOMAXPROCS %d after %d resets, want the default (2) after one", f.procs, f.resets)
	}
}

func TestOperatorsGOMAXPROCSIsKept(t *testing.T) {
	var f fakeProcs
	p := f.limit(false) // GOMAXPROCS set
	stop := p.start()
	if f.procs != 2 {
		t.Errorf("agent running with GOMAXPROCS set: changed to %d", f.procs)
	}
	stop()
	if f.procs != 2 || f.resets != 0 {
		t.Errorf("agent stopped with GOMAXPROCS set: %d after %d resets, want 2 untouched", f.procs, f.resets)
	}
}
