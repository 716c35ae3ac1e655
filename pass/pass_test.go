package pass

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/image"
	"github.com/moby/moby/api/types/system"
	"github.com/moby/moby/client"
	"github.com/rs/zerolog"

	"github.com/shipwatch/shipwatch/config"
	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/imageref"
	"github.com/shipwatch/shipwatch/notify"
	"github.com/shipwatch/shipwatch/state"
	"github.com/shipwatch/shipwatch/verify/verdict"
	"github.com/shipwatch/shipwatch/watcher"
)

const (
	dOld = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	dNew = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
	dBad = "sha256:3333333333333333333333333333333333333333333333333333333333333333"
)

// fakeEngine serves Compose containers for discovery.
type fakeEngine struct{ services map[string]svc }

type svc struct {
	image, digest string
	labels        map[string]string
}

func (f *fakeEngine) Info(context.Context, client.InfoOptions) (client.SystemInfoResult, error) {
	return client.SystemInfoResult{Info: system.Info{}}, nil
}

func (f *fakeEngine) ContainerList(context.Context, client.ContainerListOptions) (client.ContainerListResult, error) {
	var out []container.Summary
	for name, s := range f.services {
		labels := map[string]string{"com.docker.compose.project": "p", "com.docker.compose.service": name, "com.docker.compose.oneoff": "False"}
		for k, v := range s.labels {
			labels[k] = v
		}
		out = append(out, container.Summary{ID: "c-" + name, Image: s.image, ImageID: "img-" + name, Labels: labels, State: "running"})
	}
	return client.ContainerListResult{Items: out}, nil
}

func (f *fakeEngine) ContainerInspect(_ context.Context, id string, _ client.ContainerInspectOptions) (client.ContainerInspectResult, error) {
	s, ok := f.services[strings.TrimPrefix(id, "c-")]
	if !ok {
		return client.ContainerInspectResult{}, cerrdefs.ErrNotFound
	}
	var r client.ContainerInspectResult
	r.Container.Config = &container.Config{Image: s.image}
	return r, nil
}

func (f *fakeEngine) ImageInspect(_ context.Context, id string, _ ...client.ImageInspectOption) (client.ImageInspectResult, error) {
	s := f.services[strings.TrimPrefix(id, "img-")]
	ref := imageref.MustParse(s.image)
	return client.ImageInspectResult{InspectResponse: image.InspectResponse{RepoDigests: []string{ref.Repo() + "@" + s.digest}}}, nil
}

func (f *fakeEngine) ImageList(context.Context, client.ImageListOptions) (client.ImageListResult, error) {
	var out []image.Summary
	for name, s := range f.services {
		ref := imageref.MustParse(s.image)
		out = append(out, image.Summary{ID: "img-" + name, RepoDigests: []string{ref.Repo() + "@" + s.digest}})
	}
	return client.ImageListResult{Items: out}, nil
}

func (f *fakeEngine) ServiceList(context.Context, client.ServiceListOptions) (client.ServiceListResult, error) {
	return client.ServiceListResult{}, nil
}

func (f *fakeEngine) TaskList(context.Context, client.TaskListOptions) (client.TaskListResult, error) {
	return client.TaskListResult{}, nil
}

// fakeWatcher proposes a fixed candidate per image tag.
type fakeWatcher struct{ next map[string]imageref.Ref }

func (w *fakeWatcher) Check(_ context.Context, reqs []watcher.Request) []watcher.Result {
	out := make([]watcher.Result, len(reqs))
	for i, r := range reqs {
		out[i] = watcher.Result{Key: r.Key, Current: r.Image.WithDigest(r.Running), Reason: "up to date"}
		if c, ok := w.next[r.Image.Path]; ok && c.Digest != r.Running {
			out[i].Candidate, out[i].Change, out[i].Reason = c, watcher.ChangeDigest, "new digest"
			if c.Tag != r.Image.Tag {
				out[i].Change = watcher.ChangeTag
			}
		}
	}
	return out
}

