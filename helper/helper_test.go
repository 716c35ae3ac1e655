package helper

import (
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/imageref"
	"github.com/shipwatch/shipwatch/verify/verdict"
)

type fakeVerifier func(ctx context.Context, image imageref.Ref) verdict.Verdict

func (f fakeVerifier) Verify(ctx context.Context, image imageref.Ref) verdict.Verdict {
	return f(ctx, image)
}

type fakeDeployer struct {
	deploy   func(ctx context.Context, plan deployer.Plan, progress deployer.Progress) deployer.Result
	rollback func(ctx context.Context, t deployer.Target, to string, progress deployer.Progress) deployer.Result
}

func (f fakeDeployer) Deploy(ctx context.Context, plan deployer.Plan, progress deployer.Progress) deployer.Result {
	return f.deploy(ctx, plan, progress)
}

func (f fakeDeployer) Rollback(ctx context.Context, t deployer.Target, to string, progress deployer.Progress) deployer.Result {
	return f.rollback(ctx, t, to, progress)
}

// harness runs helpers as goroutines serving over in-memory pipes.
type harness struct {
	parts   Parts
	hello   error // when set, helpers greet with this error instead of serving
	starts  atomic.Int32
	mu      sync.Mutex
	served  []chan error // each helper's Serve result
	killers []func()
}

var errKilled = errors.New("killed")

func (h *harness) start() (*Conn, error) {
	h.starts.Add(1)
	reqR, reqW := io.Pipe()
	respR, respW := io.Pipe()
	served := make(chan error, 1)
	go func() {
		var err error
		if h.hello != nil {
			err = Hello(respW, h.parts.Version, h.hello)
		} else {
			err = Serve(context.Background(), reqR, respW, h.parts)
		}
		_ = respW.Close()
		served <- err
	}()
	kill := func() {
		_ = reqR.CloseWithError(errKilled)
		_ = respW.CloseWithError(errKilled)
	}
	h.mu.Lock()
	h.served = append(h.served, served)
	h.killers = append(h.killers, kill)
	h.mu.Unlock()
	var once sync.Once
	var werr error
	return &Conn{Requests: reqW, Responses: respR, Kill: kill, Wait: func() error {
		once.Do(func() { werr = <-served; served <- werr })
		return werr
	}}, nil
}

func (h *harness) client(t *testing.T, opts Options) *Client {
	t.Helper()
	opts.Start = h.start
	opts.Logger = zerolog.Nop()
	c := NewClient(opts)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c.Close(ctx)
	})
	return c
}

func (h *harness) kill(i int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.killers[i]()
}

// waitServed waits for helper i's Serve to return.
func (h *harness) waitServed(t *testing.T, i int) error {
	t.Helper()
	h.mu.Lock()
	ch := h.served[i]
	h.mu.Unlock()
	select {
	case err := <-ch:
		ch <- err
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("helper %d still serving", i)
		return nil
	}
}

func mustRef(t *testing.T, s string) imageref.Ref {
	t.Helper()
	r, err := imageref.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestVerdictCrossesTheBoundary(t *testing.T) {
	want := verdict.Verdict{
		Image: "example.com/app@sha256:" + strings.Repeat("a", 64), Decision: verdict.Allowed, Policy: "p", Mode: verdict.ModeEnforce,
		Reasons: []verdict.Reason{{Rule: verdict.RuleSignature, OK: true, Message: "signed by release"}},
		Signer:  "release (key sha256:12)",
		Scan:    &verdict.ScanSummary{Source: "attestation", Scanner: "trivy", FinishedAt: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), Counts: map[string]int{"high": 1}, Worst: "high"},
	}
	var got imageref.Ref
	h := &harness{parts: Parts{Verifier: fakeVerifier(func(_ context.Context, image imageref.Ref) verdict.Verdict {
		got = image
		return want
	})}}
	c := h.client(t, Options{})
	ref := mustRef(t, want.Image)
	v := c.Verify(context.Background(), ref)
	if !reflect.DeepEqual(v, want) {
		t.Errorf("verdict\n got %+v\nwant %+v", v, want)
	}
	if got != ref {
		t.Errorf("the helper verified %+v, want %+v", got, ref)
	}
}

