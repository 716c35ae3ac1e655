package swarm

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/moby/moby/api/types/swarm"

	"github.com/shipwatch/shipwatch/imageref"
)

// Swarm's own values for a service without update_config/rollback_config
// (swarmkit manager/orchestrator defaults): one task at a time, pause on
// failure, 5s monitor, stop-first.
var swarmDefaultUpdate = swarm.UpdateConfig{
	Parallelism:   1,
	FailureAction: swarm.UpdateFailureActionPause,
	Monitor:       5 * time.Second,
	Order:         swarm.UpdateOrderStopFirst,
}

const (
	// startAllowance is what a task may need to be pulled, scheduled and
	// started, per update batch, in a derived deadline.
	startAllowance = 30 * time.Second
	// unknownHealth is the healthcheck allowance per batch when the spec
	// does not say (the image may still have a HEALTHCHECK).
	unknownHealth = 30 * time.Second
)

// Docker's defaults for a HEALTHCHECK field left at zero.
const (
	dockerHealthInterval = 30 * time.Second
	dockerHealthTimeout  = 30 * time.Second
	dockerHealthRetries  = 3
)

// Modes of a service, as deployer.SwarmService.Mode spells them.
const (
	modeReplicated    = "replicated"
	modeGlobal        = "global"
	modeReplicatedJob = "replicated-job"
	modeGlobalJob     = "global-job"
)

func serviceMode(spec swarm.ServiceSpec) string {
	switch m := spec.Mode; {
	case m.Global != nil:
		return modeGlobal
	case m.ReplicatedJob != nil:
		return modeReplicatedJob
	case m.GlobalJob != nil:
		return modeGlobalJob
	default:
		return modeReplicated
	}
}

// desiredReplicas is the replica count of a replicated service, -1 for
// other modes.
func desiredReplicas(spec swarm.ServiceSpec) int {
	if r := spec.Mode.Replicated; r != nil {
		if r.Replicas == nil {
			return 1
		}
		return int(*r.Replicas)
	}
	if spec.Mode.Global == nil && spec.Mode.ReplicatedJob == nil && spec.Mode.GlobalJob == nil {
		return 1 // no mode at all means one replica
	}
	return -1
}

func specImage(spec swarm.ServiceSpec) string {
	if cs := spec.TaskTemplate.ContainerSpec; cs != nil {
		return cs.Image
	}
	return ""
}

func taskImage(t swarm.Task) string {
	if cs := t.Spec.ContainerSpec; cs != nil {
		return cs.Image
	}
	return ""
}

// digestOf is the digest an image reference is pinned to, "" when it is not.
func digestOf(image string) string {
	r, err := imageref.Parse(image)
	if err != nil {
		return ""
	}
	return r.Digest
}

// pinnedImage is the reference written into the spec: "repo:tag@sha256:…"
// in the Docker CLI's familiar form, which is also what `docker stack
// deploy` writes after resolving a tag, so that a later stack deploy of the
// same tag produces the very same string and restarts nothing.
func pinnedImage(to imageref.Ref) string { return to.Familiar() }

// specKey identifies a spec's content: two specs with the same key are the
// same spec. It detects a service changed by someone else while we follow
// our update (Meta.Version cannot: Swarm bumps it on every status write).
func specKey(spec swarm.ServiceSpec) string {
	b, err := json.Marshal(spec)
	if err != nil {
		// A ServiceSpec always marshals; if it ever did not, two specs must
		// not compare equal by accident.
		return fmt.Sprintf("unmarshalable spec %p", &spec)
	}
	return string(b)
}

// withImage returns a deep copy of spec with its image replaced; nothing
// else (labels included: com.docker.stack.image stays what the stack file
// said) changes.
func withImage(spec swarm.ServiceSpec, image string) (swarm.ServiceSpec, error) {
	out, err := copySpec(spec)
	if err != nil {
		return out, err
	}
	if out.TaskTemplate.ContainerSpec == nil {
		return out, fmt.Errorf("service has no container spec")
	}
	out.TaskTemplate.ContainerSpec.Image = image
	return out, nil
}

// copySpec is a deep copy of spec (its JSON round trip is exact: the spec
// is what the engine sent as JSON).
func copySpec(spec swarm.ServiceSpec) (swarm.ServiceSpec, error) {
	var out swarm.ServiceSpec
	b, err := json.Marshal(spec)
	if err != nil {
		return out, fmt.Errorf("copy service spec: %w", err)
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return out, fmt.Errorf("copy service spec: %w", err)
	}
	return out, nil
}