func (w *fakeWatcher) Resolve(_ context.Context, ref imageref.Ref) (string, error) {
	return w.next[ref.Path].Digest, nil
}

// fakeVerifier decides by digest.
type fakeVerifier struct {
	mu        sync.Mutex
	decisions map[string]verdict.Decision
	mode      string
	calls     int
}

func (v *fakeVerifier) Verify(_ context.Context, ref imageref.Ref) verdict.Verdict {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.calls++
	d, ok := v.decisions[ref.Digest]
	if !ok {
		d = verdict.Blocked
	}
	return verdict.Verdict{Image: ref.String(), Decision: d, Policy: "test", Mode: v.mode, Reasons: []verdict.Reason{{Rule: "signature", OK: d == verdict.Allowed, Message: "decided " + string(d)}}}
}

// fakeDeployer returns the configured outcome per digest and records calls.
type fakeDeployer struct {
	mu       sync.Mutex
	outcomes map[string]deployer.Outcome
	order    []string
	journals []int
	store    *state.Store
	eng      *fakeEngine
}

func (d *fakeDeployer) Deploy(_ context.Context, p deployer.Plan, progress deployer.Progress) deployer.Result {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.order = append(d.order, p.Target.Name)
	if d.store != nil {
		js, _ := d.store.Journals()
		d.journals = append(d.journals, len(js))
	}
	if progress != nil {
		progress(deployer.Step{Name: "converge"})
	}
	o, ok := d.outcomes[p.To.Digest]
	if !ok {
		o = deployer.Updated
	}
	res := deployer.Result{Outcome: o, From: p.Target.Digest, To: p.To.Digest, Running: p.To.Digest}
	if o == deployer.Updated && d.eng != nil { // what runs now, for the next discovery
		name := p.Target.Compose.Service
		s := d.eng.services[name]
		s.image, s.digest = p.To.Tagged().String(), p.To.Digest
		d.eng.services[name] = s
	}
	if o == deployer.RolledBack {
		res.Running, res.FailedDigest, res.Cause = p.Target.Digest, p.To.Digest, &deployer.HealthError{Reason: "crash loop"}
	}
	return res
}

func (d *fakeDeployer) Rollback(context.Context, deployer.Target, string, deployer.Progress) deployer.Result {
	return deployer.Result{Outcome: deployer.RolledBack}
}

type fakeNotifier struct {
	mu     sync.Mutex
	events []notify.Event
}

func (n *fakeNotifier) Notify(ev notify.Event) {
	n.mu.Lock()
	n.events = append(n.events, ev)
	n.mu.Unlock()
}

func (n *fakeNotifier) kinds() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var k []string
	for _, e := range n.events {
		k = append(k, e.Kind+":"+e.Target)
	}
	return strings.Join(k, ",")
}

type fixture struct {
	deps  Deps
	eng   *fakeEngine
	w     *fakeWatcher
	v     *fakeVerifier
	d     *fakeDeployer
	n     *fakeNotifier
	store *state.Store
	now   time.Time
}

func newFixture(t *testing.T, cfgYAML string) *fixture {
	t.Helper()
	cfg, err := config.Parse([]byte(cfgYAML), "test.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := state.Open(filepath.Join(t.TempDir(), "state.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &fixture{
		eng:   &fakeEngine{services: map[string]svc{}},
		w:     &fakeWatcher{next: map[string]imageref.Ref{}},
		v:     &fakeVerifier{decisions: map[string]verdict.Decision{}},
		n:     &fakeNotifier{},
		store: st,
		now:   time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC),
	}
	f.d = &fakeDeployer{outcomes: map[string]deployer.Outcome{}, store: st, eng: f.eng}
	f.deps = Deps{
		Config: cfg, Engine: f.eng, Watcher: f.w, Verifier: f.v, Policies: NewPolicies(),
		Deployers: map[deployer.Kind]deployer.Deployer{deployer.KindCompose: f.d},
		Logger:    zerolog.Nop(), Store: st, Notifier: f.n, Locks: &Locks{},
		Now: func() time.Time { return f.now },
	}
	return f
}

