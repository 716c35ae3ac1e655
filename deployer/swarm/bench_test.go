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
// (start-first, 2s monitor), flipping between two versions:
//
//   - bare: ServiceUpdate, then ServiceInspect every 50ms until Swarm says
//     completed — Swarm's own time, measured as tightly as polling allows;
//   - shipwatch: Deploy with the default poll interval (1s) and the events
//     stream; time added = its ns/op minus bare's;
//   - shipwatch-poll-only: the same without the events stream.
//
// api-calls/op counts every Engine API call Deploy makes (follow-calls/op:
// the ServiceInspect and TaskList calls while following). Run once, as
// recorded in docs/benchmarks/swarm.md:
//
//	go test ./deployer/swarm -run '^$' -bench SwarmUpdate -benchtime 5x
func BenchmarkSwarmUpdate(b *testing.B) {
	h := newHarness(b)
	v1 := h.push("1.0.0", testenv.App{Version: "1.0.0", Health: testenv.FastHealth})
	v2 := h.push("1.1.0", testenv.App{Version: "1.1.0", Health: testenv.FastHealth})
	svc := h.service(v1, func(s *swarm.ServiceSpec) {
		s.UpdateConfig = fastUpdate(swarm.UpdateOrderStartFirst)
		s.RollbackConfig = fastRollback()
	})
	versions := []imageref.Ref{v2, v1}
	flips := 0
	next := func() imageref.Ref { flips++; return versions[(flips-1)%2] }

	b.Run("bare", func(b *testing.B) {
		for b.Loop() {
			to := next()
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
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("bare update not completed: %+v", s.UpdateStatus)
				}
				time.Sleep(50 * time.Millisecond) // the baseline's own poll
			}
		}
	})
	for _, mode := range []struct {
		name     string
		noEvents bool
	}{{"shipwatch", false}, {"shipwatch-poll-only", true}} {
		b.Run(mode.name, func(b *testing.B) {
			eng := &countingEngine{Engine: h.cli, noEvents: mode.noEvents, calls: map[string]int{}}
			d, err := swarmdeployer.New(h.ctx, swarmdeployer.Options{Engine: eng})
			if err != nil {
				b.Fatal(err)
			}
			total, follow := 0, 0
			for b.Loop() {
				b.StopTimer()
				to, target := next(), h.target(svc.ID)
				eng.reset()
				b.StartTimer()
				res := d.Deploy(h.ctx, deployer.Plan{Target: target, To: to}, nil)
				if res.Outcome != deployer.Updated {
					logSteps(b, res)
					b.Fatalf("outcome %s: %v", res.Outcome, res.Cause)
				}
				calls := eng.reset()
				for _, n := range calls {
					total += n
				}
				follow += calls["ServiceInspect"] + calls["TaskList"]
			}
			b.ReportMetric(float64(total)/float64(b.N), "api-calls/op")
			b.ReportMetric(float64(follow)/float64(b.N), "follow-calls/op")
		})
	}
}