// applyDefaults fills UpdateConfig and RollbackConfig where the service has
// none, and says what it set (for the step detail).
func applyDefaults(spec *swarm.ServiceSpec, d UpdateDefaults) []string {
	var notes []string
	base := swarm.UpdateConfig{
		Parallelism:     d.Parallelism,
		Delay:           d.Delay,
		Monitor:         d.Monitor,
		MaxFailureRatio: d.MaxFailureRatio,
		Order:           swarm.UpdateOrderStartFirst,
	}
	if base.Parallelism == 0 {
		base.Parallelism = 1
	}
	if base.Monitor == 0 {
		base.Monitor = DefaultMonitor
	}
	if hc, ok := specHealth(*spec); ok && hc > base.Monitor {
		base.Monitor = hc
	}
	why := startFirstBlocked(*spec)
	if d.StopFirst || why != "" {
		base.Order = swarm.UpdateOrderStopFirst
	}
	if why != "" && (spec.UpdateConfig == nil || spec.RollbackConfig == nil) {
		notes = append(notes, "stop-first because "+why)
	}
	if spec.UpdateConfig == nil {
		u := base
		u.FailureAction = swarm.UpdateFailureActionRollback
		spec.UpdateConfig = &u
		notes = append(notes, fmt.Sprintf("update_config defaulted: parallelism %d, monitor %s, order %s, failure action rollback", u.Parallelism, u.Monitor, u.Order))
	}
	if spec.RollbackConfig == nil {
		r := base
		r.FailureAction = swarm.UpdateFailureActionPause
		spec.RollbackConfig = &r
		notes = append(notes, fmt.Sprintf("rollback_config defaulted: parallelism %d, monitor %s, order %s, failure action pause", r.Parallelism, r.Monitor, r.Order))
	}
	return notes
}

// startFirstBlocked says why a second task of the service could not run
// next to the first on the same node ("" when it could).
func startFirstBlocked(spec swarm.ServiceSpec) string {
	if e := spec.EndpointSpec; e != nil {
		for _, p := range e.Ports {
			if p.PublishMode == swarm.PortConfigPublishModeHost && p.PublishedPort != 0 {
				return fmt.Sprintf("port %d is published in host mode", p.PublishedPort)
			}
		}
	}
	if p := spec.TaskTemplate.Placement; p != nil && p.MaxReplicas > 0 {
		return fmt.Sprintf("placement allows at most %d replica(s) per node", p.MaxReplicas)
	}
	return ""
}

// specHealth is how long the spec's healthcheck needs to call a task
// unhealthy after it was healthy (interval × retries + timeout); false when
// the spec declares no healthcheck (the image may have one).
func specHealth(spec swarm.ServiceSpec) (time.Duration, bool) {
	cs := spec.TaskTemplate.ContainerSpec
	if cs == nil || cs.Healthcheck == nil || len(cs.Healthcheck.Test) == 0 {
		return 0, false
	}
	h := cs.Healthcheck
	if h.Test[0] == "NONE" {
		return 0, true
	}
	interval, timeout, retries := h.Interval, h.Timeout, h.Retries
	if interval == 0 {
		interval = dockerHealthInterval
	}
	if timeout == 0 {
		timeout = dockerHealthTimeout
	}
	if retries == 0 {
		retries = dockerHealthRetries
	}
	return interval*time.Duration(retries) + timeout, true
}

// startHealth is the allowance for a new task to become healthy the first
// time (Swarm only calls a task with a healthcheck running once it is
// healthy).
func startHealth(spec swarm.ServiceSpec) time.Duration {
	d, ok := specHealth(spec)
	if !ok {
		return unknownHealth
	}
	if h := spec.TaskTemplate.ContainerSpec.Healthcheck; h != nil {
		d += h.StartPeriod
	}
	return d
}

// effectiveConfig is the update (or rollback) config Swarm will use for
// spec, with Swarm's defaults where the spec leaves a field unset.
func effectiveConfig(spec swarm.ServiceSpec, rollback bool) swarm.UpdateConfig {
	c := spec.UpdateConfig
	if rollback {
		c = spec.RollbackConfig
	}
	if c == nil {
		return swarmDefaultUpdate
	}
	out := *c
	if out.Monitor == 0 {
		out.Monitor = swarmDefaultUpdate.Monitor
	}
	if out.FailureAction == "" {
		out.FailureAction = swarmDefaultUpdate.FailureAction
	}
	if out.Order == "" {
		out.Order = swarmDefaultUpdate.Order
	}
	return out
}

// deriveDeadline is how long an update of spec over tasks tasks may take:
// batches × (monitor + delay + healthcheck + start allowance), at least
// MinDeadline. rollback uses the rollback config.
func deriveDeadline(spec swarm.ServiceSpec, tasks int, rollback bool) time.Duration {
	cfg := effectiveConfig(spec, rollback)
	if tasks < 1 {
		tasks = 1
	}
	par := int(cfg.Parallelism)
	if par <= 0 || par > tasks {
		par = tasks
	}
	batches := (tasks + par - 1) / par
	per := cfg.Monitor + cfg.Delay + startHealth(spec) + startAllowance
	if d := time.Duration(batches) * per; d > MinDeadline {
		return d
	}
	return MinDeadline
}
