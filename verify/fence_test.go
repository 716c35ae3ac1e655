package verify_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportFence keeps Docker out of verify (design: verify never imports
// Docker). The only Docker code allowed is the config.json and
// credential-helper reader that go-containerregistry's authn uses for
// registry credentials; the Engine client and API must never come in.
func TestImportFence(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/shipwatch/shipwatch/verify/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	allowed := []string{
		"github.com/docker/cli/cli/config",
		"github.com/docker/docker-credential-helpers/",
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps: got %d packages, want the dependency closure", len(deps))
	}
	for _, dep := range deps {
		if !strings.HasPrefix(dep, "github.com/moby/") && !strings.HasPrefix(dep, "github.com/docker/") {
			continue
		}
		ok := false
		for _, a := range allowed {
			if strings.HasPrefix(dep, a) {
				ok = true
			}
		}
		if !ok {
			t.Errorf("verify depends on %s: verify must never import Docker", dep)
		}
	}
}
