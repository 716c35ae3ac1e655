package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/shipwatch/shipwatch/agent"
	"github.com/shipwatch/shipwatch/api"
	"github.com/shipwatch/shipwatch/config"
	"github.com/shipwatch/shipwatch/discovery"
	"github.com/shipwatch/shipwatch/metrics"
	"github.com/shipwatch/shipwatch/notify"
	"github.com/shipwatch/shipwatch/state"
)

func newAgentCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "agent",
		Short: "Run the daemon: scheduled and webhook-triggered passes, API, metrics, notifications",
		Long: `agent watches on the configured schedule (and on registry webhooks when the API is
enabled), verifies candidates, rolls them out with a health gate and rollback, records
what it did in the state file, and tells people. It stops on SIGTERM/SIGINT: a rollout in
flight gets rollout.shutdown_grace to finish or roll back.

A second agent on the same state file refuses to start.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return a.runAgent(cmd.Context()) },
	}
}

func (a *app) runAgent(ctx context.Context) error {
	if err := a.execLeanAgent(); err != nil {
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
	store, err := state.Open(cfg.State.Path, 2*time.Second)
	if err != nil {
		return err
	}
	defer store.Close()

	m := metrics.New()
	deps, closeDeps, err := a.agentDeps(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer closeDeps()
	deps.Metrics = m
	deps.Self = selfContainerID()
	// Passes reuse a discovery until the engine's events report a change.
	var follow func(context.Context)
	if ev, ok := deps.Engine.(discovery.Events); ok {
		cache := discovery.NewCache(deps.Engine, ev, discovery.CacheOptions{Logger: log})
		deps.Targets, follow = cache, cache.Follow
	}

	nopts := notifyOptions(cfg, log, store)
	nopts.Metrics = m
	notifier, err := notify.New(nopts)
	if err != nil {
		return fmt.Errorf("notifications: %w", err)
	}
	deps.Notifier = notifier
	defer func() {
		fctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = notifier.Close(fctx)
	}()

	ag, err := agent.New(agent.Options{Config: cfg, Deps: deps, Store: store, Logger: log})
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	if cfg.API.Listen != "" {
		srv, err := api.New(ag, api.Options{
			Listen: cfg.API.Listen, Token: cfg.API.Token.Value(), TLSCert: cfg.API.TLSCert, TLSKey: cfg.API.TLSKey,
			WebhookSecret: cfg.Webhooks.Secret.Value(), Logger: log, Metrics: m, Registry: m.Registry(),
		})
		if err != nil {
			return fmt.Errorf("API: %w", err)
		}
		g.Go(func() error { return srv.Run(gctx) })
	}
	if follow != nil {
		g.Go(func() error { follow(gctx); return nil })
	}
	g.Go(func() error { return ag.Run(gctx) })
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func notifyOptions(cfg *config.Config, log zerolog.Logger, store *state.Store) notify.Options {
	opts := notify.Options{Template: cfg.Notify.Template, Events: cfg.Notify.Events, Logger: log, Timeout: 10 * time.Second, Dedup: store.FirstNotice}
	for _, u := range cfg.Notify.URLs {
		opts.URLs = append(opts.URLs, u.Value())
	}
	for _, w := range cfg.Notify.Webhooks {
		hdr := map[string]string{}
		for k, v := range w.Headers {
			hdr[k] = v.Value()
		}
		opts.Webhooks = append(opts.Webhooks, notify.Webhook{URL: w.URL.Value(), Headers: hdr})
	}
	return opts
}

// selfContainerID is the ID prefix of the container shipwatch runs in, if
// any (Docker sets the hostname to the short container ID).
func selfContainerID() string {
	if _, err := os.Stat("/.dockerenv"); err != nil {
		return ""
	}
	h, err := os.Hostname()
	if err != nil || len(h) != 12 || strings.Trim(h, "0123456789abcdef") != "" {
		return ""
	}
	return h
}
