//go:build agentonly

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/moby/moby/client"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/shipwatch/shipwatch/config"
	"github.com/shipwatch/shipwatch/helper"
	"github.com/shipwatch/shipwatch/pass"
)

// shipwatch-agent (built with -tags agentonly) has only the agent command.
// It links what an idle pass runs and starts `shipwatch helper` to verify
// candidates and to roll targets out and back.
func commands(a *app) []*cobra.Command { return []*cobra.Command{newAgentCmd(a)} }

// execLeanAgent: this is the lean agent.
func (a *app) execLeanAgent() error { return nil }

// agentDeps builds the idle path in this process and puts the verifier and
// the deployers in helper processes. A helper is started once at start-up
// to check that it works with this config (and to log the config's
// warnings), then whenever a pass needs one.
func (a *app) agentDeps(ctx context.Context, cfg *config.Config, log zerolog.Logger) (pass.Deps, func(), error) {
	bin, err := a.helperPath()
	if err != nil {
		return pass.Deps{}, nil, err
	}
	deps, closeBase, err := pass.Base(ctx, cfg, log)
	if err != nil {
		return pass.Deps{}, nil, err
	}
	kinds, err := pass.DeployerKinds(ctx, deps.Engine.(*client.Client)) // pass.Base connects with engine.Connect
	if err != nil {
		closeBase()
		return pass.Deps{}, nil, err
	}
	args := []string{"helper", "--log-level", a.logLevel, "--log-format", a.logFormat, "--config-sha256", configSum(a.resolvedConfigPath())}
	if p := a.resolvedConfigPath(); p != "" {
		args = append(args, "--config", p)
	}
	start := func(first bool) *helper.Client {
		argv := args
		if first {
			argv = append(append([]string{}, args...), "--first")
		}
		return helper.NewClient(helper.Options{
			Start: helper.Command(bin, argv, a.stderr), Logger: log, Version: version,
			Lost: func(err error) {
				log.Error().Err(err).Msg("the helper process died during a rollout; exiting so that the agent's restart reconciles the rollout from its journal")
				os.Exit(exitHelperLost)
			},
		})
	}
	probe := start(true)
	err = probe.Start(ctx)
	probe.Close(ctx)
	if err != nil {
		closeBase()
		return pass.Deps{}, nil, fmt.Errorf("helper %s: %w", bin, err)
	}
	c := start(false)
	deps.Verifier = c
	for _, k := range kinds {
		deps.Deployers[k] = c.Deployer(k)
	}
	return deps, func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c.Close(cctx)
		closeBase()
	}, nil
}

// helperPath finds the shipwatch binary that serves as the helper: the one
// that exec'd this agent, else the one installed next to it.
func (a *app) helperPath() (string, error) {
	if p, ok := a.lookup(helperEnv); ok && p != "" {
		return p, nil
	}
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find the shipwatch binary (set %s to its path): %w", helperEnv, err)
	}
	p := filepath.Join(filepath.Dir(self), "shipwatch")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("shipwatch-agent runs verification and rollouts in the shipwatch binary, which is not at %s: install both from the same release next to each other, or set %s to its path", p, helperEnv)
	}
	return p, nil
}
