// Package swarm rolls a verified image digest into Docker Swarm services and
// follows each update to an honest outcome within its own deadline, rolling
// back when the update fails.
//
// Swarm's own updater has no deadline, treats its automatic rollback as just
// another state, and never reports anything for an update that changes no
// task. This package turns all of that into one deployer.Result: Updated only
// when every task runs the verified digest, RolledBack (with the Cause) when
// the update failed and the previous version runs again, Failed with
// ManualAction when nothing could be restored.
package swarm

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	swarmtypes "github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"
	"github.com/rs/zerolog"

	"github.com/shipwatch/shipwatch/deployer"
)

// Engine is the part of the Docker Engine API the Swarm deployer uses. A
// *client.Client satisfies it; tests inject fakes for what a single-node
// swarm cannot produce (a worker node, an inactive swarm, races).
type Engine interface {
	Info(ctx context.Context, options client.InfoOptions) (client.SystemInfoResult, error)
	ServiceInspect(ctx context.Context, serviceID string, options client.ServiceInspectOptions) (client.ServiceInspectResult, error)
	ServiceUpdate(ctx context.Context, serviceID string, options client.ServiceUpdateOptions) (client.ServiceUpdateResult, error)
	TaskList(ctx context.Context, options client.TaskListOptions) (client.TaskListResult, error)
	TaskLogs(ctx context.Context, taskID string, options client.TaskLogsOptions) (client.TaskLogsResult, error)
	ContainerInspect(ctx context.Context, containerID string, options client.ContainerInspectOptions) (client.ContainerInspectResult, error)
	DistributionInspect(ctx context.Context, imageRef string, options client.DistributionInspectOptions) (client.DistributionInspectResult, error)
	Events(ctx context.Context, options client.EventsListOptions) client.EventsResult
}

var _ Engine = (*client.Client)(nil)

// Options configures a Deployer. The zero value is usable: it connects to the
// engine named by DOCKER_HOST (or the default socket), keeps the registry
// credentials stored in each service, and derives deadlines from the
// services themselves.
type Options struct {
	// Engine is the Docker Engine of a swarm manager. nil connects to
	// DOCKER_HOST (or the default socket) with the API version negotiated;
	// Close releases that connection.
	Engine Engine
	// Keychain gives the registry credentials passed to the nodes with the
	// update (X-Registry-Auth). nil, or no credentials for a registry, keeps
	// the credentials already stored in the service.
	Keychain authn.Keychain
	// Logger receives debug lines while an update is followed. The zero
	// value logs nothing.
	Logger zerolog.Logger
	// Deadline bounds how long an update may take to reach an outcome
	// (Swarm's updater has none). 0 derives it from the service: update
	// batches × (monitor + delay + healthcheck + start allowance), at least
	// MinDeadline.
	Deadline time.Duration
	// RollbackDeadline bounds a rollback the same way; 0 derives it from the
	// rollback configuration.
	RollbackDeadline time.Duration
	// PollInterval is how often the service and its tasks are read while
	// an update runs (default 1s, at least 100ms). Swarm service events wake
	// the follower earlier, so state changes are seen without waiting.
	PollInterval time.Duration
	// Defaults are applied only to services that have no update_config
	// (and, separately, no rollback_config) of their own.
	Defaults UpdateDefaults
	// StackFiles maps a stack namespace (com.docker.stack.namespace) to the
	// stack file it was deployed from. When a service of such a stack is
	// updated to a new tag, the tag is written back into that file so that
	// the next `docker stack deploy` keeps the new version (see
	// docs/swarm.md). Stacks not listed are left alone.
	StackFiles map[string]string
}

// UpdateDefaults are the update settings shipwatch applies to a service
// whose spec has no UpdateConfig (or no RollbackConfig). A service's own
// settings are always respected. The failure action is always "rollback"
// for updates and "pause" for rollbacks: a failed update is never left
// running, and a failed rollback waits for a human.
type UpdateDefaults struct {
	// Parallelism is how many tasks are updated at once (default 1).
	Parallelism uint64
	// Delay is the pause between two batches (default 0).
	Delay time.Duration
	// Monitor is how long each updated task is watched for a failure
	// (default 10s). It is raised to cover the service's healthcheck
	// (interval × retries + timeout) when the spec declares one.
	Monitor time.Duration
	// MaxFailureRatio is the share of tasks allowed to fail (default 0).
	MaxFailureRatio float32
	// StopFirst disables start-first ordering. By default a new task is
	// started before the old one is stopped, except for services with a
	// host-mode published port or a max-replicas-per-node placement, where a
	// second task on the same node could not start.
	StopFirst bool
}

// MinDeadline is the floor of a derived Deadline or RollbackDeadline.
const MinDeadline = 2 * time.Minute

// Defaults of Options and UpdateDefaults.
const (
	DefaultPollInterval = time.Second
	DefaultMonitor      = 10 * time.Second
	minPollInterval     = 100 * time.Millisecond
)

