package swarm_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"github.com/shipwatch/shipwatch/deployer"
	swarmdeployer "github.com/shipwatch/shipwatch/deployer/swarm"
	"github.com/shipwatch/shipwatch/imageref"
	"github.com/shipwatch/shipwatch/internal/testenv"
)

// countingEngine counts the Engine API calls shipwatch makes.
type countingEngine struct {
	swarmdeployer.Engine
	noEvents bool
	mu       sync.Mutex
	calls    map[string]int
}

func (c *countingEngine) add(name string) {
	c.mu.Lock()
	c.calls[name]++
	c.mu.Unlock()
}

func (c *countingEngine) reset() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.calls
	c.calls = map[string]int{}
	return out
}

func (c *countingEngine) ServiceInspect(ctx context.Context, id string, o client.ServiceInspectOptions) (client.ServiceInspectResult, error) {
	c.add("ServiceInspect")
	return c.Engine.ServiceInspect(ctx, id, o)
}

func (c *countingEngine) ServiceUpdate(ctx context.Context, id string, o client.ServiceUpdateOptions) (client.ServiceUpdateResult, error) {
	c.add("ServiceUpdate")
	return c.Engine.ServiceUpdate(ctx, id, o)
}

func (c *countingEngine) TaskList(ctx context.Context, o client.TaskListOptions) (client.TaskListResult, error) {
	c.add("TaskList")
	return c.Engine.TaskList(ctx, o)
}

func (c *countingEngine) DistributionInspect(ctx context.Context, ref string, o client.DistributionInspectOptions) (client.DistributionInspectResult, error) {
	c.add("DistributionInspect")
	return c.Engine.DistributionInspect(ctx, ref, o)
}

func (c *countingEngine) Events(ctx context.Context, o client.EventsListOptions) client.EventsResult {
	c.add("Events")
	if c.noEvents {
		return client.EventsResult{}
	}
	return c.Engine.Events(ctx, o)
}

func (c *countingEngine) TaskLogs(ctx context.Context, id string, o client.TaskLogsOptions) (client.TaskLogsResult, error) {
	c.add("TaskLogs")
	return c.Engine.TaskLogs(ctx, id, o)
}

func (c *countingEngine) ContainerInspect(ctx context.Context, id string, o client.ContainerInspectOptions) (client.ContainerInspectResult, error) {
	c.add("ContainerInspect")
	return c.Engine.ContainerInspect(ctx, id, o)
}

// BenchmarkSwarmUpdate measures one healthy update of a one-replica service
// (start-first, 2s monitor) three ways per iteration, interleaved so that
// the machine's load weighs on all three alike:
//
//   - bare: ServiceUpdate, then ServiceInspect every 50ms until Swarm says
//     completed — Swarm's own time, measured as tightly as polling allows;
//   - shipwatch: Deploy with the default poll interval (1s) and the events
//     stream;
//   - poll-only: the same Deploy without the events stream.
//
// Metrics (means per update): bare-ms, shipwatch-ms, poll-only-ms, the
// overheads (shipwatch-ms − bare-ms, poll-only-ms − bare-ms), the Engine API
// calls of a Deploy (api-calls, and follow-calls: the ServiceInspect and
// TaskList calls while following), and the duration of Deploy's steps
// before the follow (own-steps-ms: check, registry, update). Run once, as
// recorded in docs/benchmarks/swarm.md:
//
//	go test ./deployer/swarm -run '^$' -bench SwarmUpdate -benchtime 8x
func BenchmarkSwarmUpdate(b *testing.B) {
	h := newHarness(b)
	v1 := h.push("1.0.0", testenv.App{Version: "1.0.0", Health: testenv.FastHealth})
	v2 := h.push("1.1.0", testenv.App{Version: "1.1.0", Health: testenv.FastHealth})
	svc := h.service(v1, func(s *swarm.ServiceSpec) {
		s.UpdateConfig = fastUpdate(swarm.UpdateOrderStartFirst)
		s.RollbackConfig = fastRollback()
	})
	flips := 0
	next := func() imageref.Ref {
		flips++
		if flips%2 == 1 {
			return v2
		}
		return v1
	}
	bare := func() time.Duration {
		to := next()
		start := time.Now()
		cur := h.inspect(svc.ID)
		spec := cur.Spec
		spec.TaskTemplate.ContainerSpec.Image = to.Familiar()
		if _, err := h.cli.ServiceUpdate(h.ctx, svc.ID, client.ServiceUpdateOptions{Version: cur.Version, Spec: spec}); err != nil {
			b.Fatal(err)
		}
		deadline := time.Now().Add(time.Minute)
		for {
			s := h.inspect(svc.ID)
			if s.UpdateStatus != nil && s.UpdateStatus.State == swarm.UpdateStateCompleted && s.Spec.TaskTemplate.ContainerSpec.Image == to.Familiar() {
				return time.Since(start)
			}
			if time.Now().After(deadline) {
				b.Fatalf("bare update not completed: %+v", s.UpdateStatus)
			}
			time.Sleep(50 * time.Millisecond) // the baseline's own poll
		}
	}
	type variant struct {
		eng *countingEngine
		d   *swarmdeployer.Deployer
	}
	newVariant := func(noEvents bool) variant {
		eng := &countingEngine{Engine: h.cli, noEvents: noEvents, calls: map[string]int{}}
		d, err := swarmdeployer.New(h.ctx, swarmdeployer.Options{Engine: eng})
		if err != nil {
			b.Fatal(err)
		}
		return variant{eng, d}
	}
	var (
		events, pollOnly                = newVariant(false), newVariant(true)
		tBare, tEvents, tPoll, ownSteps time.Duration
		calls, followCalls              int
	)
	deploy := func(v variant, count bool) time.Duration {
		to, target := next(), h.target(svc.ID)
		v.eng.reset()
		start := time.Now()
		res := v.d.Deploy(h.ctx, deployer.Plan{Target: target, To: to}, nil)
		took := time.Since(start)
		if res.Outcome != deployer.Updated {
			logSteps(b, res)
			b.Fatalf("outcome %s: %v", res.Outcome, res.Cause)
		}
		c := v.eng.reset()
		if count {
			for _, n := range c {
				calls += n
			}
			followCalls += c["ServiceInspect"] + c["TaskList"]
			for _, st := range res.Steps {
				switch st.Name {
				case "check", "registry", "update":
					ownSteps += st.Took
				}
			}
		}
		return took
	}
	for b.Loop() {
		tBare += bare()
		tEvents += deploy(events, true)
		tPoll += deploy(pollOnly, false)
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
	b.ReportMetric(ms(tBare), "bare-ms/op")
	b.ReportMetric(ms(tEvents), "shipwatch-ms/op")
	b.ReportMetric(ms(tPoll), "poll-only-ms/op")
	b.ReportMetric(ms(tEvents-tBare), "overhead-ms/op")
	b.ReportMetric(ms(tPoll-tBare), "poll-only-overhead-ms/op")
	b.ReportMetric(ms(ownSteps), "own-steps-ms/op")
	b.ReportMetric(float64(calls)/float64(b.N), "api-calls/op")
	b.ReportMetric(float64(followCalls)/float64(b.N), "follow-calls/op")
}
