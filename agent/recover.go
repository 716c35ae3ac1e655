package agent

import (
	"context"

	"github.com/shipwatch/shipwatch/pass"
)

// recover reconciles rollouts left in flight by a previous process before
// the first pass runs.
func (a *Agent) recover(ctx context.Context) error {
	journals, err := a.store.Journals()
	if err != nil {
		return err
	}
	if len(journals) == 0 {
		return nil
	}
	for _, r := range pass.Recover(ctx, a.deps, journals) {
		a.remember(pass.Report{Targets: []pass.TargetResult{r}}, nil)
	}
	return nil
}
