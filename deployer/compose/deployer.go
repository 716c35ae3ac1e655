package compose

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/docker/cli/cli/command"
	"github.com/docker/cli/cli/flags"
	"github.com/docker/compose/v5/pkg/api"
	composesdk "github.com/docker/compose/v5/pkg/compose"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/moby/moby/client"
	"github.com/rs/zerolog"

	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/engine"
)

// Options configure a Deployer. The zero value is usable: anonymous pulls,
// no logging, three good samples one second apart, a deadline derived from
// the service's healthcheck, no cleanup of replaced images.
type Options struct {
	// Host is the engine address (unix://…, tcp://…, ssh://…); "" uses
	// DOCKER_HOST or the default socket.
	Host string
	// Keychain provides registry credentials for pulls (sent to the engine as
	// X-Registry-Auth); nil pulls anonymously.
	Keychain authn.Keychain
	// Logger receives debug lines about each step; the zero value discards.
	Logger zerolog.Logger
	// HealthSamples is how many consecutive good samples of every replica
	// the health gate requires (default 3).
	HealthSamples int
	// HealthInterval is the time between samples (default 1s).
	HealthInterval time.Duration
	// HealthTimeout bounds the health gate. Zero derives it from the
	// container's healthcheck: start_period + (interval + timeout) ×
	// (retries + 1) + samples × HealthInterval + 5s; without a healthcheck
	// it is samples × HealthInterval + 30s.
	HealthTimeout time.Duration
	// CleanupOld removes, after a successful update, the image that the
	// previous successful update replaced (it stops being the rollback image
	// at that moment). The image just replaced is never removed: it is the
	// rollback image until the next success.
	CleanupOld bool
	// PullTimeout bounds one pull (default 10m).
	PullTimeout time.Duration
	// ConvergeTimeout bounds one converge through the Compose SDK (default 5m).
	ConvergeTimeout time.Duration
	// RestoreTimeout bounds the whole restore after a failed rollout
	// (default 10m). The restore runs even when the caller's context has
	// been cancelled: a rollout is never abandoned halfway.
	RestoreTimeout time.Duration
	// Engine replaces the engine calls the deployer makes itself (fault
	// injection in tests); nil uses the engine from the environment. The
	// Compose SDK always uses the engine from the environment.
	Engine Engine
	// Now is the clock for step timings; nil is time.Now.
	Now func() time.Time
}

