// Command agentbench measures the shipwatch agent watching a thousand
// images: its memory and CPU when idle, and how fast a registry push
// becomes a rollout by webhook and by polling. See docs/benchmarks/agent.md.
//
//	go run ./internal/agentbench/cmd/agentbench -json /tmp/agentbench.json
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/shipwatch/shipwatch/internal/agentbench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "agentbench:", err)
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// idleRuns is the -idle flag: "interval:passes,…".
type idleRuns []agentbench.IdleOptions

func (r *idleRuns) String() string {
	var parts []string
	for _, o := range *r {
		parts = append(parts, fmt.Sprintf("%s:%d", o.Interval, o.Passes))
	}
	return strings.Join(parts, ",")
}

func (r *idleRuns) Set(s string) error {
	*r = nil
	if s == "" || s == "none" {
		return nil
	}
	for _, part := range strings.Split(s, ",") {
		iv, n, ok := strings.Cut(strings.TrimSpace(part), ":")
		d, err := time.ParseDuration(iv)
		passes, err2 := strconv.Atoi(n)
		if !ok || err != nil || err2 != nil || d <= 0 || passes <= 0 {
			return fmt.Errorf("%q: write interval:passes, such as 5m:2", part)
		}
		*r = append(*r, agentbench.IdleOptions{Interval: d, Passes: passes})
	}
	return nil
}

type envList []string

func (e *envList) String() string { return strings.Join(*e, " ") }
func (e *envList) Set(s string) error {
	if !strings.Contains(s, "=") {
		return fmt.Errorf("%q: write NAME=value", s)
	}
	*e = append(*e, s)
	return nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("agentbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		fx       agentbench.FixtureOptions
		idle     = idleRuns{{Interval: 5 * time.Minute, Passes: 2}, {Interval: time.Minute, Passes: 10}}
		env      envList
		binary   = fs.String("bin", "", "shipwatch binary to measure (default: built from this checkout like the Dockerfile does)")
		webhook  = fs.Int("webhook", 100, "webhook latency samples (0: skip)")
		polling  = fs.Int("polling", 20, "polling latency samples (0: skip)")
		interval = fs.Duration("poll-interval", 10*time.Second, "schedule of the polling latency run")
		api      = fs.Bool("idle-api", false, "run the idle agents with the HTTP API and webhooks on")
		jsonPath = fs.String("json", "", "also write every sample as JSON to this file")
		logDir   = fs.String("logs", "", "keep the agents' configs and logs in this directory")
		seed     = fs.Uint64("seed", 0, "seed of the polling phases (0: random)")
	)
	fs.IntVar(&fx.DigestImages, "digest", 800, "services following the digest of their tag")
	fs.IntVar(&fx.SemverImages, "semver", 200, "services following a semver range")
	fs.IntVar(&fx.TagsPerRepo, "tags", 250, "tags per semver repository")
	fs.Var(&idle, "idle", "idle runs as interval:passes,… (none: skip)")
	fs.Var(&env, "env", "NAME=value added to the agent's environment (repeatable), e.g. GOMEMLIMIT=20MiB")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	b, err := agentbench.New(ctx, agentbench.Options{Fixture: fx, Binary: *binary, Progress: stderr, LogDir: *logDir})
	if err != nil {
		return err
	}
	defer b.Close()
	rep := &agentbench.Report{
		Command: "go run ./internal/agentbench/cmd/agentbench " + strings.Join(args, " "),
		Started: time.Now(), Machine: agentbench.ReadMachine(b.Binary), Services: len(b.Fixture.Services),
		Digest: b.Fixture.Opts.DigestImages, Semver: b.Fixture.Opts.SemverImages, Tags: b.Fixture.Opts.TagsPerRepo,
		Setup: b.Fixture.Setup, PollInterval: *interval,
	}
	for _, o := range idle {
		o.API, o.Env = *api, env
		res, err := b.Idle(ctx, o)
		if err != nil {
			return fmt.Errorf("idle @every %s: %w", o.Interval, err)
		}
		rep.Idle = append(rep.Idle, res)
	}
	if *webhook > 0 {
		res, err := b.Webhook(ctx, agentbench.LatencyOptions{Samples: *webhook, Env: env})
		if err != nil {
			return err
		}
		rep.Webhook = &res
	}
	if *polling > 0 {
		res, err := b.Polling(ctx, agentbench.LatencyOptions{Samples: *polling, Interval: *interval, Env: env, Seed: *seed})
		if err != nil {
			return err
		}
		rep.Polling = &res
	}
	rep.Load()
	rep.WriteMarkdown(stdout)
	if *jsonPath != "" {
		f, err := os.Create(*jsonPath)
		if err != nil {
			return err
		}
		if err := rep.WriteJSON(f); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}
	return nil
}
