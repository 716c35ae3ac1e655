package pass

import (
	"strings"
	"testing"

	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/verify/verdict"
)

// The first update the agent makes supersedes the digest that ran before
// it, although no mark was ever recorded for that digest (it ran before the
// agent started): a tag moved back to it is a silent downgrade and must be
// refused. Found by the fault suite (internal/faults, class downgrade): the
// agent rolled the older, validly signed digest out again.
func TestNoDowngradeToTheDigestBeforeTheFirstUpdate(t *testing.T) {
	f := newFixture(t, "")
	f.service("web", "1.4", nil) // runs dOld; no high-water mark yet
	f.v.decisions[dNew] = verdict.Allowed
	f.v.decisions[dOld] = verdict.Allowed
	f.offer("web", "1.4", dNew)
	if res := f.run(t, Options{Mode: Agent}); res["web"].Outcome != deployer.Updated {
		t.Fatalf("first update: %s (%s), want updated", res["web"].Outcome, res["web"].Reason)
	}
	f.offer("web", "1.4", dOld) // the tag moves back to the older digest
	res := f.run(t, Options{Mode: Agent})
	if res["web"].Outcome != deployer.Blocked || !strings.Contains(res["web"].Reason, "moved back") {
		t.Errorf("tag moved back to the digest that ran before the first update: %s (%s), want blocked: moved back", res["web"].Outcome, res["web"].Reason)
	}
}
