package swarm

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/imageref"
)

// fakeEngine is an in-memory manager for what a single-node swarm cannot
// produce on demand: a worker node, an inactive or locked swarm, update
// races, engine errors. It keeps Swarm's bookkeeping: versions, the
// previous spec, and the swap a Rollback: "previous" update does.
type fakeEngine struct {
	mu   sync.Mutex
	info swarm.Info
	svc  *swarm.Service // nil: no such service
	// tasks returns the tasks to list; nil lists none.
	tasks func(f *fakeEngine) []swarm.Task
	// tick runs on every ServiceInspect after an update, with the number of
	// inspects since that update: the test's script of what Swarm does.
	tick    func(f *fakeEngine, n int)
	ticks   int
	updates []client.ServiceUpdateOptions
	// updateErrs are returned by the next ServiceUpdate calls, in order.
	updateErrs []error
	// onUpdate runs at the start of every ServiceUpdate call (n counts
	// them), before the version check: another client racing us.
	onUpdate func(f *fakeEngine, n int)
	// inspectErr, when set, fails every ServiceInspect after an update.
	inspectErr error
	dist       func(ref, auth string) (client.DistributionInspectResult, error)
	calls      map[string]int
}

var _ Engine = (*fakeEngine)(nil)

func newFake(image string) *fakeEngine {
	one := uint64(1)
	return &fakeEngine{
		info: swarm.Info{NodeID: "node1", LocalNodeState: swarm.LocalNodeStateActive, ControlAvailable: true},
		svc: &swarm.Service{
			ID:   "svc1",
			Meta: swarm.Meta{Version: swarm.Version{Index: 10}},
			Spec: swarm.ServiceSpec{
				Annotations:  swarm.Annotations{Name: "web", Labels: map[string]string{}},
				TaskTemplate: swarm.TaskSpec{ContainerSpec: &swarm.ContainerSpec{Image: image}},
				Mode:         swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &one}},
				// Short monitors keep the fake's timings in milliseconds.
				RollbackConfig: &swarm.UpdateConfig{Parallelism: 1, Monitor: 150 * time.Millisecond, FailureAction: swarm.UpdateFailureActionPause},
			},
		},
		calls: map[string]int{},
	}
}

func (f *fakeEngine) count(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[name]
}

func (f *fakeEngine) Info(ctx context.Context, _ client.InfoOptions) (client.SystemInfoResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["Info"]++
	var res client.SystemInfoResult
	res.Info.Swarm = f.info
	return res, nil
}

func notFound(what, id string) error {
	return fmt.Errorf("Error response from daemon: No such %s: %s: %w", what, id, cerrdefs.ErrNotFound)
}

func (f *fakeEngine) ServiceInspect(ctx context.Context, id string, _ client.ServiceInspectOptions) (client.ServiceInspectResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["ServiceInspect"]++
	if len(f.updates) > 0 {
		if f.inspectErr != nil {
			return client.ServiceInspectResult{}, f.inspectErr
		}
		f.ticks++
		if f.tick != nil {
			f.tick(f, f.ticks)
		}
	}
	if f.svc == nil || (id != f.svc.ID && id != f.svc.Spec.Name) {
		return client.ServiceInspectResult{}, notFound("service", id)
	}
	return client.ServiceInspectResult{Service: copyService(*f.svc)}, nil
}

func copyService(s swarm.Service) swarm.Service {
	spec, err := copySpec(s.Spec)
	if err != nil {
		panic(err)
	}
	s.Spec = spec
	if s.PreviousSpec != nil {
		p, err := copySpec(*s.PreviousSpec)
		if err != nil {
			panic(err)
		}
		s.PreviousSpec = &p
	}
	if s.UpdateStatus != nil {
		us := *s.UpdateStatus
		s.UpdateStatus = &us
	}
	return s
}

func (f *fakeEngine) ServiceUpdate(ctx context.Context, id string, o client.ServiceUpdateOptions) (client.ServiceUpdateResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["ServiceUpdate"]++
	if f.onUpdate != nil {
		f.onUpdate(f, f.calls["ServiceUpdate"])
	}
	if len(f.updateErrs) > 0 {
		err := f.updateErrs[0]
		f.updateErrs = f.updateErrs[1:]
		if err != nil {
			return client.ServiceUpdateResult{}, err
		}
	}
	if f.svc == nil || id != f.svc.ID {
		return client.ServiceUpdateResult{}, notFound("service", id)
	}
	if o.Version.Index != f.svc.Version.Index {
		return client.ServiceUpdateResult{}, errors.New("Error response from daemon: rpc error: code = Unknown desc = update out of sequence")
	}
	f.updates = append(f.updates, o)
	f.ticks = 0
	if o.Rollback == "previous" {
		if f.svc.PreviousSpec == nil {
			return client.ServiceUpdateResult{}, errors.New("Error response from daemon: service does not have a previous spec")
		}
		cur := f.svc.Spec
		f.svc.Spec, f.svc.PreviousSpec = *f.svc.PreviousSpec, &cur
		f.svc.UpdateStatus = &swarm.UpdateStatus{State: swarm.UpdateStateRollbackStarted, Message: "manually requested rollback"}
	} else {
		prev := f.svc.Spec
		f.svc.PreviousSpec = &prev
		spec, err := copySpec(o.Spec)
		if err != nil {
			return client.ServiceUpdateResult{}, err
		}
		f.svc.Spec = spec
		f.svc.UpdateStatus = nil
	}
	f.svc.Version.Index++
	return client.ServiceUpdateResult{}, nil
}

