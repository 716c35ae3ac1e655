package discovery

import (
	"testing"
	"time"

	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"github.com/shipwatch/shipwatch/internal/testenv"
)

// TestDiscoverRealEngine runs a Compose project and a Swarm service on the
// local engine and checks that discovery reports both with the digest they run.
func TestDiscoverRealEngine(t *testing.T) {
	cli := testenv.Engine(t)
	testenv.Swarm(t, cli)
	reg := testenv.NewRegistry(t)
	testenv.RemoveImagesOf(t, cli, reg.Host)
	digWeb := reg.MustPush(t, "demo/web:1.0.0", testenv.App{Version: "web-1.0.0"}.MustImage(t))
	digAPI := reg.MustPush(t, "demo/api:2.0.0", testenv.App{Version: "api-2.0.0"}.MustImage(t))

	p := testenv.NewComposeProject(t, map[string]string{
		"compose.yaml": "services:\n  web:\n    image: " + reg.Ref("demo/web:1.0.0") + "\n",
	})
	p.MustUp(t)

	ctx := testenv.Context(t, 2*time.Minute)
	one := uint64(1)
	name := testenv.Name("api")
	created, err := cli.ServiceCreate(ctx, client.ServiceCreateOptions{Spec: swarm.ServiceSpec{
		Annotations:  swarm.Annotations{Name: name, Labels: map[string]string{testenv.LabelKey: "1"}},
		TaskTemplate: swarm.TaskSpec{ContainerSpec: &swarm.ContainerSpec{Image: reg.Ref("demo/api:2.0.0@" + digAPI)}},
		Mode:         swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &one}},
	}})
	if err != nil {
		t.Fatalf("service create: %v", err)
	}
	t.Cleanup(func() { testenv.RemoveService(t, cli, created.ID) })

	res, err := Discover(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Swarm {
		t.Errorf("swarm services not listed on a manager")
	}
	var web, api bool
	for _, tg := range res.Targets {
		switch tg.ID {
		case "compose/" + p.Name + "/web":
			web = true
			if tg.Digest != digWeb || tg.Image.String() != reg.Ref("demo/web:1.0.0") {
				t.Errorf("compose target = %s @ %s, want %s @ %s", tg.Image, tg.Digest, reg.Ref("demo/web:1.0.0"), digWeb)
			}
			if tg.Compose.WorkingDir != p.Dir || len(tg.Compose.ConfigFiles) != 1 || tg.Compose.ConfigHash == "" {
				t.Errorf("compose info = %+v, want working dir %s and one config file", tg.Compose, p.Dir)
			}
		case "swarm/" + name:
			api = true
			if tg.Digest != digAPI || tg.Image.String() != reg.Ref("demo/api:2.0.0") || tg.Replicas != 1 {
				t.Errorf("swarm target = %s @ %s ×%d, want %s @ %s ×1", tg.Image, tg.Digest, tg.Replicas, reg.Ref("demo/api:2.0.0"), digAPI)
			}
		}
	}
	if !web || !api {
		t.Errorf("discovered compose=%v swarm=%v, want both", web, api)
	}
}
