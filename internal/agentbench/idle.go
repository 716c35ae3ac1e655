package agentbench

import (
	"context"
	"fmt"
	"sort"
	"time"
)

// IdleOptions configure one idle measurement.
type IdleOptions struct {
	// Interval is the agent's schedule, "@every <Interval>".
	Interval time.Duration
	// Passes is how many scheduled passes the measured window holds; the
	// window is Passes × Interval, starting when the first pass (the one
	// the agent runs at start) has ended.
	Passes int
	// SampleEvery is the /proc sampling period (default 1s).
	SampleEvery time.Duration
	// API runs the agent with its HTTP API and webhooks on.
	API bool
	// Env adds to the agent's environment (GOGC=…, GOMEMLIMIT=…).
	Env []string
	// FirstPassTimeout bounds the agent's start and first pass (default 10m).
	FirstPassTimeout time.Duration
}

// IdleResult is what an idle agent cost.
type IdleResult struct {
	Schedule string
	Env      []string
	API      bool
	// First is the pass the agent runs at start (cold: tokens, connections).
	First PassCounts
	// Ready is from exec to the end of the first pass.
	Ready time.Duration
	// CPUAtReady and RSSAtReady are read when the first pass has ended.
	CPUAtReady time.Duration
	RSSAtReady int64
	// Window is the measured time (from the end of the first pass), which
	// holds Passes scheduled passes; it is stretched to the end of the last
	// one if that ends after Passes × Interval.
	Window time.Duration
	Passes []PassCounts
	// CPU is the CPU time the agent used in the window.
	CPU time.Duration
	// RSS over the window's samples: minimum, median, maximum; HWM is the
	// peak resident set of the agent's whole life, first pass included.
	RSSMin, RSSMedian, RSSMax, HWM int64
	// AnonMedian and FileMedian split the median sample's resident set.
	AnonMedian, FileMedian int64
	Samples                int
	// Series is every sample of the window, in order, the first pass's
	// end (the window's start) first.
	Series []Sample
	// Per scheduled pass, averaged over the window: fake-engine calls
	// by route and registry requests.
	EngineCallsPerPass map[string]float64
	RegistryPerPass    float64
	// ConnsPerPass are the registry connections the agent opened per pass.
	ConnsPerPass float64
	// HelperSamples counts the window's samples in which the agent had a
	// child process (a shipwatch helper), HelperRSSMax is the most those
	// children held at once. An idle pass has nothing to verify or deploy,
	// so a lean agent starts none.
	HelperSamples int
	HelperRSSMax  int64
	// Exit is the kernel's account of the agent's whole life.
	Exit Usage
	// Errors are error-level lines the agent logged.
	Errors []string
}

// CPUPerMinute is CPU seconds per minute of wall time in the window.
func (r IdleResult) CPUPerMinute() float64 {
	if r.Window <= 0 {
		return 0
	}
	return r.CPU.Seconds() / r.Window.Minutes()
}

