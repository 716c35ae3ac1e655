//go:build !agentonly

package main

import (
	"context"

	"github.com/shipwatch/shipwatch/pass"
	"github.com/shipwatch/shipwatch/pass/parts"
)

// environment is what a command that runs passes needs, built once.
type environment struct {
	deps  pass.Deps
	close func()
}

func (e *environment) Close() {
	if e.close != nil {
		e.close()
	}
}

// environment loads the config and builds the pass's parts; deployers are
// built only by commands that deploy.
func (a *app) environment(ctx context.Context, withDeployers ...bool) (*environment, error) {
	cfg, err := a.loadConfig()
	if err != nil {
		return nil, err
	}
	log, err := a.logger()
	if err != nil {
		return nil, err
	}
	deps, closeFn, err := parts.Build(ctx, cfg, log, parts.Options{Deployers: len(withDeployers) > 0 && withDeployers[0]})
	if err != nil {
		return nil, err
	}
	return &environment{deps: deps, close: closeFn}, nil
}