// service adds a Compose service p/<name> running repo:tag@dOld.
func (f *fixture) service(name, tag string, labels map[string]string) {
	l := map[string]string{"shipwatch.enable": "true"}
	for k, v := range labels {
		l[k] = v
	}
	f.eng.services[name] = svc{image: "registry.example.com/" + name + ":" + tag, digest: dOld, labels: l}
}

// offer makes the watcher propose tag@digest for service name.
func (f *fixture) offer(name, tag, digest string) {
	f.w.next[name] = imageref.MustParse("registry.example.com/" + name + ":" + tag + "@" + digest)
}

func (f *fixture) run(t *testing.T, opts Options) map[string]TargetResult {
	t.Helper()
	rep, err := Run(context.Background(), f.deps, opts)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]TargetResult{}
	for _, r := range rep.Targets {
		out[r.Target.Compose.Service] = r
	}
	return out
}

func TestCheckModeDeploysNothing(t *testing.T) {
	f := newFixture(t, "")
	f.service("web", "1.4", nil)
	f.service("api", "1.4", nil)
	f.service("db", "16", nil)
	f.service("cache", "7", map[string]string{"shipwatch.freeze": "true"})
	f.offer("web", "1.4", dNew)
	f.offer("api", "1.4", dBad)
	f.offer("cache", "7", dNew)
	f.v.decisions[dNew] = verdict.Allowed
	f.v.decisions[dBad] = verdict.Undecided
	res := f.run(t, Options{Mode: Check})
	want := map[string]deployer.Outcome{"web": deployer.Available, "api": deployer.Failed, "db": deployer.UpToDate, "cache": deployer.UpToDate}
	for name, o := range want {
		if res[name].Outcome != o {
			t.Errorf("%s: outcome %s (%s), want %s", name, res[name].Outcome, res[name].Reason, o)
		}
	}
	if !strings.Contains(res["api"].Reason, "could not decide") {
		t.Errorf("undecided verification must say it will retry: %s", res["api"].Reason)
	}
	if len(f.d.order) != 0 {
		t.Errorf("check deployed %v", f.d.order)
	}
	if hist, _ := f.store.History("", 0); len(hist) != 0 {
		t.Errorf("check wrote history: %+v", hist)
	}
}

func TestAgentDeploysRecordsAndQuarantines(t *testing.T) {
	f := newFixture(t, "")
	f.service("web", "1.4", nil)
	f.service("api", "2.0", nil)
	f.offer("web", "1.4", dNew)
	f.offer("api", "2.0", dBad)
	f.v.decisions[dNew], f.v.decisions[dBad] = verdict.Allowed, verdict.Allowed
	f.d.outcomes[dBad] = deployer.RolledBack
	res := f.run(t, Options{Mode: Agent})
	if res["web"].Outcome != deployer.Updated || res["api"].Outcome != deployer.RolledBack {
		t.Fatalf("outcomes: web %s, api %s", res["web"].Outcome, res["api"].Outcome)
	}
	for i, n := range f.d.journals {
		if n != 1 {
			t.Errorf("deploy %d ran with %d journals, want the rollout journaled before it starts", i, n)
		}
	}
	if js, _ := f.store.Journals(); len(js) != 0 {
		t.Errorf("journals left after the pass: %+v", js)
	}
	if _, ok, _ := f.store.IsQuarantined("compose/p/api", dBad); !ok {
		t.Errorf("rolled-back digest not quarantined")
	}
	if m, ok, _ := f.store.HighWater("compose/p/web"); !ok || m.Digest != dNew {
		t.Errorf("high-water mark = %+v, want %s", m, dNew)
	}
	if got := f.n.kinds(); got != "updated:compose/p/web,rolled-back:compose/p/api" && got != "rolled-back:compose/p/api,updated:compose/p/web" {
		t.Errorf("notifications = %s", got)
	}

	// Next pass: the quarantined digest is refused before verification.
	calls := f.v.calls
	res = f.run(t, Options{Mode: Agent})
	if res["api"].Outcome != deployer.Blocked || !strings.Contains(res["api"].Reason, "quarantined") {
		t.Errorf("api on the next pass: %s (%s), want blocked: quarantined", res["api"].Outcome, res["api"].Reason)
	}
	if f.v.calls != calls {
		t.Errorf("a quarantined digest was verified again (%d calls)", f.v.calls-calls)
	}
	// By hand, the operator may deploy it anyway.
	f.d.outcomes[dBad] = deployer.Updated
	res = f.run(t, Options{Mode: Rollout, Targets: []string{"p/api"}})
	if res["api"].Outcome != deployer.Updated {
		t.Errorf("manual rollout of a quarantined digest: %s (%s)", res["api"].Outcome, res["api"].Reason)
	}
}

