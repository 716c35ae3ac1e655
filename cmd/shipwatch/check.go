//go:build !agentonly

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/pass"
)

func newCheckCmd(a *app) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "check [target...]",
		Short: "Print the plan: what would be updated, from which digest to which, and why",
		Long: `check discovers the Compose and Swarm services on the engine, asks their registries
for the newest version each policy allows, verifies every candidate, and prints the
plan. Nothing is deployed.

Exit codes: 0 nothing to do, 2 at least one verified update is available,
3 at least one target could not be checked (registry error, undecided verification),
1 the check itself could not run.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "table" && output != "json" {
				return fmt.Errorf("--output %q: use table or json", output)
			}
			env, err := a.environment(cmd.Context())
			if err != nil {
				return err
			}
			defer env.Close()
			rep, err := pass.Run(cmd.Context(), env.deps, pass.Options{Mode: pass.Check, Targets: args})
			if err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep.View()); err != nil {
					return err
				}
			} else {
				printPlan(a.stdout, rep)
			}
			switch {
			case rep.Count(deployer.Failed) > 0:
				return withCode(exitFailed, nil)
			case rep.Count(deployer.Available) > 0:
				return withCode(exitAvailable, nil)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

// printPlan writes the human plan: one line per target, then what was left alone.
func printPlan(w io.Writer, rep pass.Report) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if len(rep.Targets) > 0 {
		fmt.Fprintln(tw, "TARGET\tRUNNING\tCANDIDATE\tVERDICT\tOUTCOME\tWHY")
	}
	for _, t := range rep.Targets {
		v := t.View()
		running := v.Image
		if v.Digest != "" {
			running += " " + short(v.Digest)
		}
		candidate, verdict := "-", "-"
		if t.Candidate.Digest != "" {
			candidate = t.Candidate.Tagged().Familiar() + " " + short(t.Candidate.Digest)
		}
		if t.Verdict != nil {
			verdict = string(t.Verdict.Decision)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", v.ID, running, candidate, verdict, v.Outcome, oneLine(v.Reason))
	}
	tw.Flush()
	if len(rep.Targets) == 0 {
		fmt.Fprintln(w, "no targets are enabled: label containers or services shipwatch.enable=true, or list them under targets: in the config")
	}
	for _, ig := range rep.Ignored {
		fmt.Fprintf(w, "ignored %s: %s\n", ig.ID, ig.Reason)
	}
	for _, n := range rep.Notes {
		fmt.Fprintln(w, "note:", n)
	}
	fmt.Fprintf(w, "%d targets: %d up-to-date, %d available, %d blocked, %d failed (%s)\n",
		len(rep.Targets), rep.Count(deployer.UpToDate), rep.Count(deployer.Available), rep.Count(deployer.Blocked), rep.Count(deployer.Failed), rep.Took.Round(1e6))
}

// short abbreviates a digest to "sha256:0123456789ab".
func short(d string) string {
	if i := strings.IndexByte(d, ':'); i >= 0 && len(d) > i+13 {
		return d[:i+13]
	}
	return d
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
