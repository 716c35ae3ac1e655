//go:build !agentonly

package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/shipwatch/shipwatch/config"
)

func newConfigCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Validate or print the configuration",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "validate",
		Short: "Check the config file; print every problem with its line and field",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := a.loadConfig(); err != nil {
				return err
			}
			path := a.resolvedConfigPath()
			if path == "" {
				path = "(no config file: defaults)"
			}
			fmt.Fprintf(a.stdout, "%s: valid\n", path)
			return nil
		},
	}, &cobra.Command{
		Use:   "print",
		Short: "Print the effective configuration (defaults applied, secrets redacted)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			return config.Print(a.stdout, cfg)
		},
	})
	return cmd
}
