// Package agent_test loads the agent examples: the deployment files must be
// valid Compose/stack files and the configuration must pass shipwatch's own
// validation.
package agent_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"

	"github.com/shipwatch/shipwatch/config"
	"github.com/shipwatch/shipwatch/verify/sigtest"
)

func TestDeploymentFilesLoad(t *testing.T) {
	for _, name := range []string{"compose.yaml", "stack.yml", "socket-proxy.yml"} {
		t.Run(name, func(t *testing.T) {
			opts, err := cli.NewProjectOptions([]string{name}, cli.WithWorkingDirectory("."), cli.WithName("example"),
				cli.WithEnv([]string{"DOCKER_GID=999"}), cli.WithResolvedPaths(true))
			if err != nil {
				t.Fatal(err)
			}
			p, err := opts.LoadProject(context.Background())
			if err != nil {
				t.Fatalf("load %s: %v", name, err)
			}
			svc, ok := p.Services["shipwatch"]
			if !ok {
				t.Fatalf("%s has no shipwatch service", name)
			}
			if svc.Labels["shipwatch.enable"] != "false" {
				t.Errorf("%s: the agent must opt itself out (shipwatch.enable: \"false\")", name)
			}
			if svc.StopGracePeriod == nil {
				t.Errorf("%s: set stop_grace_period so a rollout in flight can finish", name)
			}
		})
	}
}

func TestConfigValidates(t *testing.T) {
	dir := t.TempDir()
	data, err := os.ReadFile("shipwatch.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// Materialise the files the example names in a temporary root.
	key := sigtest.MustKey(t, "")
	for _, f := range []string{"keys/cosign.pub", "keys/scanner.pub"} {
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if _, err := key.WritePublicKey(filepath.Join(dir, filepath.Dir(f)), filepath.Base(f)); err != nil {
			t.Fatal(err)
		}
	}
	secrets := map[string]string{"shipwatch_api_token": "0123456789abcdef0123456789abcdef", "ghcr_token": "ghp_example", "shipwatch_notify_urls": "generic+https://hooks.example.com/x\n"}
	for name, v := range secrets {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	text := strings.NewReplacer("/etc/shipwatch/keys/", dir+"/keys/", "/run/secrets/", dir+"/").Replace(string(data))
	cfg, err := config.Parse([]byte(text), "shipwatch.yaml", func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("examples/agent/shipwatch.yaml: %v", err)
	}
	if cfg.API.Listen == "" || !cfg.API.Token.IsSet() || len(cfg.Verify.Policies) == 0 {
		t.Errorf("the example should enable the API with a token and verification: %+v", cfg.API)
	}
}