func TestRolloutResultStepsAndErrorsCrossTheBoundary(t *testing.T) {
	health := &deployer.HealthError{Reason: "exited with code 3", Logs: []string{"boom"}}
	steps := []deployer.Step{
		{Name: "pull", Start: time.Date(2026, 12, 4, 1, 2, 3, 0, time.UTC), Took: 1500 * time.Millisecond, Detail: "pulled"},
		{Name: "health gate", Start: time.Date(2026, 12, 4, 1, 2, 5, 0, time.UTC), Took: time.Second, Err: fmt.Errorf("gate: %w", health)},
	}
	var gotPlan deployer.Plan
	h := &harness{parts: Parts{Deployers: map[deployer.Kind]deployer.Deployer{deployer.KindCompose: fakeDeployer{
		deploy: func(_ context.Context, plan deployer.Plan, progress deployer.Progress) deployer.Result {
			gotPlan = plan
			for _, s := range steps {
				progress(s)
			}
			return deployer.Result{Outcome: deployer.RolledBack, From: "sha256:old", To: "sha256:new", Running: "sha256:old",
				Cause: fmt.Errorf("rolled back: %w", health), FailedDigest: "sha256:new", Logs: []string{"l1"}, Steps: steps}
		},
		rollback: func(_ context.Context, _ deployer.Target, _ string, _ deployer.Progress) deployer.Result {
			return deployer.Result{Outcome: deployer.Failed, Cause: fmt.Errorf("compose: %w", deployer.ErrNoPrevious)}
		},
	}}}}
	c := h.client(t, Options{})
	plan := deployer.Plan{
		Target: deployer.Target{ID: "compose/p/web", Kind: deployer.KindCompose, Name: "p/web", Image: mustRef(t, "example.com/app:1"), Digest: "sha256:old",
			Labels: map[string]string{"a": "b"}, Replicas: 1, Compose: &deployer.ComposeService{Project: "p", Service: "web", ConfigFiles: []string{"/x/compose.yaml"}, Containers: []string{"c1"}}},
		To: mustRef(t, "example.com/app:1@sha256:"+strings.Repeat("b", 64)), AllowDrift: true,
	}
	var seen []deployer.Step
	res := c.Deployer(deployer.KindCompose).Deploy(context.Background(), plan, func(s deployer.Step) { seen = append(seen, s) })
	if !reflect.DeepEqual(gotPlan, plan) {
		t.Errorf("the helper got plan\n%+v\nwant\n%+v", gotPlan, plan)
	}
	if res.Outcome != deployer.RolledBack || res.Running != "sha256:old" || res.FailedDigest != "sha256:new" || !reflect.DeepEqual(res.Logs, []string{"l1"}) {
		t.Errorf("result %+v", res)
	}
	var he *deployer.HealthError
	if !errors.As(res.Cause, &he) || he.Reason != health.Reason || !reflect.DeepEqual(he.Logs, health.Logs) {
		t.Errorf("cause %v does not carry the health error", res.Cause)
	}
	if res.Cause.Error() != "rolled back: health gate: exited with code 3" {
		t.Errorf("cause message %q", res.Cause.Error())
	}
	if len(seen) != 2 || len(res.Steps) != 2 {
		t.Fatalf("progress saw %d steps, the result holds %d; want 2 and 2", len(seen), len(res.Steps))
	}
	for i, s := range seen {
		if s.Name != steps[i].Name || !s.Start.Equal(steps[i].Start) || s.Took != steps[i].Took || s.Detail != steps[i].Detail {
			t.Errorf("step %d = %+v, want %+v", i, s, steps[i])
		}
	}
	if seen[0].Err != nil || seen[1].Err == nil || !errors.As(seen[1].Err, &he) {
		t.Errorf("step errors %v, %v: want nil, then one carrying the health error", seen[0].Err, seen[1].Err)
	}

	rb := c.Deployer(deployer.KindCompose).Rollback(context.Background(), plan.Target, "", nil)
	if !errors.Is(rb.Cause, deployer.ErrNoPrevious) || errors.Is(rb.Cause, deployer.ErrDrift) {
		t.Errorf("rollback cause %v: want ErrNoPrevious (and not ErrDrift)", rb.Cause)
	}
	// A kind the helper has no deployer for fails cleanly, as unsupported.
	sw := c.Deployer(deployer.KindSwarm).Deploy(context.Background(), deployer.Plan{Target: deployer.Target{ID: "swarm/s", Kind: deployer.KindSwarm}}, nil)
	if sw.Outcome != deployer.Failed || !errors.Is(sw.Cause, deployer.ErrUnsupported) || sw.ManualAction {
		t.Errorf("deploy to a kind without deployer: %+v", sw)
	}
	if n := h.starts.Load(); n != 1 {
		t.Errorf("%d helpers started for calls in a row, want 1", n)
	}
}