func TestNoSilentDowngrade(t *testing.T) {
	f := newFixture(t, "")
	f.service("web", "1.4.0", nil)
	f.v.decisions[dNew] = verdict.Allowed
	if err := f.store.SetHighWater("compose/p/web", state.Mark{Tag: "1.5.0", Digest: dBad}); err != nil {
		t.Fatal(err)
	}
	f.offer("web", "1.4.1", dNew) // newer than what runs, older than what ran
	res := f.run(t, Options{Mode: Agent})
	if res["web"].Outcome != deployer.Blocked || !strings.Contains(res["web"].Reason, "older than 1.5.0") {
		t.Errorf("older than the high-water mark: %s (%s), want blocked", res["web"].Outcome, res["web"].Reason)
	}
	// A tag moved back to a digest the target already replaced.
	f2 := newFixture(t, "")
	f2.service("web", "1.4", nil)
	f2.v.decisions[dNew] = verdict.Allowed
	f2.store.SetHighWater("compose/p/web", state.Mark{Tag: "1.4", Digest: dNew})
	f2.store.SetHighWater("compose/p/web", state.Mark{Tag: "1.4", Digest: dOld})
	f2.offer("web", "1.4", dNew)
	res = f2.run(t, Options{Mode: Agent})
	if res["web"].Outcome != deployer.Blocked || !strings.Contains(res["web"].Reason, "moved back") {
		t.Errorf("tag moved back to a superseded digest: %s (%s), want blocked", res["web"].Outcome, res["web"].Reason)
	}
}

func TestApprovalsLevelsWindowsCooldown(t *testing.T) {
	f := newFixture(t, `
targets:
  - compose: p/manual
    policy: {approval: manual}
  - compose: p/major
    policy: {update: semver, semver: ">=1", levels: {major: never, minor: auto}}
  - compose: p/window
    policy: {windows: [{cron: "0 0 2 * * *", duration: 1h}]}
  - compose: p/cool
    policy: {cooldown: 2h}
`)
	for _, name := range []string{"manual", "window", "cool"} {
		f.service(name, "1.0", nil)
		f.offer(name, "1.0", dNew)
	}
	f.service("major", "1.2.0", nil)
	f.offer("major", "2.0.0", dNew)
	f.v.decisions[dNew] = verdict.Allowed

	res := f.run(t, Options{Mode: Agent})
	for name, want := range map[string]string{"manual": "waits for approval", "major": "never applied automatically", "window": "outside the maintenance window", "cool": "cooldown until"} {
		if res[name].Outcome != deployer.Available || !strings.Contains(res[name].Reason, want) {
			t.Errorf("%s: %s (%s), want available: %s", name, res[name].Outcome, res[name].Reason, want)
		}
	}
	if len(f.d.order) != 0 {
		t.Fatalf("deployed %v", f.d.order)
	}
	if !strings.Contains(f.n.kinds(), "approval-needed:compose/p/manual") {
		t.Errorf("no approval-needed notification: %s", f.n.kinds())
	}

	// Approve, move into the window, let the cooldown pass.
	if _, err := f.store.Approve("compose/p/manual", "", "ops"); err != nil {
		t.Fatal(err)
	}
	f.now = time.Date(2026, 11, 28, 2, 30, 0, 0, time.UTC)
	res = f.run(t, Options{Mode: Agent})
	for _, name := range []string{"manual", "window", "cool"} {
		if res[name].Outcome != deployer.Updated {
			t.Errorf("%s after its gate opened: %s (%s), want updated", name, res[name].Outcome, res[name].Reason)
		}
	}
	if res["major"].Outcome != deployer.Available {
		t.Errorf("major: %s, want still available (never automatic)", res["major"].Outcome)
	}
	if _, ok, _ := f.store.Approval("compose/p/manual"); ok {
		t.Errorf("the approval was not consumed by the rollout")
	}
}

