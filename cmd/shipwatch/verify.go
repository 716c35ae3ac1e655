//go:build !agentonly

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/shipwatch/shipwatch/imageref"
	"github.com/shipwatch/shipwatch/pass"
	"github.com/shipwatch/shipwatch/pass/parts"
	"github.com/shipwatch/shipwatch/verify"
	"github.com/shipwatch/shipwatch/watcher"
)

func newVerifyCmd(a *app) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "verify IMAGE[@DIGEST]",
		Short: "Decide whether an image may run here, with the reason for every rule",
		Long: `verify applies the configured verification policy to one image: its signatures,
attestations, vulnerability scan and provenance. A tag is resolved to its digest first
(one HEAD request), and exactly that digest is verified.

Exit codes: 0 allowed, 4 blocked (decided no), 5 undecided (could not decide, for
example a registry or trust root was unreachable: try again later), 1 bad input.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "text" && output != "json" {
				return fmt.Errorf("--output %q: use text or json", output)
			}
			ref, err := imageref.Parse(args[0])
			if err != nil {
				return err
			}
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			log, err := a.logger()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if ref.Digest == "" {
				w, err := watcher.New(pass.WatcherOptions(cfg, log))
				if err != nil {
					return err
				}
				d, err := w.Resolve(ctx, ref)
				if err != nil {
					return withCode(exitUndecided, fmt.Errorf("resolve %s: %w", ref.Familiar(), err))
				}
				ref = ref.WithDigest(d)
			}
			vopts, err := parts.VerifyOptions(cfg, log)
			if err != nil {
				return err
			}
			v, err := verify.New(vopts)
			if err != nil {
				return err
			}
			for _, w := range v.Warnings() {
				log.Warn().Str("warning", w).Msg("verification is weakened by configuration")
			}
			verdict := v.Verify(ctx, ref)
			if output == "json" {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(verdict); err != nil {
					return err
				}
			} else {
				printVerdict(a.stdout, verdict)
			}
			switch verdict.Decision {
			case verify.Allowed:
				return nil
			case verify.Blocked:
				return withCode(exitBlocked, nil)
			}
			return withCode(exitUndecided, nil)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func printVerdict(w io.Writer, v verify.Verdict) {
	fmt.Fprintf(w, "%s\n  decision: %s", v.Image, v.Decision)
	if v.Policy != "" {
		fmt.Fprintf(w, " (policy %s, %s)", v.Policy, v.Mode)
	}
	fmt.Fprintln(w)
	if v.Signer != "" {
		fmt.Fprintf(w, "  signer:   %s\n", v.Signer)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, r := range v.Reasons {
		mark := "ok"
		if !r.OK {
			mark = "NO"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", mark, r.Rule, r.Message)
	}
	tw.Flush()
}
