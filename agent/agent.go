// Package agent is the long-running shipwatch daemon: it runs passes on a
// schedule (global and per target) and on registry webhooks, recovers
// rollouts that a previous process left in flight, keeps the last outcome of
// every target for `shipwatch status` and the API, and stops gracefully.
package agent

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/robfig/cron/v3"
	"github.com/rs/zerolog"

	"github.com/shipwatch/shipwatch/config"
	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/pass"
	"github.com/shipwatch/shipwatch/state"
)

// Options configure an Agent.
type Options struct {
	Config *config.Config
	// Deps are the pass's parts, with Store, Notifier, Metrics and Locks set.
	Deps   pass.Deps
	Store  *state.Store
	Logger zerolog.Logger
}

// Agent runs passes until its context ends.
type Agent struct {
	cfg   *config.Config
	deps  pass.Deps
	store *state.Store
	log   zerolog.Logger

	hints    chan hint
	approved chan string // targets approved through the API: run them now
	wg       sync.WaitGroup

	mu        sync.Mutex
	status    map[string]pass.TargetView
	lastPass  time.Time
	lastError string
	schedules map[string]cron.EntryID
	running   map[string]*atomic.Bool // per schedule spec: skip if still running
	queued    map[string]bool         // repositories with a hint waiting
	again     map[string]bool         // hint passes to run once more
	cron      *cron.Cron
}

// New checks the options and returns an agent ready to Run.
func New(opts Options) (*Agent, error) {
	if opts.Config == nil || opts.Store == nil {
		return nil, errors.New("agent: config and state store are required")
	}
	deps := opts.Deps
	if deps.Locks == nil {
		deps.Locks = &pass.Locks{}
	}
	deps.Store = opts.Store
	deps.RolloutGrace = opts.Config.Rollout.ShutdownGrace.Std()
	return &Agent{
		cfg:       opts.Config,
		deps:      deps,
		store:     opts.Store,
		log:       opts.Logger,
		hints:     make(chan hint, 64),
		approved:  make(chan string, 16),
		status:    map[string]pass.TargetView{},
		schedules: map[string]cron.EntryID{},
		running:   map[string]*atomic.Bool{},
		queued:    map[string]bool{},
		again:     map[string]bool{},
	}, nil
}

// Run recovers interrupted rollouts, then runs passes on the schedule and on
// hints until ctx ends; it then waits for the pass in flight (whose rollout
// has the configured grace to finish or roll back) and returns.
func (a *Agent) Run(ctx context.Context) error {
	defer procs.start()()
	defer collector.start()()
	a.log.Info().Str("schedule", a.cfg.Schedule).Str("state", a.store.Path()).Int("procs", runtime.GOMAXPROCS(0)).Msg("agent starting")
	if err := a.recoverWork(ctx); err != nil {
		return fmt.Errorf("recover interrupted rollouts: %w", err)
	}
	sched := cron.New(cron.WithParser(config.CronParser))
	a.cron = sched
	if _, err := a.addSchedule(ctx, sched, a.cfg.Schedule, true); err != nil {
		return err
	}
	a.syncSchedules(ctx)
	sched.Start()
	// A first pass right away, so that a new agent shows its plan at once.
	a.startPass(ctx, a.cfg.Schedule, "start", a.globalFilter())
	for {
		select {
		case <-ctx.Done():
			a.log.Info().Msg("agent stopping: waiting for the pass in flight")
			<-sched.Stop().Done()
			a.wg.Wait()
			a.log.Info().Msg("agent stopped")
			return nil
		case h := <-a.hints:
			a.startPass(ctx, "hint:"+h.repository, "webhook", a.hintFilter(h))
		case id := <-a.approved:
			a.startPass(ctx, "approval:"+id, "approval", func(t deployer.Target, _ config.Effective) bool { return t.ID == id })
		}
	}
}

// recoverWork is recover as work in flight (see collector).
func (a *Agent) recoverWork(ctx context.Context) error {
	defer collector.work()()
	return a.recover(ctx)
}

// addSchedule registers spec (once); global selects the targets without a
// schedule of their own, otherwise the targets whose schedule is spec.
func (a *Agent) addSchedule(ctx context.Context, sched *cron.Cron, spec string, global bool) (cron.EntryID, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if id, ok := a.schedules[spec]; ok {
		return id, nil
	}
	filter := a.globalFilter()
	if !global {
		filter = func(_ deployer.Target, p config.Effective) bool { return p.Schedule == spec }
	}
	id, err := sched.AddFunc(spec, func() {
		if j := a.cfg.Jitter.Std(); j > 0 {
			select {
			case <-time.After(time.Duration(rand.Int64N(int64(j)))):
			case <-ctx.Done():
				return
			}
		}
		a.startPass(ctx, spec, "schedule", filter)
	})
	if err != nil {
		return 0, fmt.Errorf("schedule %q: %w", spec, err)
	}
	a.schedules[spec] = id
	return id, nil
}