func TestWavesAndDependencies(t *testing.T) {
	f := newFixture(t, `
targets:
  - compose: p/canary
    policy: {wave: 0}
  - compose: "p/*"
    policy: {wave: 1}
`)
	f.service("canary", "1", nil)
	f.service("web", "1", map[string]string{"com.docker.compose.depends_on": "db:service_healthy:false"})
	f.service("db", "1", nil)
	for _, n := range []string{"canary", "web", "db"} {
		f.offer(n, "1", dNew)
	}
	f.v.decisions[dNew] = verdict.Allowed
	f.run(t, Options{Mode: Agent})
	if got := strings.Join(f.d.order, ","); got != "p/canary,p/db,p/web" {
		t.Errorf("rollout order = %s, want the canary wave first, then db before web (depends_on)", got)
	}

	g := newFixture(t, "targets:\n  - compose: p/canary\n    policy: {wave: 0}\n  - compose: \"p/*\"\n    policy: {wave: 1}\n")
	g.service("canary", "1", nil)
	g.service("web", "1", nil)
	g.offer("canary", "1", dBad)
	g.offer("web", "1", dNew)
	g.v.decisions[dNew], g.v.decisions[dBad] = verdict.Allowed, verdict.Allowed
	g.d.outcomes[dBad] = deployer.RolledBack
	res := g.run(t, Options{Mode: Agent})
	if res["web"].Outcome != deployer.Available || !strings.Contains(res["web"].Reason, "wave 0 failed") {
		t.Errorf("web after a failed canary: %s (%s), want held back", res["web"].Outcome, res["web"].Reason)
	}
}

func TestWarnModeLetsBlockedThrough(t *testing.T) {
	f := newFixture(t, "")
	f.service("web", "1", nil)
	f.offer("web", "1", dNew)
	f.v.mode = verdict.ModeWarn
	f.v.decisions[dNew] = verdict.Blocked
	res := f.run(t, Options{Mode: Agent})
	if res["web"].Outcome != deployer.Updated || !strings.Contains(res["web"].Reason, "warn mode") {
		t.Errorf("warn mode: %s (%s), want updated with the warning in the reason", res["web"].Outcome, res["web"].Reason)
	}
}

func TestRepeatedBlockIsWrittenAndNotifiedOnce(t *testing.T) {
	f := newFixture(t, "")
	f.service("web", "1", nil)
	f.offer("web", "1", dBad)
	for range 3 {
		f.run(t, Options{Mode: Agent})
	}
	hist, _ := f.store.History("", 0)
	if len(hist) != 1 || hist[0].Outcome != "blocked" {
		t.Errorf("history after three identical passes = %+v, want one blocked entry", hist)
	}
	if got := f.n.kinds(); got != "blocked:compose/p/web" {
		t.Errorf("notifications = %q, want one blocked", got)
	}
}

