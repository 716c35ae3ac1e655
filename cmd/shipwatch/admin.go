//go:build !agentonly

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/shipwatch/shipwatch/agent"
	"github.com/shipwatch/shipwatch/state"
)

// withState runs f against the running agent (remote != nil) or, when no
// agent runs, against the state file opened here.
func (a *app) withState(ctx context.Context, f func(r *remote, st *state.Store) error) error {
	cfg, err := a.loadConfig()
	if err != nil {
		return err
	}
	if r, err := agentRemote(ctx, cfg); err == nil {
		return f(r, nil)
	}
	st, err := state.Open(cfg.State.Path, time.Second)
	if err != nil {
		return err
	}
	defer st.Close()
	return f(nil, st)
}

func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newStatusCmd(a *app) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Targets with their last outcome, pending approvals and quarantined digests",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withState(cmd.Context(), func(r *remote, st *state.Store) error {
				var s agent.Status
				if r != nil {
					if err := r.do(cmd.Context(), "GET", "/v1/targets", nil, nil, &s); err != nil {
						return err
					}
				} else {
					var err error
					if s.Approvals, err = st.Approvals(); err != nil {
						return err
					}
					if s.Quarantine, err = st.QuarantineList(); err != nil {
						return err
					}
				}
				if output == "json" {
					return a.printJSON(s)
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				if r == nil {
					fmt.Fprintln(a.stdout, "no agent is running (targets' last outcomes are kept by a running agent; see shipwatch history)")
				} else {
					fmt.Fprintf(a.stdout, "last pass: %s\n", s.LastPass.Format(time.RFC3339))
					fmt.Fprintln(tw, "TARGET\tRUNNING\tOUTCOME\tWHY")
					for _, t := range s.Targets {
						fmt.Fprintf(tw, "%s\t%s %s\t%s\t%s\n", t.ID, t.Image, short(t.Digest), t.Outcome, oneLine(t.Reason))
					}
					tw.Flush()
				}
				for _, ap := range s.Approvals {
					state := "waits for approval"
					if ap.Approved {
						state = "approved by " + ap.ApprovedBy
					}
					fmt.Fprintf(a.stdout, "approval %s: %s %s (shipwatch approve %s)\n", ap.Target, ap.Candidate, state, ap.Target)
				}
				for _, q := range s.Quarantine {
					fmt.Fprintf(a.stdout, "quarantined %s: %s since %s: %s\n", q.Target, short(q.Digest), q.Since.Format(time.RFC3339), q.Reason)
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func newHistoryCmd(a *app) *cobra.Command {
	var (
		output string
		limit  int
	)
	cmd := &cobra.Command{
		Use:   "history [target]",
		Short: "What shipwatch decided and did, newest first",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			target := ""
			if len(args) == 1 {
				target = args[0]
			}
			return a.withState(cmd.Context(), func(r *remote, st *state.Store) error {
				var hist []state.Entry
				var err error
				if r != nil {
					err = r.do(cmd.Context(), "GET", "/v1/history", url.Values{"target": {target}, "limit": {strconv.Itoa(limit)}}, nil, &hist)
				} else {
					hist, err = st.History(target, limit)
				}
				if err != nil {
					return err
				}
				if output == "json" {
					return a.printJSON(hist)
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "TIME\tTARGET\tMODE\tTO\tOUTCOME\tWHY")
				for _, e := range hist {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.Time.Format(time.RFC3339), e.Target, e.Mode, e.To, e.Outcome, oneLine(e.Reason))
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().IntVarP(&limit, "limit", "n", 50, "entries to show (0 = all)")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func newApproveCmd(a *app) *cobra.Command {
	var candidate, by string
	cmd := &cobra.Command{
		Use:   "approve <target>",
		Short: "Approve the verified update that waits for a target (approval: manual)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withState(cmd.Context(), func(r *remote, st *state.Store) error {
				var ap state.Approval
				var err error
				if r != nil {
					err = r.do(cmd.Context(), "POST", "/v1/approvals", nil, map[string]string{"target": args[0], "candidate": candidate, "by": by}, &ap)
				} else {
					ap, err = st.Approve(args[0], candidate, by)
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "approved %s for %s; the agent deploys it on its next pass\n", ap.Candidate, ap.Target)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&candidate, "candidate", "", "the exact repo:tag@digest to approve (default: whatever waits)")
	cmd.Flags().StringVar(&by, "by", "cli", "who approves (recorded in history)")
	return cmd
}

func newQuarantineCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "quarantine", Short: "List or clear digests that failed their rollout"}
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "Digests that are not retried until the registry offers another one",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withState(cmd.Context(), func(r *remote, st *state.Store) error {
				var list []state.Quarantined
				var err error
				if r != nil {
					err = r.do(cmd.Context(), "GET", "/v1/quarantine", nil, nil, &list)
				} else {
					list, err = st.QuarantineList()
				}
				if err != nil {
					return err
				}
				for _, q := range list {
					fmt.Fprintf(a.stdout, "%s %s since %s: %s\n", q.Target, q.Digest, q.Since.Format(time.RFC3339), q.Reason)
				}
				return nil
			})
		},
	}, &cobra.Command{
		Use:   "clear <target> [digest]",
		Short: "Let a quarantined digest (or every digest of a target) be tried again",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			digest := ""
			if len(args) == 2 {
				digest = args[1]
			}
			return a.withState(cmd.Context(), func(r *remote, st *state.Store) error {
				var n int
				var err error
				if r != nil {
					var out struct {
						Cleared int `json:"cleared"`
					}
					err = r.do(cmd.Context(), "DELETE", "/v1/quarantine", url.Values{"target": {args[0]}, "digest": {digest}}, nil, &out)
					n = out.Cleared
				} else {
					n, err = st.ClearQuarantine(args[0], digest)
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "cleared %d quarantined digest(s) of %s\n", n, args[0])
				return nil
			})
		},
	})
	return cmd
}
