package agentbench

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"

	"github.com/shipwatch/shipwatch/config"
	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/metrics"
	"github.com/shipwatch/shipwatch/pass"
	"github.com/shipwatch/shipwatch/pass/parts"
	"github.com/shipwatch/shipwatch/state"
)

// BenchmarkIdlePass is the test-only build behind the figures of
// docs/benchmarks/agent.md: one idle agent pass over the 1000-service estate
// (discover, watch, nothing to verify or deploy), in-process so that the Go
// profilers can see it. The fake engine and the
// registry run in the same process; read profiles with a focus on the
// agent's packages:
//
//	go test -run '^$' -bench IdlePass -benchtime 5x -cpuprofile /tmp/cpu.out -memprofile /tmp/mem.out ./internal/agentbench
//	go tool pprof -top -focus 'shipwatch/(pass|discovery|watcher|agent)' /tmp/cpu.out
func BenchmarkIdlePass(b *testing.B) {
	ctx := context.Background()
	fx, err := NewFixture(ctx, FixtureOptions{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer fx.Close()
	eng := NewEngine(fx.Services)
	sock := filepath.Join(fx.Dir, "engine.sock")
	if err := eng.Serve(sock); err != nil {
		b.Fatal(err)
	}
	defer eng.Close()
	// Loaded once per process by crypto/x509, on first use by the agent's code.
	b.Setenv("SSL_CERT_FILE", fx.CAFile)
	cfgPath := filepath.Join(fx.Dir, "agent.yaml")
	if err := fx.WriteConfig(cfgPath, AgentConfig{Schedule: "@every 5m", StatePath: filepath.Join(fx.Dir, "state.db"), EngineHost: "unix://" + sock}); err != nil {
		b.Fatal(err)
	}
	cfg, err := config.Load(cfgPath, func(string) (string, bool) { return "", false })
	if err != nil {
		b.Fatal(err)
	}
	store, err := state.Open(cfg.State.Path, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	deps, closeDeps, err := parts.Build(ctx, cfg, zerolog.Nop(), parts.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer closeDeps()
	deps.Store, deps.Metrics, deps.Locks = store, metrics.New(), &pass.Locks{}
	onePass := func() {
		rep, err := pass.Run(ctx, deps, pass.Options{Mode: pass.Agent, Filter: func(deployer.Target, config.Effective) bool { return true }})
		if err != nil {
			b.Fatal(err)
		}
		if n := rep.Count(deployer.UpToDate); n != len(fx.Services) {
			b.Fatalf("%d of %d targets up to date, want all: the estate must be idle", n, len(fx.Services))
		}
	}
	onePass() // the cold pass: tokens, connections
	eng.ResetCalls()
	fx.Registry.Reset()
	b.ResetTimer()
	for range b.N {
		onePass()
	}
	b.StopTimer()
	calls := 0
	for _, n := range eng.Calls() {
		calls += n
	}
	b.ReportMetric(float64(calls)/float64(b.N), "engine-calls/pass")
	b.ReportMetric(float64(len(fx.Registry.Requests()))/float64(b.N), "registry-requests/pass")
}