// Errors that callers test with errors.Is, besides deployer's.
var (
	// ErrNoSwarm: the engine is not part of an active swarm.
	ErrNoSwarm = errors.New("the Docker engine is not part of an active swarm")
	// ErrNotManager: the engine is a swarm worker; services are managed
	// from managers only.
	ErrNotManager = errors.New("the Docker engine is not a swarm manager")
	// ErrCredentials: the registry refused the credentials shipwatch has (or
	// asked for credentials it does not have), so the nodes could not pull.
	ErrCredentials = errors.New("registry credentials missing or refused")
	// ErrNotInRegistry: the image is not in its registry (a locally built
	// image, or a digest the registry no longer serves).
	ErrNotInRegistry = errors.New("image not found in its registry")
	// ErrRegistry: the registry could not be asked (unreachable, 5xx): try
	// again later.
	ErrRegistry = errors.New("registry could not be reached")
	// ErrDeadline: the update did not reach an outcome within the deadline.
	ErrDeadline = errors.New("update did not reach an outcome within the deadline")
	// ErrPaused: Swarm paused the update (failure action "pause").
	ErrPaused = errors.New("swarm paused the update")
	// ErrSwarmRollback: Swarm rolled the update back by itself (failure
	// action "rollback").
	ErrSwarmRollback = errors.New("swarm rolled the update back")
	// ErrPull: the nodes could not pull the image.
	ErrPull = errors.New("nodes could not pull the image")
	// ErrInterrupted: shipwatch was stopped while the update ran.
	ErrInterrupted = errors.New("interrupted while the update ran")
)

// Deployer updates Swarm services. It is safe for concurrent use on
// different services; one rollout per service at a time is the caller's
// rule (DESIGN rule 7).
type Deployer struct {
	eng     Engine
	owned   *client.Client
	opts    Options
	log     zerolog.Logger
	poll    time.Duration
	stackFS stackFiles
}

var _ deployer.Deployer = (*Deployer)(nil)

// New checks that the engine is an active swarm manager and returns a
// Deployer for its services. It fails with ErrNoSwarm or ErrNotManager (and
// what to do about it) otherwise.
func New(ctx context.Context, opts Options) (*Deployer, error) {
	if err := validate(opts); err != nil {
		return nil, err
	}
	d := &Deployer{eng: opts.Engine, opts: opts, log: opts.Logger, poll: opts.PollInterval}
	if d.poll == 0 {
		d.poll = DefaultPollInterval
	}
	if d.poll < minPollInterval {
		d.poll = minPollInterval
	}
	if d.eng == nil {
		cli, err := client.New(client.FromEnv, client.WithAPIVersionNegotiation(), client.WithUserAgent("shipwatch"))
		if err != nil {
			return nil, fmt.Errorf("docker engine client: %w", err)
		}
		d.eng, d.owned = cli, cli
	}
	if err := checkManager(ctx, d.eng); err != nil {
		_ = d.Close()
		return nil, err
	}
	d.stackFS = stackFiles(opts.StackFiles)
	return d, nil
}

// Close releases the engine connection New opened (an injected Engine is
// left to its owner).
func (d *Deployer) Close() error {
	if d.owned == nil {
		return nil
	}
	return d.owned.Close()
}

func validate(o Options) error {
	var errs []error
	for _, f := range []struct {
		name string
		v    time.Duration
	}{
		{"Deadline", o.Deadline}, {"RollbackDeadline", o.RollbackDeadline},
		{"PollInterval", o.PollInterval}, {"Defaults.Delay", o.Defaults.Delay}, {"Defaults.Monitor", o.Defaults.Monitor},
	} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("swarm options: %s = %s: must not be negative", f.name, f.v))
		}
	}
	if r := o.Defaults.MaxFailureRatio; r < 0 || r > 1 {
		errs = append(errs, fmt.Errorf("swarm options: Defaults.MaxFailureRatio = %g: must be between 0 and 1", r))
	}
	return errors.Join(errs...)
}

// checkManager fails unless the engine is an active swarm manager.
func checkManager(ctx context.Context, eng Engine) error {
	info, err := eng.Info(ctx, client.InfoOptions{})
	if err != nil {
		return fmt.Errorf("docker engine info: %w", err)
	}
	sw := info.Info.Swarm
	switch {
	case sw.LocalNodeState == swarmtypes.LocalNodeStateActive && sw.ControlAvailable:
		return nil
	case sw.LocalNodeState == swarmtypes.LocalNodeStateActive:
		return fmt.Errorf("%w: this node (%s) is a worker; Swarm services can only be updated through a manager: run shipwatch on a manager node (docker node ls lists them)", ErrNotManager, sw.NodeID)
	case sw.LocalNodeState == swarmtypes.LocalNodeStateInactive || sw.LocalNodeState == "":
		return fmt.Errorf("%w (swarm state %q): point shipwatch at a swarm manager, or use the Compose deployer for containers started by docker compose", ErrNoSwarm, string(sw.LocalNodeState))
	default:
		detail := ""
		if sw.Error != "" {
			detail = ": " + sw.Error
		}
		return fmt.Errorf("%w: swarm state is %q%s (a locked swarm needs `docker swarm unlock`; a pending join must finish)", ErrNoSwarm, string(sw.LocalNodeState), detail)
	}
}