// Idle runs an agent on the whole estate with nothing to deploy and
// measures its memory and CPU time between scheduled passes and during
// them.
func (b *Bench) Idle(ctx context.Context, opts IdleOptions) (res IdleResult, err error) {
	if opts.Interval <= 0 || opts.Passes <= 0 {
		return res, fmt.Errorf("idle: interval %s and passes %d must be positive", opts.Interval, opts.Passes)
	}
	if opts.SampleEvery <= 0 {
		opts.SampleEvery = time.Second
	}
	if opts.FirstPassTimeout <= 0 {
		opts.FirstPassTimeout = 10 * time.Minute
	}
	schedule := "@every " + opts.Interval.String()
	res = IdleResult{Schedule: schedule, Env: opts.Env, API: opts.API}
	cfg := AgentConfig{Schedule: schedule}
	if opts.API {
		cfg.APIListen = "listen"
	}
	b.Engine.ResetCalls()
	b.Fixture.Registry.Reset()
	r, err := b.start("idle-"+opts.Interval.String(), cfg, "info", opts.Env)
	if err != nil {
		return res, err
	}
	defer func() {
		u, stopErr := r.agent.Stop(30 * time.Second)
		res.Exit = u
		if err == nil {
			err = stopErr
		}
	}()
	want := len(b.Fixture.Services)
	l, idx, err := waitPass(ctx, r.agent, 0, "start", opts.FirstPassTimeout)
	if err != nil {
		return res, err
	}
	res.First = passCounts(l)
	if err := res.First.idleError(want); err != nil {
		return res, err
	}
	s0, err := r.agent.Sample()
	if err != nil {
		return res, err
	}
	res.Ready, res.CPUAtReady, res.RSSAtReady = r.agent.Uptime(), s0.CPU, s0.RSS
	b.logf("%s: first pass done in %s (agent up %s, CPU %s, RSS %s MiB); measuring %d passes",
		r.name, res.First.Took, res.Ready.Round(time.Millisecond), res.CPUAtReady, MiB(res.RSSAtReady), opts.Passes)
	b.Engine.ResetCalls()
	b.Fixture.Registry.Reset()

	end := s0.At.Add(time.Duration(opts.Passes) * opts.Interval)
	var samples []Sample
	last := s0
	tick := time.NewTicker(opts.SampleEvery)
	defer tick.Stop()
	cursor := idx + 1
	for len(res.Passes) < opts.Passes || time.Now().Before(end) {
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-tick.C:
		}
		s, err := r.agent.Sample()
		if err != nil {
			return res, err
		}
		last = s
		samples = append(samples, s)
		if s.Children > 0 {
			res.HelperSamples++
			res.HelperRSSMax = max(res.HelperRSSMax, s.ChildRSS)
		}
		for _, l := range r.agent.Lines(cursor) {
			cursor++
			if isPassEnd("")(l) {
				if l.Message() == "pass failed" {
					return res, fmt.Errorf("a scheduled pass failed: %s", l.Str("error"))
				}
				p := passCounts(l)
				if err := p.idleError(want); err != nil {
					return res, err
				}
				res.Passes = append(res.Passes, p)
				b.logf("%s: %s pass %d done in %s (RSS %s MiB, CPU so far %s)", r.name, p.Trigger, len(res.Passes), p.Took, MiB(s.RSS), s.CPU-s0.CPU)
			}
		}
		if len(res.Passes) > opts.Passes {
			return res, fmt.Errorf("%d passes ran in a window meant for %d: is the machine too slow for the schedule?", len(res.Passes), opts.Passes)
		}
		if time.Since(s0.At) > time.Duration(opts.Passes+1)*opts.Interval+opts.FirstPassTimeout {
			return res, fmt.Errorf("only %d of %d scheduled passes ended in %s", len(res.Passes), opts.Passes, time.Since(s0.At).Round(time.Second))
		}
	}
	res.Window = last.At.Sub(s0.At)
	res.CPU = last.CPU - s0.CPU
	res.Samples = len(samples)
	res.Series = append([]Sample{s0}, samples...)
	sort.Slice(samples, func(i, j int) bool { return samples[i].RSS < samples[j].RSS })
	if n := len(samples); n > 0 {
		med := samples[n/2]
		res.RSSMin, res.RSSMedian, res.RSSMax = samples[0].RSS, med.RSS, samples[n-1].RSS
		res.AnonMedian, res.FileMedian = med.Anon, med.File
	}
	// The kernel folds per-CPU RSS counters into VmHWM lazily: a sample's
	// VmRSS can exceed the VmHWM read a second later.
	res.HWM = max(last.HWM, res.RSSMax)
	res.EngineCallsPerPass = map[string]float64{}
	for k, v := range b.Engine.Calls() {
		res.EngineCallsPerPass[k] = float64(v) / float64(len(res.Passes))
	}
	res.RegistryPerPass = float64(len(b.Fixture.Registry.Requests())) / float64(len(res.Passes))
	res.ConnsPerPass = float64(b.Fixture.Registry.Conns()) / float64(len(res.Passes))
	res.Errors = r.agent.Errors(0)
	return res, nil
}
