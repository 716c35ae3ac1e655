package agent

import (
	"context"
	"errors"
	"fmt"

	"github.com/moby/moby/client"

	"github.com/shipwatch/shipwatch/api"
	"github.com/shipwatch/shipwatch/pass"
	"github.com/shipwatch/shipwatch/state"
)

var _ api.Backend = (*Agent)(nil)

// Targets is GET /v1/targets: the last outcome of every target.
func (a *Agent) Targets(context.Context) (any, error) { return a.Status() }

// History is GET /v1/history.
func (a *Agent) History(_ context.Context, target string, limit int) ([]state.Entry, error) {
	return a.store.History(target, limit)
}

// Check is POST /v1/check: a plan, nothing deployed.
func (a *Agent) Check(ctx context.Context, targets []string) (any, error) {
	defer collector.work()()
	rep, err := pass.Run(ctx, a.deps, pass.Options{Mode: pass.Check, Targets: targets})
	if err != nil {
		return nil, apiError(err)
	}
	return rep.View(), nil
}

// Rollout is POST /v1/rollouts: the manual one-shot rollout, taking this
// agent's per-target lock.
func (a *Agent) Rollout(ctx context.Context, req api.RolloutRequest) (any, error) {
	if req.Target == "" {
		return nil, fmt.Errorf("%w: target is required", api.ErrInvalid)
	}
	defer collector.work()()
	rep, err := pass.Run(ctx, a.deps, pass.Options{Mode: pass.Rollout, Targets: []string{req.Target}, To: req.To, DryRun: req.DryRun, AllowDrift: req.AllowDrift})
	if err != nil {
		return nil, apiError(err)
	}
	a.remember(rep, nil)
	return rep.View(), nil
}

// Rollback is POST /v1/rollbacks.
func (a *Agent) Rollback(ctx context.Context, target, to string) (any, error) {
	defer collector.work()()
	r, err := pass.Rollback(ctx, a.deps, target, to)
	if err != nil {
		return nil, apiError(err)
	}
	a.remember(pass.Report{Targets: []pass.TargetResult{r}}, nil)
	return r.View(), nil
}

// Approvals is GET /v1/approvals.
func (a *Agent) Approvals(context.Context) ([]state.Approval, error) { return a.store.Approvals() }

// Approve is POST /v1/approvals: the next pass deploys the approved candidate.
func (a *Agent) Approve(ctx context.Context, target, candidate, by string) (state.Approval, error) {
	ap, err := a.store.Approve(target, candidate, by)
	if err != nil {
		return ap, apiError(err)
	}
	// Deploy it now rather than on the next scheduled pass. The pass runs
	// under the agent's context, not this request's.
	select {
	case a.approved <- target:
	default: // a wake-up is already queued; the schedule catches up anyway
	}
	return ap, nil
}

// Quarantine is GET /v1/quarantine.
func (a *Agent) Quarantine(context.Context) ([]state.Quarantined, error) {
	return a.store.QuarantineList()
}

// ClearQuarantine is DELETE /v1/quarantine.
func (a *Agent) ClearQuarantine(_ context.Context, target, digest string) (int, error) {
	return a.store.ClearQuarantine(target, digest)
}

// Trigger is the webhook receivers' entry point.
func (a *Agent) Trigger(_ context.Context, h api.Hint) int { return a.trigger(h.Repository, h.Tag) }

// Ready is GET /healthz: the engine answers and the state file is sound.
func (a *Agent) Ready(ctx context.Context) error {
	if _, err := a.deps.Engine.Info(ctx, client.InfoOptions{}); err != nil {
		return fmt.Errorf("docker engine: %w", err)
	}
	return nil
}

// apiError gives errors the sentinel the API maps to an HTTP status.
func apiError(err error) error {
	switch {
	case errors.Is(err, pass.ErrNoTarget), errors.Is(err, state.ErrNoApproval):
		return fmt.Errorf("%w: %v", api.ErrNotFound, err)
	case errors.Is(err, state.ErrApprovalMismatch):
		return fmt.Errorf("%w: %v", api.ErrConflict, err)
	case errors.Is(err, pass.ErrSelection):
		return fmt.Errorf("%w: %v", api.ErrInvalid, err)
	}
	return err
}
