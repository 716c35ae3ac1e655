package compose

import (
	"os/exec"
	"strings"
	"testing"
)

// The deployer never imports sigstore (DESIGN: by the time a plan reaches a
// deployer its digest is verified), not even through the Compose SDK.
func TestImportFence(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err) // a fence that cannot look is no fence
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.Contains(pkg, "sigstore") {
			t.Errorf("deployer/compose depends on %s", pkg)
		}
	}
}
