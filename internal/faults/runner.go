package faults

import (
	"context"
	"fmt"
	"hash/fnv"
	mrand "math/rand/v2"
	"strings"
	"testing"
	"time"
)

// Class is one kind of fault. A run of a class builds a fresh environment
// from its seed, drives the real agent through the fault, waits for the
// agent to settle within a bounded recovery window, and reports what it
// expected but did not see (Drive's return value); the runner then checks
// the invariants.
type Class struct {
	Name string
	// Injects says what the class does, for docs/faults.md.
	Injects string
	// Platforms the class runs on; a run's seed picks one.
	Platforms []Platform
	// Options picks the run's environment (rng is seeded by the run's seed).
	Options func(rng *mrand.Rand, p Platform) Options
	// Drive runs the scenario and returns the expectations it missed
	// (a bad image not rolled back, a slow image rolled back, a settle
	// condition never reached…). It leaves one agent running, or none.
	Drive func(e *Env) []string
}

// Result is the record of one run.
type Result struct {
	Class      string
	Platform   Platform
	Seed       int64
	Violations []Violation
	Misses     []string
	Rollbacks  int             // rolled-back entries of the agent in history
	ToRollback []time.Duration // duration of each rolled-back rollout
	Outage     time.Duration   // longest window of failed probes
	Probed     bool            // Outage was measured (single replica, published port)
	Took       time.Duration
	Notes      []string
}

// Failed reports whether the run broke an invariant or missed an expectation.
func (r Result) Failed() bool { return len(r.Violations) > 0 || len(r.Misses) > 0 }

// SeedFor derives the seed of run i of class from the suite's base seed, so
// that `-faults.seed S -faults.class C -faults.runs N` repeats exactly the
// choices of those runs.
func SeedFor(base int64, class string, i int) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(class))
	return base + int64(h.Sum64()&0xffffff)*1000 + int64(i)
}

// PlatformFor picks the platform of a run: the seed alternates between the
// class's platforms.
func PlatformFor(c Class, seed int64) Platform {
	return c.Platforms[mrand.New(mrand.NewPCG(uint64(seed), 0x9a7f)).IntN(len(c.Platforms))]
}

// RunOne runs class once with seed against the real engine, with the
// shipwatch binary bin.
func RunOne(t *testing.T, c Class, seed int64, bin string) Result {
	start := time.Now()
	p := PlatformFor(c, seed)
	rng := mrand.New(mrand.NewPCG(uint64(seed), 0xfa17))
	opts := Options{}
	if c.Options != nil {
		opts = c.Options(rng, p)
	}
	res := Result{Class: c.Name, Platform: p, Seed: seed}
	e := NewEnv(t, seed, p, bin, opts)
	swarmCfg := ""
	if p == Swarm {
		swarmCfg = ", shipwatch's default update settings"
		if u := e.Opts.SwarmUpdate; u != nil {
			swarmCfg = fmt.Sprintf(", own update settings (monitor %s, delay %s, %s)", u.Monitor, u.Delay, u.Order)
		}
	}
	t.Logf("run %s seed %d on %s: policy %s, scan %v, referrers %v, replicas %d%s, target %s",
		c.Name, seed, p, e.Opts.Policy, e.Opts.Scan, e.Opts.Referrers, e.Opts.Replicas, swarmCfg, e.Target)
	e.StartProber()
	res.Misses = append(res.Misses, c.Drive(e)...)

	// The fault is over: the agent that is left answers the API sweep,
	// then stops gracefully.
	e.Faults.Clear()
	if e.Proxy != nil {
		e.Proxy.OnRequest(nil)
	}
	if e.agentAlive() {
		e.SweepAPI()
	}
	for i, a := range e.Agents() {
		if a.Exited() {
			continue
		}
		if err := a.Stop(3 * time.Minute); err != nil {
			res.Misses = append(res.Misses, fmt.Sprintf("agent %d did not stop gracefully: %v", i+1, err))
		}
	}
	if e.prober != nil {
		e.prober.Stop()
		res.Outage, res.Probed = e.prober.Outage(), e.Opts.Replicas == 1
	}

	// Recovery window: what runs must settle (a restarted task, a
	// container whose healthcheck has not reported yet) within a bound.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		o := e.observeWorkload(ctx)
		if len(I1Healthy(o)) == 0 && len(I2Containers(o)) == 0 && len(I5NotPaused(o)) == 0 {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
	o := e.Observe()
	res.Violations = Check(o)
	for _, h := range o.History {
		if h.Outcome == "rolled-back" && h.Mode == "agent" {
			res.Rollbacks++
			res.ToRollback = append(res.ToRollback, time.Duration(h.DurationMS)*time.Millisecond)
		}
	}
	res.Notes = e.Notes()
	res.Took = time.Since(start)
	if res.Failed() || verbose {
		for _, v := range res.Violations {
			t.Errorf("seed %d: %s", seed, v)
		}
		for _, m := range res.Misses {
			t.Errorf("seed %d: expectation: %s", seed, m)
		}
		if res.Probed {
			t.Logf("outage: the longest window of failed probes was %s", res.Outage)
		}
		for i, a := range e.Agents() {
			t.Logf("agent %d log:\n%s", i+1, tail(quiet(a.Log()), logLines))
		}
		seen := map[string]int{}
		for _, h := range o.History {
			line := fmt.Sprintf("%s %s to=%s running=%s decision=%s: %.300s", h.Mode, h.Outcome, short(digestOf(h.To)), short(h.Running), h.Decision, h.Reason)
			if seen[line]++; seen[line] == 1 {
				t.Logf("history #%d %s", h.ID, line)
			}
		}
		for line, n := range seen {
			if n > 1 {
				t.Logf("(%d times) %.120s", n, line)
			}
		}
		for _, c := range o.Containers {
			t.Logf("container %s %s state=%s health=%s digest=%s task=%s", short(c.ID), c.Name, c.State, c.Health, short(c.Digest), c.Task)
		}
		for _, hit := range e.Faults.Hits() {
			t.Logf("fault %s: %s %s %s → %s", hit.Rule, hit.Client, hit.Method, hit.Path, hit.Fault)
		}
	}
	return res
}

// logLines is how much of each agent's log a failed run shows
// (-faults.log in the suite's test).
var logLines = 60

// SetLogLines sets how many log lines of each agent a failed run shows.
func SetLogLines(n int) { logLines = n }

// verbose shows the agents' logs and the history of every run, not only
// of failed ones.
var verbose bool

// SetVerbose makes every run show its logs and history.
func SetVerbose(v bool) { verbose = v }

// quiet drops the API's request lines (the suite's own polling) from a log.
func quiet(log string) string {
	var b strings.Builder
	for _, l := range strings.Split(log, "\n") {
		if !strings.Contains(l, `"message":"api: request"`) {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

func tail(s string, lines int) string {
	n := 0
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '\n' {
			n++
			if n == lines {
				return "…\n" + s[i+1:]
			}
		}
	}
	return s
}
