package pass

import (
	"context"
	"fmt"
	"runtime"

	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"
	"github.com/rs/zerolog"

	"github.com/shipwatch/shipwatch/config"
	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/engine"
	"github.com/shipwatch/shipwatch/watcher"
)

// Base makes the parts of a pass that every way of running one shares, once,
// at start-up: the engine connection and the registry watcher. The caller
// adds the Verifier and the Deployers (package parts builds them in this
// process; package helper puts them in a helper process). close releases
// what Base opened.
func Base(ctx context.Context, cfg *config.Config, log zerolog.Logger) (Deps, func(), error) {
	cli, err := engine.Connect(ctx, cfg.Engine.Host)
	if err != nil {
		return Deps{}, nil, err
	}
	closeFn := func() { _ = cli.Close() }
	w, err := watcher.New(WatcherOptions(cfg, log))
	if err != nil {
		closeFn()
		return Deps{}, nil, fmt.Errorf("registry watcher: %w", err)
	}
	return Deps{
		Config:    cfg,
		Engine:    cli,
		Watcher:   w,
		Policies:  NewPolicies(),
		Logger:    log,
		Deployers: map[deployer.Kind]deployer.Deployer{},
	}, closeFn, nil
}

// DeployerKinds says which deployers this engine needs: Compose always,
// Swarm when the engine is a Swarm manager (on a plain engine discovery
// lists no Swarm targets to deploy to).
func DeployerKinds(ctx context.Context, cli *client.Client) ([]deployer.Kind, error) {
	info, err := cli.Info(ctx, client.InfoOptions{})
	if err != nil {
		return nil, fmt.Errorf("engine info: %w", err)
	}
	kinds := []deployer.Kind{deployer.KindCompose}
	if info.Info.Swarm.LocalNodeState == swarm.LocalNodeStateActive && info.Info.Swarm.ControlAvailable {
		kinds = append(kinds, deployer.KindSwarm)
	}
	return kinds, nil
}

// WatcherOptions maps the registries section of the config to the watcher.
func WatcherOptions(cfg *config.Config, log zerolog.Logger) watcher.Options {
	opts := watcher.Options{Logger: log, Concurrency: 4 * cfg.Concurrency, Platform: "linux/" + runtime.GOARCH}
	for _, r := range cfg.Registries {
		opts.Registries = append(opts.Registries, watcher.Registry{
			Host:        r.Host,
			Username:    r.Username,
			Password:    r.Password.Value(),
			Token:       r.Token.Value(),
			Mirrors:     r.Mirrors,
			Insecure:    r.Insecure,
			CAFile:      r.CAFile,
			Concurrency: r.Concurrency,
			RateLimit:   r.RateLimit,
		})
	}
	return opts
}