func (a *Agent) globalFilter() func(deployer.Target, config.Effective) bool {
	global := a.cfg.Schedule
	return func(_ deployer.Target, p config.Effective) bool { return p.Schedule == "" || p.Schedule == global }
}

// startPass runs one agent pass in the background unless the previous pass
// of the same trigger is still running (skip-if-still-running). A webhook
// hint that arrives while its repository's pass runs is not lost: that pass
// runs once more when it ends.
func (a *Agent) startPass(ctx context.Context, key, why string, filter func(deployer.Target, config.Effective) bool) {
	a.mu.Lock()
	flag, ok := a.running[key]
	if !ok {
		flag = &atomic.Bool{}
		a.running[key] = flag
	}
	a.mu.Unlock()
	if !flag.CompareAndSwap(false, true) {
		if why == "webhook" {
			a.mu.Lock()
			a.again[key] = true
			a.mu.Unlock()
			return
		}
		a.log.Debug().Str("trigger", why).Str("key", key).Msg("previous pass still running: skipped")
		return
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer flag.Store(false)
		// The agent idles between passes: the pass's garbage goes back to
		// the system when it ends, and the collector idles (collector.go).
		defer collector.work()()
		for ctx.Err() == nil {
			a.runPass(ctx, why, filter)
			a.mu.Lock()
			again := a.again[key]
			delete(a.again, key)
			a.mu.Unlock()
			if !again {
				return
			}
		}
	}()
}

func (a *Agent) runPass(ctx context.Context, why string, filter func(deployer.Target, config.Effective) bool) {
	rep, err := pass.Run(ctx, a.deps, pass.Options{Mode: pass.Agent, Filter: filter})
	a.remember(rep, err)
	if err != nil {
		a.log.Error().Err(err).Str("trigger", why).Msg("pass failed")
		return
	}
	a.addTargetSchedules(ctx, rep.Schedules)
	a.log.Info().Str("trigger", why).Int("targets", len(rep.Targets)).
		Int("updated", rep.Count(deployer.Updated)).Int("available", rep.Count(deployer.Available)).
		Int("blocked", rep.Count(deployer.Blocked)).Int("rolled_back", rep.Count(deployer.RolledBack)).
		Int("failed", rep.Count(deployer.Failed)).Bool("reused_discovery", rep.ReusedDiscovery).
		Str("took", rep.Took.Round(time.Millisecond).String()).Msg("pass done")
}

// syncSchedules registers the schedules that targets set for themselves
// (config or shipwatch.schedule labels) before the first pass.
func (a *Agent) syncSchedules(ctx context.Context) {
	if a.cron == nil {
		return
	}
	targets, err := pass.EnabledTargets(ctx, a.deps)
	if err != nil {
		a.log.Warn().Err(err).Msg("per-target schedules not refreshed")
		return
	}
	schedules := map[string]string{}
	for _, t := range targets {
		if _, seen := schedules[t.Policy.Schedule]; t.Policy.Schedule != "" && !seen {
			schedules[t.Policy.Schedule] = t.Target.ID
		}
	}
	a.addTargetSchedules(ctx, schedules)
}

// addTargetSchedules registers the per-target schedules a pass found
// (spec → a target using it) as they appear, from the pass's own discovery:
// asking the engine again after every pass cost as much as the discovery
// itself (docs/benchmarks/agent.md).
func (a *Agent) addTargetSchedules(ctx context.Context, schedules map[string]string) {
	if a.cron == nil {
		return
	}
	for spec, target := range schedules {
		if spec == a.cfg.Schedule {
			continue
		}
		if _, err := a.addSchedule(ctx, a.cron, spec, false); err != nil {
			a.log.Warn().Err(err).Str("target", target).Msg("target schedule not usable")
		}
	}
}

// remember keeps the last outcome of every target for status queries.
func (a *Agent) remember(rep pass.Report, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.lastPass = time.Now()
	a.lastError = ""
	if err != nil {
		a.lastError = err.Error()
		return
	}
	for _, t := range rep.Targets {
		a.status[t.Target.ID] = t.View()
	}
}

// Status is what `shipwatch status` and GET /v1/targets show.
type Status struct {
	LastPass   time.Time           `json:"last_pass"`
	LastError  string              `json:"last_error,omitempty"`
	Targets    []pass.TargetView   `json:"targets"`
	Approvals  []state.Approval    `json:"approvals"`
	Quarantine []state.Quarantined `json:"quarantine"`
}

// Status returns the last known outcome of every target, the pending
// approvals and the quarantine.
func (a *Agent) Status() (Status, error) {
	a.mu.Lock()
	st := Status{LastPass: a.lastPass, LastError: a.lastError, Targets: []pass.TargetView{}}
	for _, t := range a.status {
		st.Targets = append(st.Targets, t)
	}
	a.mu.Unlock()
	sort.Slice(st.Targets, func(i, j int) bool { return st.Targets[i].ID < st.Targets[j].ID })
	var err error
	if st.Approvals, err = a.store.Approvals(); err != nil {
		return st, err
	}
	st.Quarantine, err = a.store.QuarantineList()
	return st, err
}
