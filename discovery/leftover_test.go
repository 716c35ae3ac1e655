package discovery

import (
	"context"
	"testing"

	"github.com/moby/moby/api/types/container"
)

// A service whose recreate was interrupted (an engine that restarted, an
// agent killed mid-converge) can have a leftover container, created but
// never started, with the new image, listed before the running one. The
// target is what runs: the running container's image and digest, not the
// leftover's, or the agent takes the update for done. Found by the fault
// suite (internal/faults, class engine-cut): the next passes said
// "up-to-date" while the old version ran.
func TestDiscoverComposePrefersTheRunningContainer(t *testing.T) {
	const oldID = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	const newID = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
	f := &fakeEngine{
		containers: []container.Summary{
			{ID: "c2", Names: []string{"/0123abcd_shop-web-1"}, Image: "registry.example.com/web:1.1.0", ImageID: newID, Labels: composeLabels("shop", "web"), State: "created"},
			{ID: "c1", Names: []string{"/shop-web-1"}, Image: "registry.example.com/web:1.0.0", ImageID: oldID, Labels: composeLabels("shop", "web"), State: "running"},
		},
		listed: map[string][]string{oldID: {"registry.example.com/web@" + digA}, newID: {"registry.example.com/web@" + digB}},
	}
	res, err := Discover(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Targets) != 1 {
		t.Fatalf("got %d targets, want 1", len(res.Targets))
	}
	tg := res.Targets[0]
	if tg.Image.String() != "registry.example.com/web:1.0.0" || tg.Digest != digA || tg.Compose.ImageID != oldID {
		t.Errorf("target runs %s @ %s (image %s), want the running container's registry.example.com/web:1.0.0 @ %s", tg.Image, tg.Digest, tg.Compose.ImageID, digA)
	}
	if tg.Replicas != 1 || len(tg.Compose.Containers) != 2 {
		t.Errorf("replicas %d, containers %v: want 1 running of 2", tg.Replicas, tg.Compose.Containers)
	}
}