func TestCancelReachesTheHelperAndTheRolloutEndsThere(t *testing.T) {
	started := make(chan struct{})
	h := &harness{parts: Parts{Deployers: map[deployer.Kind]deployer.Deployer{deployer.KindCompose: fakeDeployer{
		deploy: func(ctx context.Context, _ deployer.Plan, progress deployer.Progress) deployer.Result {
			close(started)
			<-ctx.Done()
			progress(deployer.Step{Name: "rollback"})
			return deployer.Result{Outcome: deployer.RolledBack, Running: "sha256:old", Cause: ctx.Err()}
		},
	}}}}
	c := h.client(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-started; cancel() }()
	var steps []string
	res := c.Deployer(deployer.KindCompose).Deploy(ctx, deployer.Plan{Target: deployer.Target{Kind: deployer.KindCompose}}, func(s deployer.Step) { steps = append(steps, s.Name) })
	if res.Outcome != deployer.RolledBack || !errors.Is(res.Cause, context.Canceled) {
		t.Errorf("cancelled rollout: %+v, want rolled back by the helper with context.Canceled", res)
	}
	if !reflect.DeepEqual(steps, []string{"rollback"}) {
		t.Errorf("steps after the cancel: %v", steps)
	}
}

func TestHelperDyingDuringARolloutIsLost(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	defer close(release)
	h := &harness{parts: Parts{Deployers: map[deployer.Kind]deployer.Deployer{deployer.KindCompose: fakeDeployer{
		deploy: func(context.Context, deployer.Plan, deployer.Progress) deployer.Result {
			close(started)
			<-release
			return deployer.Result{Outcome: deployer.Updated}
		},
	}}}}
	var lost atomic.Value
	c := h.client(t, Options{Lost: func(err error) { lost.Store(err) }})
	go func() { <-started; h.kill(0) }()
	res := c.Deployer(deployer.KindCompose).Deploy(context.Background(), deployer.Plan{Target: deployer.Target{Kind: deployer.KindCompose, Digest: "sha256:old"}, To: mustRef(t, "a/b@sha256:"+strings.Repeat("c", 64))}, nil)
	err, _ := lost.Load().(error)
	if err == nil || !strings.Contains(err.Error(), "lost the helper during the rollout") {
		t.Fatalf("Lost was called with %v, want the lost helper", err)
	}
	if res.Outcome != deployer.Failed || !res.ManualAction || res.From != "sha256:old" {
		t.Errorf("result after a lost helper: %+v (Lost returned), want failed, manual action", res)
	}
	if err := h.waitServed(t, 0); !errors.Is(err, ErrAgentGone) {
		t.Errorf("the killed helper's Serve returned %v, want ErrAgentGone", err)
	}
	// The next call starts a new helper.
	v := c.Verify(context.Background(), mustRef(t, "a/b@sha256:"+strings.Repeat("c", 64)))
	if v.Decision != verdict.Undecided || h.starts.Load() != 2 {
		t.Errorf("after the loss: verdict %s (no verifier: undecided), %d starts (want 2)", v.Decision, h.starts.Load())
	}
}

