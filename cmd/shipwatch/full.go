//go:build !agentonly

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/shipwatch/shipwatch/config"
	"github.com/shipwatch/shipwatch/engine"
	"github.com/shipwatch/shipwatch/helper"
	"github.com/shipwatch/shipwatch/pass"
	"github.com/shipwatch/shipwatch/pass/parts"
)

// The shipwatch binary has every command, and the hidden helper command
// that runs verification and rollouts for shipwatch-agent.
func commands(a *app) []*cobra.Command {
	return []*cobra.Command{newConfigCmd(a), newCheckCmd(a), newVerifyCmd(a), newRolloutCmd(a), newRollbackCmd(a),
		newAgentCmd(a), newStatusCmd(a), newHistoryCmd(a), newApproveCmd(a), newQuarantineCmd(a), newHelperCmd(a)}
}

// leanAgentName is the agent-only binary installed next to shipwatch.
const leanAgentName = "shipwatch-agent"

// execLeanAgent replaces this process by shipwatch-agent when it is
// installed next to this binary (as in the container image): the agent
// then holds only what an idle pass needs in memory and runs verification
// and rollouts in `shipwatch helper` processes. The process keeps its PID,
// so signals and the container's init see no difference. Without
// shipwatch-agent, or with SHIPWATCH_AGENT_IN_PROCESS=1, the agent runs in
// this process. Only the real command line execs (a.execAgent).
func (a *app) execLeanAgent() error {
	if !a.execAgent {
		return nil
	}
	if v, _ := a.lookup("SHIPWATCH_AGENT_IN_PROCESS"); v == "1" || v == "true" {
		return nil
	}
	self, err := os.Executable()
	if err != nil {
		return nil
	}
	lean := filepath.Join(filepath.Dir(self), leanAgentName)
	if st, err := os.Stat(lean); err != nil || st.IsDir() {
		return nil
	}
	env := append(os.Environ(), helperEnv+"="+self)
	err = syscall.Exec(lean, append([]string{lean}, os.Args[1:]...), env)
	return fmt.Errorf("start %s (set SHIPWATCH_AGENT_IN_PROCESS=1 to run the agent in this process): %w", lean, err)
}

// agentDeps builds every part of a pass in this process.
func (a *app) agentDeps(ctx context.Context, cfg *config.Config, log zerolog.Logger) (pass.Deps, func(), error) {
	return parts.Build(ctx, cfg, log, parts.Options{Deployers: true})
}

func newHelperCmd(a *app) *cobra.Command {
	var sum string
	var first bool
	cmd := &cobra.Command{
		Use:    "helper",
		Short:  "Run verification and rollouts for shipwatch-agent (started by it, over pipes)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.runHelper(cmd.Context(), sum, first)
		},
	}
	cmd.Flags().StringVar(&sum, "config-sha256", "", "the SHA-256 of the config file the agent loaded (\"none\": no file)")
	cmd.Flags().BoolVar(&first, "first", false, "log the configuration's warnings (the agent's start-up check)")
	return cmd
}

// runHelper serves one agent over the pipes it opened, with the verifier
// and the deployers built from the same config file the agent loaded.
func (a *app) runHelper(ctx context.Context, sum string, first bool) error {
	// The agent decides when a rollout must stop (SIGTERM gives it
	// rollout.shutdown_grace) and tells the helper; a Ctrl-C that reaches
	// the whole process group must not cut a rollout halfway.
	signal.Ignore(os.Interrupt, syscall.SIGTERM)
	ctx = context.WithoutCancel(ctx)
	reqs, resps, err := helper.Pipes()
	if err != nil {
		return err
	}
	log, err := a.logger()
	if err != nil {
		return err
	}
	log = log.With().Str("process", "helper").Logger()
	fail := func(err error) error {
		_ = helper.Hello(resps, version, err)
		return err
	}
	cfg, err := a.loadConfig()
	if err != nil {
		return fail(err)
	}
	if got := configSum(a.resolvedConfigPath()); got != sum {
		return fail(errors.New("the config file changed since the agent started (or the helper reads another one); restart the agent to apply the new config"))
	}
	cli, err := engine.Connect(ctx, cfg.Engine.Host)
	if err != nil {
		return fail(err)
	}
	defer cli.Close()
	warnings := zerolog.DebugLevel
	if first {
		warnings = zerolog.WarnLevel
	}
	v, err := parts.NewVerifier(cfg, log, warnings)
	if err != nil {
		return fail(err)
	}
	ds, closeDs, err := parts.Deployers(ctx, cfg, log, cli)
	if err != nil {
		return fail(err)
	}
	defer closeDs()
	err = helper.Serve(ctx, reqs, resps, helper.Parts{Verifier: v, Deployers: ds, Version: version, Logger: log})
	log.Debug().Func(func(e *zerolog.Event) { e.Str("peak_rss", peakRSS()) }).Msg("helper exiting")
	if errors.Is(err, helper.ErrAgentGone) {
		// Stop changing targets now: the agent's next start reconciles
		// them from their journals.
		log.Error().Err(err).Msg("helper: the agent is gone; exiting")
		os.Exit(exitHelperOrphaned)
	}
	return err
}

// peakRSS is this process's peak resident set (VmHWM), as /proc says it.
func peakRSS() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "unknown"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
