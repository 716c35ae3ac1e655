//go:build !agentonly

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"github.com/shipwatch/shipwatch/internal/testenv"
	"github.com/shipwatch/shipwatch/pass"
	"github.com/shipwatch/shipwatch/verify/sigtest"
)

// runCLI runs the shipwatch CLI in-process and returns its exit code and output.
func runCLI(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	lookup := func(k string) (string, bool) {
		if v, ok := env[k]; ok {
			return v, true
		}
		return os.LookupEnv(k)
	}
	code := run(context.Background(), args, &out, &errb, lookup)
	return code, out.String(), errb.String()
}

// TestCheckPlansMovedTagAndSemverBump is the foundation issue's end-to-end
// check: a Compose service whose tag moved and a Swarm service whose semver
// range allows a newer tag are discovered on the real engine, their digests
// resolved, the candidates verified, and the plan printed.
func TestCheckPlansMovedTagAndSemverBump(t *testing.T) {
	cli := testenv.Engine(t)
	testenv.Swarm(t, cli)
	reg := testenv.NewRegistry(t)
	testenv.RemoveImagesOf(t, cli, reg.Host)
	ctx := testenv.Context(t, 3*time.Minute)
	key := sigtest.MustKey(t, "")
	dir := t.TempDir()
	keyPath, err := key.WritePublicKey(dir, "release.pub")
	if err != nil {
		t.Fatal(err)
	}

	// Compose: web runs demo/web:1.4; then the tag is rebuilt (moved) and the
	// new digest signed. cache runs an image whose new digest is unsigned.
	oldWeb := reg.MustPush(t, "demo/web:1.4", testenv.App{Version: "web-1.4-build1"}.MustImage(t))
	reg.MustPush(t, "demo/cache:7", testenv.App{Version: "cache-7-build1"}.MustImage(t))
	proj := testenv.NewComposeProject(t, map[string]string{"compose.yaml": `
services:
  web:
    image: ` + reg.Ref("demo/web:1.4") + `
    labels: {shipwatch.enable: "true"}
  cache:
    image: ` + reg.Ref("demo/cache:7") + `
    labels: {shipwatch.enable: "true"}
  other:
    image: ` + reg.Ref("demo/cache:7") + `
`})
	proj.MustUp(t)
	newWeb := reg.MustPush(t, "demo/web:1.4", testenv.App{Version: "web-1.4-build2"}.MustImage(t))
	sigtest.MustSign(t, reg, reg.Ref("demo/web@"+newWeb), key, sigtest.Bundle)
	newCache := reg.MustPush(t, "demo/cache:7", testenv.App{Version: "cache-7-build2"}.MustImage(t))

	// Swarm: api runs 1.2.0 pinned; 1.3.0 and 2.0.0 exist; the range ^1 allows 1.3.0.
	api120 := reg.MustPush(t, "demo/api:1.2.0", testenv.App{Version: "api-1.2.0"}.MustImage(t))
	api130 := reg.MustPush(t, "demo/api:1.3.0", testenv.App{Version: "api-1.3.0"}.MustImage(t))
	reg.MustPush(t, "demo/api:2.0.0", testenv.App{Version: "api-2.0.0"}.MustImage(t))
	sigtest.MustSign(t, reg, reg.Ref("demo/api@"+api130), key, sigtest.Legacy)
	one := uint64(1)
	svcName := testenv.Name("api")
	created, err := cli.ServiceCreate(ctx, client.ServiceCreateOptions{Spec: swarm.ServiceSpec{
		Annotations:  swarm.Annotations{Name: svcName, Labels: map[string]string{testenv.LabelKey: "1", "shipwatch.enable": "true", "shipwatch.semver": "^1"}},
		TaskTemplate: swarm.TaskSpec{ContainerSpec: &swarm.ContainerSpec{Image: reg.Ref("demo/api:1.2.0@" + api120)}},
		Mode:         swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &one}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { testenv.RemoveService(t, cli, created.ID) })

	cfgPath := filepath.Join(dir, "shipwatch.yaml")
	cfg := `
verify:
  authorities:
    release: {key_file: ` + keyPath + `}
  policies:
    - name: demo
      images: ["` + reg.Host + `/demo/*"]
      signed_by: [release]
`
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	code, stdout, stderr := runCLI(t, nil, "--config", cfgPath, "check", "-o", "json")
	if code != exitAvailable {
		t.Fatalf("check exit code = %d, want %d (updates available)\nstdout:\n%s\nstderr:\n%s", code, exitAvailable, stdout, stderr)
	}
	var plan pass.ReportView
	if err := json.Unmarshal([]byte(stdout), &plan); err != nil {
		t.Fatalf("check -o json is not JSON: %v\n%s", err, stdout)
	}
	byID := map[string]pass.TargetView{}
	for _, tv := range plan.Targets {
		byID[tv.ID] = tv
	}
	web := byID["compose/"+proj.Name+"/web"]
	if web.Outcome != "available" || web.Change != "digest" || web.Digest != oldWeb || !strings.HasSuffix(web.Candidate, "@"+newWeb) || web.Verdict == nil || web.Verdict.Decision != "allowed" {
		t.Errorf("web = %+v\nwant available, digest %s → %s, allowed", web, oldWeb, newWeb)
	}
	cache := byID["compose/"+proj.Name+"/cache"]
	if cache.Outcome != "blocked" || !strings.HasSuffix(cache.Candidate, "@"+newCache) {
		t.Errorf("cache = %+v\nwant blocked (its new digest is unsigned)", cache)
	}
	api := byID["swarm/"+svcName]
	if api.Outcome != "available" || api.Change != "tag" || api.Digest != api120 || !strings.Contains(api.Candidate, ":1.3.0@"+api130) {
		t.Errorf("api = %+v\nwant available, tag 1.2.0 → 1.3.0@%s (2.0.0 is outside ^1)", api, api130)
	}
	if _, ok := byID["compose/"+proj.Name+"/other"]; ok {
		t.Errorf("a service without shipwatch.enable was planned")
	}

	// The human plan names the same targets and ends with a summary.
	code, table, _ := runCLI(t, nil, "--config", cfgPath, "check", "compose/"+proj.Name+"/*")
	if code != exitAvailable || !strings.Contains(table, "compose/"+proj.Name+"/web") || !strings.Contains(table, "blocked") || strings.Contains(table, "swarm/") {
		t.Errorf("check table (exit %d):\n%s", code, table)
	}
}