func TestHelperDyingDuringAVerificationIsUndecided(t *testing.T) {
	started := make(chan struct{})
	h := &harness{parts: Parts{Verifier: fakeVerifier(func(ctx context.Context, image imageref.Ref) verdict.Verdict {
		close(started)
		<-ctx.Done()
		return verdict.Verdict{Decision: verdict.Allowed}
	})}}
	var lost atomic.Bool
	c := h.client(t, Options{Lost: func(error) { lost.Store(true) }})
	go func() { <-started; h.kill(0) }()
	v := c.Verify(context.Background(), mustRef(t, "a/b@sha256:"+strings.Repeat("c", 64)))
	if v.Decision != verdict.Undecided || v.Deployable() || len(v.Reasons) != 1 || !strings.Contains(v.Reasons[0].Message, "could not run the verifier") {
		t.Errorf("verdict after the helper died: %+v, want undecided with the reason", v)
	}
	if lost.Load() {
		t.Error("a verification lost with its helper called Lost; only a rollout's loss is fatal")
	}
}

func TestHelperThatCannotStartFailsCleanly(t *testing.T) {
	h := &harness{hello: errors.New("the config file changed since the agent started"), parts: Parts{Version: "v1"}}
	var lost atomic.Bool
	c := h.client(t, Options{Lost: func(error) { lost.Store(true) }})
	v := c.Verify(context.Background(), mustRef(t, "a/b@sha256:"+strings.Repeat("c", 64)))
	if v.Decision != verdict.Undecided || !strings.Contains(v.Reasons[0].Message, "config file changed") {
		t.Errorf("verdict %+v", v)
	}
	res := c.Deployer(deployer.KindCompose).Deploy(context.Background(), deployer.Plan{}, nil)
	if res.Outcome != deployer.Failed || res.ManualAction || !strings.Contains(res.Cause.Error(), "could not run the deployer: the config file changed") {
		t.Errorf("deploy with a helper that refused: %+v", res)
	}
	if lost.Load() {
		t.Error("Lost called though no rollout reached a helper")
	}
	if err := c.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "config file changed") {
		t.Errorf("Start = %v", err)
	}

	other := &harness{parts: Parts{Version: "v2"}}
	c2 := other.client(t, Options{Version: "v1"})
	if err := c2.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "same build") {
		t.Errorf("Start with a helper of another version = %v", err)
	}
}

func TestIdleHelperExitsAndTheNextCallStartsAnother(t *testing.T) {
	h := &harness{parts: Parts{Verifier: fakeVerifier(func(_ context.Context, image imageref.Ref) verdict.Verdict {
		return verdict.Verdict{Image: image.String(), Decision: verdict.Blocked}
	})}}
	c := h.client(t, Options{Idle: 20 * time.Millisecond})
	ref := mustRef(t, "a/b@sha256:"+strings.Repeat("c", 64))
	if v := c.Verify(context.Background(), ref); v.Decision != verdict.Blocked {
		t.Fatalf("verdict %+v", v)
	}
	if err := h.waitServed(t, 0); err != nil {
		t.Fatalf("the idle helper ended with %v, want a clean exit", err)
	}
	if v := c.Verify(context.Background(), ref); v.Decision != verdict.Blocked {
		t.Fatalf("verdict from the second helper %+v", v)
	}
	if n := h.starts.Load(); n != 2 {
		t.Errorf("%d helpers started, want 2", n)
	}
}

