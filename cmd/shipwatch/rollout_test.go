//go:build !agentonly

package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shipwatch/shipwatch/internal/testenv"
	"github.com/shipwatch/shipwatch/verify/sigtest"
)

// TestRolloutAndRollbackByHand drives a Compose service through the CLI the
// way an operator would: a dry run, a rollout to a newer tag, a rollout of a
// crashing version (rolled back, exit 6, quarantined), and a rollback.
func TestRolloutAndRollbackByHand(t *testing.T) {
	cli := testenv.Engine(t)
	reg := testenv.NewRegistry(t)
	testenv.RemoveImagesOf(t, cli, reg.Host)
	key := sigtest.MustKey(t, "")
	dir := t.TempDir()
	if _, err := key.WritePublicKey(dir, "k.pub"); err != nil {
		t.Fatal(err)
	}
	push := func(version string, app testenv.App) string {
		d := reg.MustPush(t, "demo/web:"+version, app.MustImage(t))
		sigtest.MustSign(t, reg, reg.Ref("demo/web@"+d), key, sigtest.Bundle)
		return d
	}
	d100 := push("1.0.0", testenv.App{Version: "1.0.0", Health: testenv.FastHealth})
	d110 := push("1.1.0", testenv.App{Version: "1.1.0", Health: testenv.FastHealth})
	d120 := push("1.2.0", testenv.App{Version: "1.2.0", Health: testenv.FastHealth, Mode: "crash", CrashAfter: time.Second})
	proj := testenv.NewComposeProject(t, map[string]string{"compose.yaml": "# web\nservices:\n  web:\n    image: " + reg.Ref("demo/web:1.0.0") + "  # pinned by shipwatch\n"})
	proj.MustUp(t)
	cfg := writeFile(t, dir, "c.yaml", `state: {path: `+filepath.Join(dir, "state.db")+`}
rollout: {health_timeout: 20s}
verify:
  authorities: {release: {key_file: k.pub}}
  policies: [{name: demo, images: ["`+reg.Host+`/demo/*"], signed_by: [release]}]
`)
	target := proj.Name + "/web"

	code, out, errOut := runCLI(t, nil, "--config", cfg, "rollout", target, "--to", "1.1.0", "--dry-run")
	if code != exitOK || !strings.Contains(out, "would deploy") || !strings.Contains(out, d110) {
		t.Fatalf("dry run: exit %d\n%s\n%s", code, out, errOut)
	}
	code, out, errOut = runCLI(t, nil, "--config", cfg, "rollout", target, "--to", "1.1.0")
	if code != exitOK || !strings.Contains(out, ": updated") || !strings.Contains(errOut, "health gate") {
		t.Fatalf("rollout 1.1.0: exit %d\n%s\n%s", code, out, errOut)
	}
	code, out, errOut = runCLI(t, nil, "--config", cfg, "rollout", target, "--to", "1.2.0", "-o", "json")
	if code != exitRollback || !strings.Contains(out, `"outcome": "rolled-back"`) || !strings.Contains(out, `"running": "`+d110) {
		t.Fatalf("rollout of the crashing 1.2.0: exit %d, want %d\n%s\n%s", code, exitRollback, out, errOut)
	}
	if code, out, _ = runCLI(t, nil, "--config", cfg, "quarantine", "list"); !strings.Contains(out, d120) {
		t.Errorf("the crashing digest is not quarantined: %s", out)
	}
	code, out, errOut = runCLI(t, nil, "--config", cfg, "rollback", target)
	if code != exitOK || !strings.Contains(out, "rolled-back") || !strings.Contains(out, d100[:19]) {
		t.Fatalf("rollback: exit %d\n%s\n%s", code, out, errOut)
	}
	if code, out, _ = runCLI(t, nil, "--config", cfg, "history", target); code != exitOK || strings.Count(out, "\n") < 4 {
		t.Errorf("history after three operations:\n%s", out)
	}
}
