package discovery_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"github.com/rs/zerolog"

	"github.com/shipwatch/shipwatch/discovery"
	"github.com/shipwatch/shipwatch/engine"
	"github.com/shipwatch/shipwatch/internal/faults"
	"github.com/shipwatch/shipwatch/internal/testenv"
)

// TestCacheFollowsTheRealEngine runs the discovery cache against the local
// engine through a proxy that can cut its connections (an engine restart,
// as the fault suite does): a stopped container is seen through the event
// stream, and a change made while the stream is down is seen once it is
// back, after which discoveries are reused again.
func TestCacheFollowsTheRealEngine(t *testing.T) {
	cli := testenv.Engine(t)
	reg := testenv.NewRegistry(t)
	testenv.RemoveImagesOf(t, cli, reg.Host)
	reg.MustPush(t, "demo/web:1.0.0", testenv.App{Version: "web-1.0.0"}.MustImage(t))
	p := testenv.NewComposeProject(t, map[string]string{
		"compose.yaml": "services:\n  web:\n    image: " + reg.Ref("demo/web:1.0.0") + "\n",
	})
	p.MustUp(t)
	id := "compose/" + p.Name + "/web"

	dir, err := os.MkdirTemp("", "swc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	proxy, err := faults.NewEngineProxy(dir, faults.EngineSocket())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	ctx := testenv.Context(t, 2*time.Minute)
	pcli, err := engine.Connect(ctx, proxy.Host()) // as the agent connects
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pcli.Close() })

	fctx, stop := context.WithCancel(ctx)
	c := discovery.NewCache(pcli, pcli, discovery.CacheOptions{Logger: zerolog.Nop()})
	done := make(chan struct{})
	go func() { defer close(done); c.Follow(fctx) }()
	t.Cleanup(func() { stop(); <-done })

	// until wants a Discover whose web target has running replicas, reused
	// or not as asked.
	until := func(what string, running int, reused bool) {
		t.Helper()
		testenv.Eventually(t, 30*time.Second, 20*time.Millisecond, func() (bool, string) {
			res, cached, err := c.Discover(ctx)
			if err != nil {
				return false, err.Error()
			}
			for _, tg := range res.Targets {
				if tg.ID == id {
					return tg.Replicas == running && cached == reused, what
				}
			}
			return false, what + ": no target " + id
		})
	}
	until("a discovery of the running service is never reused", 1, true)

	var container string
	if res, err := c.Refresh(ctx); err == nil {
		for _, tg := range res.Targets {
			if tg.ID == id {
				container = tg.Compose.Containers[0]
			}
		}
	}
	if container == "" {
		t.Fatalf("no container of %s found", id)
	}
	if _, err := cli.ContainerStop(ctx, container, client.ContainerStopOptions{}); err != nil {
		t.Fatal(err)
	}
	until("the stopped container is not seen", 0, false)
	until("the discovery of the stopped service is never reused", 0, true)

	proxy.Cut(2 * time.Second) // the engine "restarts"; it changes meanwhile
	if _, err := cli.ContainerStart(ctx, container, client.ContainerStartOptions{}); err != nil {
		t.Fatal(err)
	}
	until("the container started while the stream was down is not seen", 1, false)
	until("discoveries are not reused again once the stream is back", 1, true)
}
