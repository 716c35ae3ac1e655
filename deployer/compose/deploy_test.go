package compose_test

import (
	"strings"
	"testing"

	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/deployer/compose"
	"github.com/shipwatch/shipwatch/internal/testenv"
)

func TestDeploySameTagNewDigest(t *testing.T) {
	t.Parallel()
	e := newEnv(t, compose.Options{})
	v1 := e.push("1.4", testenv.App{Version: "1.4.0", Health: fastHealth})
	p := e.project(map[string]string{"compose.yaml": simpleCompose(e.ref("1.4"), "")})
	before := readFile(t, p, "compose.yaml")
	oldIDs := e.ids(p)
	// ":1.4" is rebuilt: same tag, new digest.
	v2 := e.push("1.4", testenv.App{Version: "1.4.1", Health: fastHealth})

	res := e.deploy(deployer.Plan{Target: e.target(p, "web"), To: v2})

	if res.Outcome != deployer.Updated {
		t.Fatalf("outcome = %s (%v), want %s", res.Outcome, res.Cause, deployer.Updated)
	}
	if got := e.runningDigest(p, "web"); got != v2.Digest {
		t.Errorf("running digest = %s, want %s", got, v2.Digest)
	}
	if res.From != v1.Digest || res.To != v2.Digest || res.Running != v2.Digest {
		t.Errorf("result from/to/running = %s/%s/%s, want %s/%s/%s", res.From, res.To, res.Running, v1.Digest, v2.Digest, v2.Digest)
	}
	if got := e.serving(p, "web"); got != "testapp 1.4.1" {
		t.Errorf("serving %q, want %q", got, "testapp 1.4.1")
	}
	if got := readFile(t, p, "compose.yaml"); got != before {
		t.Errorf("compose.yaml changed on a same-tag update:\n%s", got)
	}
	if after := e.ids(p); equalIDs(oldIDs, after) {
		t.Errorf("container IDs unchanged %v: the service was not recreated", after)
	}
	e.upChangesNothing(p)
	if !strings.Contains(strings.Join(stepNames(res), ","), "health gate") {
		t.Errorf("steps %v have no health gate", stepNames(res))
	}
}
