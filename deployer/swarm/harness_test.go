package swarm_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"
	"github.com/rs/zerolog"

	"github.com/shipwatch/shipwatch/deployer"
	swarmdeployer "github.com/shipwatch/shipwatch/deployer/swarm"
	"github.com/shipwatch/shipwatch/imageref"
	"github.com/shipwatch/shipwatch/internal/testenv"
)

// harness is one test's slice of the real engine: a single-node swarm, a
// loopback registry, and the services it created (removed at the end, with
// every image pulled from the registry).
type harness struct {
	t   testing.TB
	cli *client.Client
	reg *testenv.Registry
	ctx context.Context
	id  string // makes this test's images unique
}

func newHarness(t testing.TB, opts ...testenv.RegistryOption) *harness {
	t.Helper()
	cli := testenv.Engine(t)
	testenv.Swarm(t, cli)
	reg := testenv.NewRegistry(t, opts...)
	testenv.RemoveImagesOf(t, cli, reg.Host)
	return &harness{t: t, cli: cli, reg: reg, ctx: testenv.Context(t, 5*time.Minute), id: testenv.Name("")}
}

// push builds app, pushes it as demo/app:tag and returns the pinned reference.
// Every test gets images of its own (a label with its ID): the engine
// identifies images by content, and an image shared with a parallel test
// could not be removed while that test's containers use it.
func (h *harness) push(tag string, app testenv.App) imageref.Ref {
	h.t.Helper()
	labels := map[string]string{"shipwatch.test.id": h.id}
	for k, v := range app.Labels {
		labels[k] = v
	}
	app.Labels = labels
	dg := h.reg.MustPush(h.t, "demo/app:"+tag, app.MustImage(h.t))
	return imageref.MustParse(h.reg.Ref("demo/app:" + tag)).WithDigest(dg)
}

// Short update settings so that the suite runs in minutes.
func fastUpdate(order swarm.UpdateOrder) *swarm.UpdateConfig {
	return &swarm.UpdateConfig{Parallelism: 1, FailureAction: swarm.UpdateFailureActionRollback, Monitor: 2 * time.Second, Order: order}
}

func fastRollback() *swarm.UpdateConfig {
	return &swarm.UpdateConfig{Parallelism: 1, FailureAction: swarm.UpdateFailureActionPause, Monitor: time.Second, Order: swarm.UpdateOrderStopFirst}
}

func replicas(n uint64) swarm.ServiceMode {
	return swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &n}}
}

// service creates a service running ref (one replica unless edit says
// otherwise), removes it when the test ends, and waits until its tasks run.
func (h *harness) service(ref imageref.Ref, edit func(*swarm.ServiceSpec)) swarm.Service {
	h.t.Helper()
	spec := swarm.ServiceSpec{
		Annotations:  swarm.Annotations{Name: testenv.Name("svc"), Labels: map[string]string{testenv.LabelKey: "1"}},
		TaskTemplate: swarm.TaskSpec{ContainerSpec: &swarm.ContainerSpec{Image: ref.Familiar()}},
		Mode:         replicas(1),
	}
	if edit != nil {
		edit(&spec)
	}
	return h.create(spec, "")
}

func (h *harness) create(spec swarm.ServiceSpec, auth string) swarm.Service {
	h.t.Helper()
	created, err := h.cli.ServiceCreate(h.ctx, client.ServiceCreateOptions{Spec: spec, EncodedRegistryAuth: auth})
	if err != nil {
		h.t.Fatalf("service create: %v", err)
	}
	h.t.Cleanup(func() { testenv.RemoveService(h.t, h.cli, created.ID) })
	want := 1
	switch {
	case spec.Mode.Replicated != nil && spec.Mode.Replicated.Replicas != nil:
		want = int(*spec.Mode.Replicated.Replicas)
	}
	h.waitRunning(created.ID, want)
	return h.inspect(created.ID)
}

func (h *harness) waitRunning(id string, want int) {
	h.t.Helper()
	testenv.Eventually(h.t, 90*time.Second, 200*time.Millisecond, func() (bool, string) {
		n := len(h.running(id))
		return n == want, fmt.Sprintf("service %s: %d running task(s), want %d", id, n, want)
	})
}