func TestSelection(t *testing.T) {
	f := newFixture(t, "")
	f.service("web", "1", nil)
	f.eng.services["off"] = svc{image: "registry.example.com/off:1", digest: dOld, labels: map[string]string{}}
	f.eng.services["bad"] = svc{image: "registry.example.com/bad:1", digest: dOld, labels: map[string]string{"shipwatch.enable": "true", "shipwatch.semvr": "^1"}}
	rep, err := Run(context.Background(), f.deps, Options{Mode: Check})
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]deployer.Outcome{}
	for _, r := range rep.Targets {
		ids[r.Target.ID] = r.Outcome
	}
	if _, ok := ids["compose/p/off"]; ok || len(rep.Ignored) != 1 {
		t.Errorf("a target that is not opted in was worked on: %v, ignored %v", ids, rep.Ignored)
	}
	if ids["compose/p/bad"] != deployer.Failed {
		t.Errorf("a target with a mistyped label must fail with the reason, got %v", ids)
	}
	// Named on the command line, a target is worked on even when not opted in.
	rep, err = Run(context.Background(), f.deps, Options{Mode: Check, Targets: []string{"p/off"}})
	if err != nil || len(rep.Targets) != 1 {
		t.Errorf("check p/off: %v, %d targets", err, len(rep.Targets))
	}
	if _, err := Run(context.Background(), f.deps, Options{Mode: Check, Targets: []string{"nope/*"}}); err == nil {
		t.Errorf("a selection that matches nothing must be an error")
	}
	if _, err := Run(context.Background(), f.deps, Options{Mode: Rollout, Targets: []string{"p/*"}, To: "2"}); err == nil {
		t.Errorf("--to with several targets must be an error")
	}
}

func TestInWindow(t *testing.T) {
	w := []config.Window{{Cron: "0 0 2 * * *", Duration: config.Duration(time.Hour)}}
	at := func(h, m int) time.Time { return time.Date(2026, 1, 1, h, m, 0, 0, time.UTC) }
	for _, tt := range []struct {
		now  time.Time
		open bool
	}{{at(1, 59), false}, {at(2, 0), true}, {at(2, 59), true}, {at(3, 0), false}, {at(3, 1), false}} {
		open, next := inWindow(w, tt.now)
		if open != tt.open {
			t.Errorf("inWindow at %s = %v, want %v", tt.now.Format("15:04"), open, tt.open)
		}
		if !open && !next.After(tt.now) {
			t.Errorf("next opening %s is not after %s", next, tt.now)
		}
	}
	if open, _ := inWindow(nil, at(12, 0)); !open {
		t.Errorf("no windows must mean always open")
	}
}

func TestApprovalMode(t *testing.T) {
	pol := config.Effective{Approval: "auto", Levels: config.Levels{Patch: "auto", Minor: "manual", Major: "never"}}
	for _, tt := range []struct{ from, to, want string }{
		{"1.2.3", "1.2.4", "auto"}, {"1.2.3", "1.3.0", "manual"}, {"1.2.3", "2.0.0", "never"},
		{"v1.2", "v1.3", "manual"}, {"latest", "latest", "auto"}, {"1.4", "1.4", "auto"},
	} {
		if got := approvalMode(pol, tt.from, tt.to); got != tt.want {
			t.Errorf("approvalMode(%s → %s) = %s, want %s", tt.from, tt.to, got, tt.want)
		}
	}
	pol.Approval = "manual"
	if got := approvalMode(pol, "1.2.3", "1.2.4"); got != "manual" {
		t.Errorf("approval manual must win over a patch auto: %s", got)
	}
}

// barrierDeployer proves that two rollouts overlap: each waits (bounded) for
// the other to have started.
type barrierDeployer struct {
	fakeDeployer
	entered chan string
	both    chan struct{}
	once    sync.Once
}

func (d *barrierDeployer) Deploy(ctx context.Context, p deployer.Plan, progress deployer.Progress) deployer.Result {
	d.entered <- p.Target.Name
	if len(d.entered) == cap(d.entered) {
		d.once.Do(func() { close(d.both) })
	}
	select {
	case <-d.both:
	case <-time.After(5 * time.Second):
		return deployer.Result{Outcome: deployer.Failed, Cause: context.DeadlineExceeded}
	}
	return d.fakeDeployer.Deploy(ctx, p, progress)
}

