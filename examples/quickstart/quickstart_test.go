package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/shipwatch/shipwatch/internal/testenv"
)

// TestQuickstart runs the README's first command end to end against the real
// engine: the agent must roll to v1.1.0, refuse the unsigned v1.2.0 and roll
// the crashing v1.3.0 back, and everything must be cleaned up afterwards.
func TestQuickstart(t *testing.T) {
	cli := testenv.Engine(t)
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	res, err := run(ctx, Options{Out: &out, Timeout: 2 * time.Minute})
	if err != nil {
		t.Fatalf("quickstart: %v\n%s", err, out.String())
	}
	want := map[string]string{"updated": res.Digests["1.1.0"], "blocked": res.Digests["1.2.0"], "rolled-back": res.Digests["1.3.0"]}
	for outcome, digest := range want {
		found := false
		for _, e := range res.History {
			if e.Outcome == outcome && strings.HasSuffix(e.To, "@"+digest) {
				found = true
			}
		}
		if !found {
			t.Errorf("history has no %s entry for %s:\n%+v", outcome, digest, res.History)
		}
	}
	if res.Running != res.Digests["1.1.0"] {
		t.Errorf("running digest = %s, want v1.1.0's %s", res.Running, res.Digests["1.1.0"])
	}
	if !strings.Contains(res.Status, "quarantined") || !strings.Contains(res.Status, short(res.Digests["1.3.0"])) {
		t.Errorf("shipwatch status does not show v1.3.0 quarantined:\n%s", res.Status)
	}
	if !strings.Contains(res.AgentLog, "agent stopped") {
		t.Errorf("the agent did not stop gracefully; its log:\n%s", res.AgentLog)
	}
	if !res.CleanedUp {
		t.Fatal("cleanup did not run")
	}
	list, err := cli.ContainerList(context.Background(), client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("label", "com.docker.compose.project="+projectName)})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 0 {
		t.Errorf("%d containers of the quickstart project left behind", len(list.Items))
	}
	imgs, err := cli.ImageList(context.Background(), client.ImageListOptions{All: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range imgs.Items {
		for _, ref := range append(img.RepoTags, img.RepoDigests...) {
			if strings.HasPrefix(ref, res.registryHost+"/") {
				t.Errorf("image %s left behind", ref)
			}
		}
	}
}