func (h *harness) inspect(id string) swarm.Service {
	h.t.Helper()
	res, err := h.cli.ServiceInspect(h.ctx, id, client.ServiceInspectOptions{})
	if err != nil {
		h.t.Fatalf("service inspect %s: %v", id, err)
	}
	return res.Service
}

func (h *harness) tasks(id string) []swarm.Task {
	h.t.Helper()
	res, err := h.cli.TaskList(h.ctx, client.TaskListOptions{Filters: make(client.Filters).Add("service", id)})
	if err != nil {
		h.t.Fatalf("task list %s: %v", id, err)
	}
	return res.Items
}

// running lists the digests of the tasks that run (desired and actual state
// running), read from the tasks' container specs.
func (h *harness) running(id string) []string {
	h.t.Helper()
	var out []string
	for _, tk := range h.tasks(id) {
		if tk.DesiredState == swarm.TaskStateRunning && tk.Status.State == swarm.TaskStateRunning {
			out = append(out, imageref.MustParse(tk.Spec.ContainerSpec.Image).Digest)
		}
	}
	return out
}

// target builds the deployer.Target discovery would give for the service.
func (h *harness) target(id string) deployer.Target {
	h.t.Helper()
	svc := h.inspect(id)
	ref := imageref.MustParse(svc.Spec.TaskTemplate.ContainerSpec.Image)
	t := deployer.Target{
		ID: "swarm/" + svc.Spec.Name, Kind: deployer.KindSwarm, Name: svc.Spec.Name,
		Image: ref.Tagged(), Digest: ref.Digest, Labels: svc.Spec.Labels,
		Swarm: &deployer.SwarmService{ID: svc.ID, Version: svc.Version.Index, Stack: svc.Spec.Labels[swarmdeployer.LabelStackNamespace]},
	}
	if svc.UpdateStatus != nil {
		t.Swarm.UpdateState = string(svc.UpdateStatus.State)
	}
	return t
}

func (h *harness) deployer(opts swarmdeployer.Options) *swarmdeployer.Deployer {
	h.t.Helper()
	if opts.Engine == nil {
		opts.Engine = h.cli
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = 250 * time.Millisecond
	}
	if opts.Defaults.Monitor == 0 {
		opts.Defaults.Monitor = 2 * time.Second
	}
	if tt, ok := h.t.(*testing.T); ok {
		opts.Logger = zerolog.New(zerolog.NewTestWriter(tt)).Level(zerolog.DebugLevel)
	}
	d, err := swarmdeployer.New(h.ctx, opts)
	if err != nil {
		h.t.Fatalf("New: %v", err)
	}
	return d
}

// logSteps prints the steps of a result, for failing tests.
func logSteps(t testing.TB, res deployer.Result) {
	t.Helper()
	var b strings.Builder
	for _, s := range res.Steps {
		fmt.Fprintf(&b, "\n  %-16s %6s %s", s.Name, s.Took.Round(time.Millisecond), s.Detail)
		if s.Err != nil {
			fmt.Fprintf(&b, " ERR %v", s.Err)
		}
	}
	t.Logf("outcome %s, running %s, cause %v, manual %v, failed digest %q, logs %q%s", res.Outcome, short(res.Running), res.Cause, res.ManualAction, short(res.FailedDigest), res.Logs, b.String())
}

func short(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}

// assertResult checks the outcome and the digest that runs at the end,
// both as the Result says and as the engine's tasks say.
func (h *harness) assertResult(res deployer.Result, id string, outcome deployer.Outcome, digest string) {
	h.t.Helper()
	logSteps(h.t, res)
	if res.Outcome != outcome {
		h.t.Errorf("outcome = %s, want %s (cause: %v)", res.Outcome, outcome, res.Cause)
	}
	if res.Running != digest {
		h.t.Errorf("Result.Running = %s, want %s", short(res.Running), short(digest))
	}
	for _, got := range h.running(id) {
		if got != digest {
			h.t.Errorf("a task runs %s, want %s", short(got), short(digest))
		}
	}
}
