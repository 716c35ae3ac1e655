//go:build !agentonly

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/pass"
	"github.com/shipwatch/shipwatch/state"
)

func newRolloutCmd(a *app) *cobra.Command {
	var (
		to, output    string
		dryRun, drift bool
	)
	cmd := &cobra.Command{
		Use:   "rollout <target>",
		Short: "Roll one target out to its newest allowed, verified version (or --to a tag or digest)",
		Long: `rollout runs exactly the agent's path for one target: find the candidate, verify it,
deploy it with a health gate, roll back if it is not healthy. With --dry-run it stops
before deploying and prints the plan. The target is "project/service" (Compose) or the
Swarm service name, as shown by shipwatch check.

When an agent is configured (api.url or api.listen) and running, the rollout is done by
the agent, under its per-target lock; otherwise it runs here.

Exit codes: 0 updated (or already up to date, or dry run), 4 blocked by verification,
3 failed, 6 rolled back after a failed health gate, 1 the rollout could not start.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "text" && output != "json" {
				return fmt.Errorf("--output %q: use text or json", output)
			}
			opts := pass.Options{Mode: pass.Rollout, Targets: args, To: to, DryRun: dryRun, AllowDrift: drift}
			view, err := a.runRemoteOrLocal(cmd.Context(), "/v1/rollouts", map[string]any{"target": args[0], "to": to, "dry_run": dryRun, "allow_drift": drift},
				func(ctx context.Context, env *environment) (pass.ReportView, error) {
					rep, err := pass.Run(ctx, env.deps, opts)
					return rep.View(), err
				})
			if err != nil {
				return err
			}
			return a.finishRollout(view, output)
		},
	}
	f := cmd.Flags()
	f.StringVar(&to, "to", "", "deploy this tag or sha256 digest instead of the newest allowed (may be older: an explicit downgrade)")
	f.BoolVar(&dryRun, "dry-run", false, "print the plan, change nothing")
	f.BoolVar(&drift, "allow-drift", false, "update a Compose service even when its running containers differ from the compose files on disk")
	f.StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func newRollbackCmd(a *app) *cobra.Command {
	var to, output string
	cmd := &cobra.Command{
		Use:   "rollback <target>",
		Short: "Restore the version that ran before the last update (or --to a digest)",
		Long: `rollback restores the previous version of one target: the previous image protected by
shipwatch (Compose), the previous spec (Swarm), or — when the platform kept none — the
previously deployed digest recorded in shipwatch's history. The restored version goes
through the health gate like any rollout.

Exit codes: 0 restored (or already running it), 3 failed, 1 the rollback could not start.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			view, err := a.runRemoteOrLocal(cmd.Context(), "/v1/rollbacks", map[string]any{"target": args[0], "to": to},
				func(ctx context.Context, env *environment) (pass.ReportView, error) {
					r, err := pass.Rollback(ctx, env.deps, args[0], to)
					if err != nil {
						return pass.ReportView{}, err
					}
					return pass.ReportView{Mode: "rollback", Started: time.Now(), Targets: []pass.TargetView{r.View()}}, nil
				})
			if err != nil {
				return err
			}
			return a.finishRollout(view, output)
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "restore this sha256 digest")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

// runRemoteOrLocal sends the request to the running agent when there is
// one, and otherwise runs local with this process holding the state file.
func (a *app) runRemoteOrLocal(ctx context.Context, path string, body map[string]any, local func(context.Context, *environment) (pass.ReportView, error)) (pass.ReportView, error) {
	cfg, err := a.loadConfig()
	if err != nil {
		return pass.ReportView{}, err
	}
	if r, err := agentRemote(ctx, cfg); err == nil {
		fmt.Fprintf(a.stderr, "asking the running agent at %s\n", r.base)
		var v any
		if path == "/v1/rollbacks" {
			var tv pass.TargetView
			if err := r.do(ctx, "POST", path, nil, body, &tv); err != nil {
				return pass.ReportView{}, err
			}
			return pass.ReportView{Mode: "rollback", Started: time.Now(), Targets: []pass.TargetView{tv}}, nil
		}
		var rv pass.ReportView
		v = &rv
		if err := r.do(ctx, "POST", path, url.Values{}, body, v); err != nil {
			return pass.ReportView{}, err
		}
		return rv, nil
	}
	env, err := a.environment(ctx, true)
	if err != nil {
		return pass.ReportView{}, err
	}
	defer env.Close()
	if err := env.openState(cfg.State.Path); err != nil {
		return pass.ReportView{}, err
	}
	env.deps.Progress = func(t deployer.Target, s deployer.Step) { printStep(a.stderr, t, s) }
	return local(ctx, env)
}

func printStep(w io.Writer, t deployer.Target, s deployer.Step) {
	mark := "ok "
	if s.Err != nil {
		mark = "ERR"
	}
	line := fmt.Sprintf("  %s %-12s %8s  %s", mark, s.Name, s.Took.Round(time.Millisecond), s.Detail)
	if s.Err != nil {
		line += " — " + s.Err.Error()
	}
	fmt.Fprintf(w, "[%s]%s\n", t.Name, strings.TrimRight(line, " "))
}

// finishRollout prints the outcome and maps it to the exit code.
func (a *app) finishRollout(view pass.ReportView, output string) error {
	if output == "json" {
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(view); err != nil {
			return err
		}
	} else {
		for _, t := range view.Targets {
			fmt.Fprintf(a.stdout, "%s: %s — %s\n", t.ID, t.Outcome, t.Reason)
			if t.Candidate != "" && t.Outcome == string(deployer.Available) {
				fmt.Fprintf(a.stdout, "  would deploy %s (from %s)\n", t.Candidate, short(t.Digest))
			}
		}
	}
	code := exitOK
	for _, t := range view.Targets {
		switch deployer.Outcome(t.Outcome) {
		case deployer.Blocked:
			code = max(code, exitBlocked)
		case deployer.RolledBack:
			if view.Mode != "rollback" {
				code = max(code, exitRollback)
			}
		case deployer.Failed:
			code = max(code, exitFailed)
		}
	}
	if code != exitOK {
		return withCode(code, nil)
	}
	return nil
}

// openState opens the state file for a command that works without an agent.
func (e *environment) openState(path string) error {
	st, err := state.Open(path, time.Second)
	if errors.Is(err, state.ErrLocked) {
		return fmt.Errorf("%w\nan agent is running on this state file: set api.listen (and api.token) in the config so that the CLI asks it", err)
	}
	if err != nil {
		return err
	}
	e.deps.Store = st
	e.deps.Locks = &pass.Locks{}
	prev := e.close
	e.close = func() { _ = st.Close(); prev() }
	return nil
}