// status sets the update state, as Swarm's updater does (it bumps the
// version too).
func (f *fakeEngine) status(state swarm.UpdateState, msg string) {
	f.svc.UpdateStatus = &swarm.UpdateStatus{State: state, Message: msg}
	f.svc.Version.Index++
}

// swarmRollback is Swarm's automatic rollback: the previous spec comes
// back and is consumed.
func (f *fakeEngine) swarmRollback(msg string) {
	f.svc.Spec, f.svc.PreviousSpec = *f.svc.PreviousSpec, nil
	f.status(swarm.UpdateStateRollbackStarted, msg)
}

func (f *fakeEngine) TaskList(ctx context.Context, _ client.TaskListOptions) (client.TaskListResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["TaskList"]++
	if f.tasks == nil {
		return client.TaskListResult{}, nil
	}
	return client.TaskListResult{Items: f.tasks(f)}, nil
}

func (f *fakeEngine) TaskLogs(ctx context.Context, id string, _ client.TaskLogsOptions) (client.TaskLogsResult, error) {
	return nil, notFound("task", id)
}

func (f *fakeEngine) ContainerInspect(ctx context.Context, id string, _ client.ContainerInspectOptions) (client.ContainerInspectResult, error) {
	return client.ContainerInspectResult{}, notFound("container", id)
}

func (f *fakeEngine) DistributionInspect(ctx context.Context, ref string, o client.DistributionInspectOptions) (client.DistributionInspectResult, error) {
	f.mu.Lock()
	f.calls["DistributionInspect"]++
	dist := f.dist
	f.mu.Unlock()
	if dist != nil {
		return dist(ref, o.EncodedRegistryAuth)
	}
	r, err := imageref.Parse(ref)
	if err != nil {
		return client.DistributionInspectResult{}, err
	}
	var res client.DistributionInspectResult
	res.Descriptor = ocispec.Descriptor{Digest: digest.Digest(r.Digest)}
	return res, nil
}

func (f *fakeEngine) Events(ctx context.Context, _ client.EventsListOptions) client.EventsResult {
	// No events: the follower must work by polling alone.
	return client.EventsResult{}
}

// runningTask is a task of the service that runs image.
func runningTask(id, image string) swarm.Task {
	return swarm.Task{
		ID: id, ServiceID: "svc1", Slot: 1, DesiredState: swarm.TaskStateRunning,
		Spec:   swarm.TaskSpec{ContainerSpec: &swarm.ContainerSpec{Image: image}},
		Status: swarm.TaskStatus{State: swarm.TaskStateRunning},
	}
}

// tasksOfSpec lists one running task of whatever the spec says now.
func tasksOfSpec(f *fakeEngine) []swarm.Task {
	return []swarm.Task{runningTask("t-"+digestOf(specImage(f.svc.Spec))[7:15], specImage(f.svc.Spec))}
}

const (
	testDigest1 = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	testDigest2 = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
	testDigest3 = "sha256:3333333333333333333333333333333333333333333333333333333333333333"
)

var (
	ref1 = imageref.MustParse("registry.example/team/web:1.0.0@" + testDigest1)
	ref2 = imageref.MustParse("registry.example/team/web:1.1.0@" + testDigest2)
	ref3 = imageref.MustParse("registry.example/team/web:1.2.0@" + testDigest3)
)

func newFakeDeployer(t *testing.T, f *fakeEngine, opts Options) *Deployer {
	t.Helper()
	opts.Engine = f
	if opts.PollInterval == 0 {
		opts.PollInterval = minPollInterval
	}
	if opts.Deadline == 0 {
		opts.Deadline = 3 * time.Second
	}
	if opts.RollbackDeadline == 0 {
		opts.RollbackDeadline = 3 * time.Second
	}
	d, err := New(context.Background(), opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return d
}

func fakeTarget(f *fakeEngine) deployer.Target {
	ref := imageref.MustParse(specImage(f.svc.Spec))
	return deployer.Target{
		ID: "swarm/web", Kind: deployer.KindSwarm, Name: "web", Image: ref.Tagged(), Digest: ref.Digest,
		Swarm: &deployer.SwarmService{ID: f.svc.ID, Version: f.svc.Version.Index},
	}
}
