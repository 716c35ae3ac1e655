package pass

import (
	"context"
	"maps"
	"testing"

	"github.com/shipwatch/shipwatch/config"
	"github.com/shipwatch/shipwatch/deployer"
)

// TestReportSchedules: a pass reports the schedules enabled targets set for
// themselves, also those its filter left out, so that the agent can register
// them without discovering again.
func TestReportSchedules(t *testing.T) {
	f := newFixture(t, "")
	f.service("api", "1", map[string]string{"shipwatch.schedule": "@every 1m"})
	f.service("web", "1", map[string]string{"shipwatch.schedule": "@every 1m"})
	f.service("batch", "1", map[string]string{"shipwatch.schedule": "0 3 * * *"})
	f.service("db", "1", nil)
	f.eng.services["off"] = svc{image: "registry.example.com/off:1", digest: dOld, labels: map[string]string{"shipwatch.schedule": "@every 5s"}}
	onlyDB := func(t deployer.Target, _ config.Effective) bool { return t.Name == "p/db" }
	rep, err := Run(context.Background(), f.deps, Options{Mode: Agent, Filter: onlyDB})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Targets) != 1 || rep.Targets[0].Target.Name != "p/db" {
		t.Fatalf("got %d targets, want p/db only", len(rep.Targets))
	}
	want := map[string]string{"@every 1m": "compose/p/api", "0 3 * * *": "compose/p/batch"}
	if !maps.Equal(rep.Schedules, want) {
		t.Errorf("got schedules %v, want %v (enabled targets only, the first target of each)", rep.Schedules, want)
	}
}
