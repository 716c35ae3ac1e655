package swarm

import (
	"os/exec"
	"strings"
	"testing"
)

// The deployers never see signatures: by the time a Plan arrives, its
// digest was verified (DESIGN: deployer never imports sigstore).
func TestDoesNotImportSigstore(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/shipwatch/shipwatch/deployer/swarm").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.Contains(pkg, "sigstore") || strings.HasPrefix(pkg, "github.com/shipwatch/shipwatch/verify") {
			t.Errorf("deployer/swarm depends on %s", pkg)
		}
	}
}