func TestConcurrentCallsShareOneHelper(t *testing.T) {
	var inFlight, most atomic.Int32
	entered := make(chan struct{}, 8)
	gate := make(chan struct{})
	h := &harness{parts: Parts{Verifier: fakeVerifier(func(_ context.Context, image imageref.Ref) verdict.Verdict {
		n := inFlight.Add(1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		entered <- struct{}{}
		<-gate
		inFlight.Add(-1)
		return verdict.Verdict{Image: image.String(), Decision: verdict.Allowed}
	})}}
	c := h.client(t, Options{})
	var wg sync.WaitGroup
	results := make([]verdict.Verdict, 8)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = c.Verify(context.Background(), mustRef(t, fmt.Sprintf("a/b%d@sha256:%s", i, strings.Repeat("c", 64))))
		}()
	}
	deadline := time.After(10 * time.Second)
	for range results {
		select {
		case <-entered:
		case <-deadline:
			t.Fatalf("only %d of 8 calls reached the helper at once", inFlight.Load())
		}
	}
	close(gate)
	wg.Wait()
	for i, v := range results {
		if v.Decision != verdict.Allowed || !strings.Contains(v.Image, fmt.Sprintf("a/b%d@", i)) {
			t.Errorf("call %d got %+v (answers crossed?)", i, v)
		}
	}
	if most.Load() != 8 || h.starts.Load() != 1 {
		t.Errorf("%d calls ran at once in %d helpers, want 8 in 1", most.Load(), h.starts.Load())
	}
}

func TestServeRejectsBadRequests(t *testing.T) {
	reqR, reqW := io.Pipe()
	respR, respW := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- Serve(context.Background(), reqR, respW, Parts{}) }()
	lines := make(chan string, 8)
	go func() {
		b := make([]byte, 64<<10)
		var acc string
		for {
			n, err := respR.Read(b)
			acc += string(b[:n])
			for {
				i := strings.IndexByte(acc, '\n')
				if i < 0 {
					break
				}
				lines <- acc[:i]
				acc = acc[i+1:]
			}
			if err != nil {
				close(lines)
				return
			}
		}
	}()
	next := func() string {
		select {
		case l := <-lines:
			return l
		case <-time.After(10 * time.Second):
			t.Fatal("no answer")
			return ""
		}
	}
	if l := next(); !strings.Contains(l, `"hello"`) {
		t.Fatalf("first line %q, want the greeting", l)
	}
	for _, tc := range []struct{ in, want string }{
		{`{"id":1,"op":"deploy"}`, `cannot run \"deploy\"`},
		{`{"id":2,"op":"format-disk","to":"x"}`, `cannot run \"format-disk\"`},
		{`{"id":0,"op":"verify"}`, `call ID 0 is in use`},
	} {
		_, _ = io.WriteString(reqW, tc.in+"\n")
		if l := next(); !strings.Contains(l, tc.want) {
			t.Errorf("%s → %s, want %s", tc.in, l, tc.want)
		}
	}
	_, _ = io.WriteString(reqW, "not json\n")
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "read a request") {
			t.Errorf("Serve on garbage = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve went on after garbage")
	}
}

func TestDeployerWaitsForTheAgentToHandleEachStep(t *testing.T) {
	var after atomic.Bool
	h := &harness{parts: Parts{Deployers: map[deployer.Kind]deployer.Deployer{deployer.KindCompose: fakeDeployer{
		deploy: func(_ context.Context, _ deployer.Plan, progress deployer.Progress) deployer.Result {
			progress(deployer.Step{Name: "rewrite files"})
			after.Store(true) // the next destructive step would start here
			return deployer.Result{Outcome: deployer.Updated}
		},
	}}}}
	c := h.client(t, Options{})
	res := c.Deployer(deployer.KindCompose).Deploy(context.Background(), deployer.Plan{Target: deployer.Target{Kind: deployer.KindCompose}}, func(deployer.Step) {
		// The agent journals the step here; the helper must not have gone on.
		time.Sleep(50 * time.Millisecond) // a slow journal write
		if after.Load() {
			t.Error("the deployer went on before the agent had handled its step")
		}
	})
	if res.Outcome != deployer.Updated || !after.Load() {
		t.Errorf("result %+v", res)
	}
}