func TestProjectsRollOutInParallel(t *testing.T) {
	f := newFixture(t, "")
	f.service("a", "1", map[string]string{"com.docker.compose.project": "p1"})
	f.service("b", "1", map[string]string{"com.docker.compose.project": "p2"})
	f.offer("a", "1", dNew)
	f.offer("b", "1", dNew)
	f.v.decisions[dNew] = verdict.Allowed
	bd := &barrierDeployer{fakeDeployer: fakeDeployer{outcomes: map[string]deployer.Outcome{}}, entered: make(chan string, 2), both: make(chan struct{})}
	f.deps.Deployers[deployer.KindCompose] = bd
	rep, err := Run(context.Background(), f.deps, Options{Mode: Agent})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Targets) != 2 {
		t.Fatalf("%d targets, want 2", len(rep.Targets))
	}
	for _, r := range rep.Targets {
		if r.Outcome != deployer.Updated {
			t.Errorf("%s: %s (%s): the rollouts of two projects did not overlap", r.Target.ID, r.Outcome, r.Reason)
		}
	}
}

func TestFailedRolloutIsRetriedWithBackoff(t *testing.T) {
	f := newFixture(t, "")
	f.service("web", "1", nil)
	f.offer("web", "1", dNew)
	f.v.decisions[dNew] = verdict.Allowed
	f.d.outcomes[dNew] = deployer.Failed // e.g. the pull failed: not the image's fault
	if res := f.run(t, Options{Mode: Agent}); res["web"].Outcome != deployer.Failed {
		t.Fatalf("first attempt: %s", res["web"].Outcome)
	}
	if _, q, _ := f.store.IsQuarantined("compose/p/web", dNew); q {
		t.Fatalf("a failure that is not the image's must not quarantine it")
	}
	for _, step := range []struct {
		after    time.Duration
		deployed bool
	}{{10 * time.Second, false}, {61 * time.Second, true}, {61 * time.Second, false}, {2 * time.Minute, true}} {
		f.now = f.now.Add(step.after)
		before := len(f.d.order)
		res := f.run(t, Options{Mode: Agent})
		if got := len(f.d.order) > before; got != step.deployed {
			t.Errorf("+%s: deployed=%v (%s: %s), want %v", step.after, got, res["web"].Outcome, res["web"].Reason, step.deployed)
		}
		if !step.deployed && (res["web"].Outcome != deployer.Available || !strings.Contains(res["web"].Reason, "next attempt after")) {
			t.Errorf("+%s: %s (%s), want available until the next attempt", step.after, res["web"].Outcome, res["web"].Reason)
		}
	}
	// By hand, an operator retries at once.
	before := len(f.d.order)
	f.run(t, Options{Mode: Rollout, Targets: []string{"p/web"}})
	if len(f.d.order) == before {
		t.Errorf("a manual rollout waited for the agent's backoff")
	}
}

func TestRetryBackoffIsConfigurable(t *testing.T) {
	f := newFixture(t, "rollout: {retry_backoff: 10s, retry_backoff_max: 30s}\n")
	f.service("web", "1", nil)
	f.offer("web", "1", dNew)
	f.v.decisions[dNew] = verdict.Allowed
	f.d.outcomes[dNew] = deployer.Failed
	f.run(t, Options{Mode: Agent})
	// Waits of 10s, 20s, then 30s (the maximum) between attempts.
	for _, step := range []struct {
		after    time.Duration
		deployed bool
	}{{9 * time.Second, false}, {time.Second, true}, {19 * time.Second, false}, {time.Second, true}, {29 * time.Second, false}, {time.Second, true}, {30 * time.Second, true}} {
		f.now = f.now.Add(step.after)
		before := len(f.d.order)
		res := f.run(t, Options{Mode: Agent})
		if got := len(f.d.order) > before; got != step.deployed {
			t.Errorf("+%s: deployed=%v (%s: %s), want %v", step.after, got, res["web"].Outcome, res["web"].Reason, step.deployed)
		}
	}
}
