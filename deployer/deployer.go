// Package deployer is the platform contract of shipwatch: what a deployable
// target is, what a rollout plan says, which outcomes a rollout can have, and
// the interface that deployer/compose and deployer/swarm implement. It never
// imports sigstore: by the time a Plan reaches a Deployer, its digest has been
// verified.
package deployer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/shipwatch/shipwatch/imageref"
)

// Kind is the platform a target runs on.
type Kind string

// The platforms shipwatch deploys to.
const (
	KindCompose Kind = "compose"
	KindSwarm   Kind = "swarm"
)

// Target is one workload shipwatch can update, as discovered on the engine
// (the engine is the source of truth for what runs).
type Target struct {
	// ID is stable across passes: "compose/<project>/<service>" or "swarm/<service>".
	ID   string
	Kind Kind
	// Name is what users type on the command line: "<project>/<service>"
	// for Compose, "<service>" for Swarm.
	Name string
	// Image is the reference the workload was deployed from, as the user
	// wrote it (compose file, stack file, service spec) without any digest
	// pin: "nginx:1.27".
	Image imageref.Ref
	// Digest is the manifest digest that runs now ("sha256:…"): the one in
	// the service spec's pin, or the local image's RepoDigest for Image's
	// repository. Empty when the engine cannot tell (a locally built image).
	Digest string
	// Labels are the container's (Compose) or service's (Swarm) labels.
	Labels map[string]string
	// Replicas is the desired number of running tasks/containers; -1 for a
	// global service.
	Replicas int
	Compose  *ComposeService
	Swarm    *SwarmService
	// Unmanaged, when set, says why shipwatch cannot update this target
	// (for example "not part of a Compose project").
	Unmanaged string
}

// ComposeService is what the Compose labels of a service's containers say.
type ComposeService struct {
	Project     string
	Service     string
	WorkingDir  string
	ConfigFiles []string
	EnvFiles    []string
	ConfigHash  string   // com.docker.compose.config-hash of the running container(s)
	ImageID     string   // local image ID the containers run
	Containers  []string // container IDs, sorted
}

// SwarmService identifies a Swarm service and how it is scheduled.
type SwarmService struct {
	ID      string
	Version uint64 // spec version when discovered
	Stack   string // com.docker.stack.namespace, if deployed as a stack
	Mode    string // "replicated", "global", "replicated-job", "global-job"
	// UpdateState is the service's current UpdateStatus.State ("" if none).
	UpdateState string
}

// Plan is one rollout to do: put To (pinned by digest) into Target.
type Plan struct {
	Target Target
	// To is the verified image: repo:tag@sha256:…. Its tag is the tag to
	// record (in the compose/stack file for a semver update); its digest is
	// exactly what must run afterwards (rule 1 of the design).
	To imageref.Ref
	// AllowDrift applies the update even when the running Compose containers
	// do not match the project on disk.
	AllowDrift bool
	// DryRun reports what would be done without changing anything.
	DryRun bool
}

// Outcome is the named state every target ends a pass in (rule 4).
type Outcome string

// The outcomes of a pass. Deployers return Updated, RolledBack, Failed or
// UpToDate; the pass adds the others.
const (
	UpToDate   Outcome = "up-to-date"
	Blocked    Outcome = "blocked"   // verification decided no
	Available  Outcome = "available" // found and allowed, not deployed (check, approval, window)
	Updated    Outcome = "updated"
	RolledBack Outcome = "rolled-back" // the update failed and the previous version runs again
	Failed     Outcome = "failed"      // could not check, could not decide, or could not restore
)

// Step is one timed step of a rollout, for progress output and history.
type Step struct {
	Name   string
	Start  time.Time
	Took   time.Duration
	Detail string
	Err    error
}

// Result is the outcome of one Deploy or Rollback.
type Result struct {
	Outcome Outcome
	// From and To are the digests before and the digest that was attempted.
	From, To string
	// Running is the digest that runs when the deployer returns ("" if unknown).
	Running string
	// Cause explains a RolledBack or Failed outcome (health gate failure,
	// pull error, …); nil otherwise.
	Cause error
	// ManualAction is set when the deployer could not restore the previous
	// version either: a human must look.
	ManualAction bool
	// FailedDigest is the digest that failed its rollout and should be
	// quarantined ("" when nothing failed, or when the failure was not the
	// image's fault, like a registry that could not be reached).
	FailedDigest string
	// Logs holds the last log lines of a failed container or task.
	Logs  []string
	Steps []Step
}

// Progress receives each step as it ends; nil means no progress output.
type Progress func(Step)

// Deployer updates targets of one platform. Implementations must never
// remove the running version before the new one is proven (rule 3), must
// bound every wait, and must return an honest Outcome.
type Deployer interface {
	// Deploy rolls plan.To out to plan.Target, waits for it to be healthy,
	// and rolls back if it is not.
	Deploy(ctx context.Context, plan Plan, progress Progress) Result
	// Rollback restores the version that ran before the last update of
	// target (to a specific digest when to is non-empty).
	Rollback(ctx context.Context, target Target, to string, progress Progress) Result
}

// Errors that callers test with errors.Is.
var (
	// ErrDrift: the running containers do not match the project on disk.
	ErrDrift = errors.New("running containers do not match the compose files on disk")
	// ErrConflict: someone else changed the target while we worked on it.
	ErrConflict = errors.New("target changed by someone else during the rollout")
	// ErrNotFound: the target no longer exists.
	ErrNotFound = errors.New("target not found")
	// ErrDigestMismatch: the registry served a different digest than verified.
	ErrDigestMismatch = errors.New("pulled image digest differs from the verified digest")
	// ErrUnsupported: the target cannot be updated by shipwatch as it is.
	ErrUnsupported = errors.New("target not supported")
	// ErrNoPrevious: there is no earlier version to roll back to.
	ErrNoPrevious = errors.New("no previous version to roll back to")
)

// HealthError says why the health gate failed; Deployers wrap it in Cause.
type HealthError struct {
	Reason string // "crash loop", "unhealthy", "exited with code 1", "never became healthy within 30s", "OOM killed"
	Logs   []string
}

func (e *HealthError) Error() string { return "health gate: " + e.Reason }

// ParseTargetID splits "compose/<project>/<service>" or "swarm/<service>".
func ParseTargetID(id string) (kind Kind, name string, err error) {
	for _, k := range []Kind{KindCompose, KindSwarm} {
		prefix := string(k) + "/"
		if len(id) > len(prefix) && id[:len(prefix)] == prefix {
			return k, id[len(prefix):], nil
		}
	}
	return "", "", fmt.Errorf("target %q: want compose/<project>/<service> or swarm/<service>", id)
}