func (o Options) withDefaults() Options {
	if o.HealthSamples <= 0 {
		o.HealthSamples = 3
	}
	if o.HealthInterval <= 0 {
		o.HealthInterval = time.Second
	}
	if o.PullTimeout <= 0 {
		o.PullTimeout = 10 * time.Minute
	}
	if o.ConvergeTimeout <= 0 {
		o.ConvergeTimeout = 5 * time.Minute
	}
	if o.RestoreTimeout <= 0 {
		o.RestoreTimeout = 10 * time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Deployer updates services of Compose projects on one Docker engine.
type Deployer struct {
	opts    Options
	engine  Engine
	sdk     api.Compose
	cli     *client.Client
	log     zerolog.Logger
	mu      sync.Mutex
	running map[string]bool // "<project>/<service>" with a rollout in flight
}

var _ deployer.Deployer = (*Deployer)(nil)

// New connects to the engine (Options.Host, else from the environment; API
// version negotiated) and builds the Compose SDK service in-process on the
// same connection.
func New(ctx context.Context, opts Options) (*Deployer, error) {
	opts = opts.withDefaults()
	cli, err := engine.Connect(ctx, opts.Host)
	if err != nil {
		return nil, err
	}
	dcli, err := command.NewDockerCli(command.WithOutputStream(io.Discard), command.WithErrorStream(io.Discard))
	if err != nil {
		_ = cli.Close()
		return nil, fmt.Errorf("compose SDK: %w", err)
	}
	if err := dcli.Initialize(flags.NewClientOptions(), command.WithAPIClient(cli)); err != nil {
		_ = cli.Close()
		return nil, fmt.Errorf("compose SDK: %w", err)
	}
	sdk, err := composesdk.NewComposeService(dcli,
		composesdk.WithOutputStream(io.Discard),
		composesdk.WithErrorStream(io.Discard),
		// A diverged volume would be recreated, losing its data, if the
		// prompt said yes. The drift guard refuses such projects first;
		// this makes sure the answer is no even with AllowDrift.
		composesdk.WithPrompt(func(string, bool) (bool, error) { return false, nil }),
	)
	if err != nil {
		_ = cli.Close()
		return nil, fmt.Errorf("compose SDK: %w", err)
	}
	eng := opts.Engine
	if eng == nil {
		eng = cli
	}
	return &Deployer{
		opts:    opts,
		engine:  eng,
		sdk:     sdk,
		cli:     cli,
		log:     opts.Logger,
		running: map[string]bool{},
	}, nil
}

// Close releases the engine connection.
func (d *Deployer) Close() error { return d.cli.Close() }

// lock makes sure only one rollout of a service runs at a time in this
// process (rule 7 of the design); the agent guards against other processes.
func (d *Deployer) lock(key string) (unlock func(), err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.running[key] {
		return nil, fmt.Errorf("%w: another rollout of %s is in progress", deployer.ErrConflict, key)
	}
	d.running[key] = true
	return func() {
		d.mu.Lock()
		delete(d.running, key)
		d.mu.Unlock()
	}, nil
}

// Deploy rolls plan.To out to plan.Target: see docs/compose.md for the steps.
func (d *Deployer) Deploy(ctx context.Context, plan deployer.Plan, progress deployer.Progress) deployer.Result {
	rec := &recorder{now: d.opts.Now, progress: progress, log: d.log, target: plan.Target.ID}
	res := deployer.Result{Outcome: deployer.Failed, From: plan.Target.Digest, To: plan.To.Digest}
	if err := checkTarget(plan.Target); err != nil {
		res.Cause = err
		return res
	}
	unlock, err := d.lock(plan.Target.Compose.Project + "/" + plan.Target.Compose.Service)
	if err != nil {
		res.Cause = err
		return res
	}
	defer unlock()
	r := &rollout{d: d, rec: rec, target: plan.Target}
	res = r.deploy(ctx, plan)
	res.Steps = rec.steps
	return res
}

// Rollback puts back the version that ran before the last update of target,
// as recorded on the engine by the last rollout (see docs/compose.md), or
// the digest to ("sha256:…" or "repo:tag@sha256:…") when it is not empty.
// Success is Outcome RolledBack.
func (d *Deployer) Rollback(ctx context.Context, target deployer.Target, to string, progress deployer.Progress) deployer.Result {
	rec := &recorder{now: d.opts.Now, progress: progress, log: d.log, target: target.ID}
	res := deployer.Result{Outcome: deployer.Failed, From: target.Digest}
	if err := checkTarget(target); err != nil {
		res.Cause = err
		return res
	}
	unlock, err := d.lock(target.Compose.Project + "/" + target.Compose.Service)
	if err != nil {
		res.Cause = err
		return res
	}
	defer unlock()
	r := &rollout{d: d, rec: rec, target: target}
	res = r.rollback(ctx, to)
	res.Steps = rec.steps
	return res
}

func checkTarget(t deployer.Target) error {
	if t.Kind != deployer.KindCompose || t.Compose == nil {
		return fmt.Errorf("%w: %s is not a Compose service", deployer.ErrUnsupported, t.ID)
	}
	if t.Unmanaged != "" {
		return fmt.Errorf("%w: %s: %s", deployer.ErrUnsupported, t.ID, t.Unmanaged)
	}
	if t.Compose.Project == "" || t.Compose.Service == "" {
		return errors.New("target has no Compose project or service name: discover it again")
	}
	return nil
}
