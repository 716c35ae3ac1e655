package compose_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/deployer/compose"
	"github.com/shipwatch/shipwatch/internal/testenv"
)

// rolledBack checks the state after a failed update was undone: the old
// digest runs and serves, the files are byte for byte what they were, no
// backup is left, and `docker compose up -d` recreates nothing.
func (e *env) rolledBack(p *testenv.ComposeProject, res deployer.Result, oldDigest, oldVersion string, files map[string]string) {
	e.t.Helper()
	if res.Outcome != deployer.RolledBack {
		e.t.Fatalf("outcome = %s (%v), want %s", res.Outcome, res.Cause, deployer.RolledBack)
	}
	if res.ManualAction {
		e.t.Errorf("manual action requested after a successful restore")
	}
	if got := e.runningDigest(p, "web"); got != oldDigest {
		e.t.Errorf("running digest = %s, want the old %s", got, oldDigest)
	}
	if res.Running != oldDigest {
		e.t.Errorf("result running = %s, want %s", res.Running, oldDigest)
	}
	if got := e.serving(p, "web"); got != "testapp "+oldVersion {
		e.t.Errorf("serving %q, want testapp %s", got, oldVersion)
	}
	for name, want := range files {
		if got := readFile(e.t, p, name); got != want {
			e.t.Errorf("%s not restored:\n%s\nwant\n%s", name, got, want)
		}
	}
	assertNoBackups(e.t, p.Dir)
	e.upChangesNothing(p)
}

func healthReason(t *testing.T, res deployer.Result) string {
	t.Helper()
	var he *deployer.HealthError
	if !errors.As(res.Cause, &he) {
		t.Fatalf("cause = %v, want a *deployer.HealthError", res.Cause)
	}
	return he.Reason
}

// A crash-looping new version is rolled back: old digest running again,
// compose file restored, the failed digest reported for quarantine with the
// container's last log lines.
func TestDeployCrashLoopRollsBack(t *testing.T) {
	t.Parallel()
	e := newEnv(t, compose.Options{})
	v1 := e.push("1.0.0", testenv.App{Version: "1.0.0"})
	bad := e.push("1.1.0", testenv.App{Version: "1.1.0", Mode: "crash", CrashAfter: 200 * time.Millisecond})
	file := "# web\n" + simpleCompose(e.ref("1.0.0"), "    restart: unless-stopped\n")
	p := e.project(map[string]string{"compose.yaml": file})

	res := e.deploy(deployer.Plan{Target: e.target(p, "web"), To: bad})

	e.rolledBack(p, res, v1.Digest, "1.0.0", map[string]string{"compose.yaml": file})
	reason := healthReason(t, res)
	if !strings.Contains(reason, "crash loop") && !strings.Contains(reason, "exited with code 1") {
		t.Errorf("reason = %q, want a crash loop or exit", reason)
	}
	if res.FailedDigest != bad.Digest {
		t.Errorf("failed digest = %q, want %s", res.FailedDigest, bad.Digest)
	}
	if !slices.ContainsFunc(res.Logs, func(l string) bool { return strings.Contains(l, "simulated crash") }) {
		t.Errorf("logs %q do not show the crash", res.Logs)
	}
	want := []string{"rollback: restore files", "rollback: restore image tag", "rollback: converge", "rollback: health gate"}
	if got := stepNames(res); !slices.Equal(got[len(got)-4:], want) {
		t.Errorf("last steps = %v, want %v", got, want)
	}
}

func TestDeployUnhealthyRollsBack(t *testing.T) {
	t.Parallel()
	e := newEnv(t, compose.Options{})
	v1 := e.push("1.0", testenv.App{Version: "1.0.0", Health: fastHealth})
	file := simpleCompose(e.ref("1.0"), "")
	p := e.project(map[string]string{"compose.yaml": file})
	// Same tag: the tag is moved to the bad image and must be moved back.
	bad := e.push("1.0", testenv.App{Version: "1.0.1", Mode: "unhealthy", Health: fastHealth})

	res := e.deploy(deployer.Plan{Target: e.target(p, "web"), To: bad})

	e.rolledBack(p, res, v1.Digest, "1.0.0", map[string]string{"compose.yaml": file})
	if reason := healthReason(t, res); !strings.HasPrefix(reason, "unhealthy") {
		t.Errorf("reason = %q, want unhealthy", reason)
	}
	if res.FailedDigest != bad.Digest {
		t.Errorf("failed digest = %q, want %s", res.FailedDigest, bad.Digest)
	}
	ctx := testenv.Context(t, 30*time.Second)
	img, err := e.cli.ImageInspect(ctx, e.ref("1.0"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(img.RepoDigests, e.reg.Host+"/demo/app@"+v1.Digest) {
		t.Errorf("tag 1.0 points at %v after the rollback, want %s", img.RepoDigests, v1.Digest)
	}
}

// A version that is slow to become healthy but does so within its
// start_period must not be rolled back.
func TestDeploySlowStartWithinStartPeriod(t *testing.T) {
	t.Parallel()
	e := newEnv(t, compose.Options{})
	e.push("1.0.0", testenv.App{Version: "1.0.0", Health: fastHealth})
	slowHealth := &testenv.Health{Interval: 250 * time.Millisecond, Timeout: time.Second, StartPeriod: 8 * time.Second, Retries: 2}
	v2 := e.push("1.1.0", testenv.App{Version: "1.1.0", Mode: "slow", Slow: 3 * time.Second, Health: slowHealth})
	file := simpleCompose(e.ref("1.0.0"), "")
	p := e.project(map[string]string{"compose.yaml": file})

	res := e.deploy(deployer.Plan{Target: e.target(p, "web"), To: v2})

	if res.Outcome != deployer.Updated {
		t.Fatalf("outcome = %s (%v), want %s", res.Outcome, res.Cause, deployer.Updated)
	}
	if took := res.Steps[slices.IndexFunc(res.Steps, func(s deployer.Step) bool { return s.Name == "health gate" })].Took; took < 2*time.Second {
		t.Errorf("health gate took %s, want at least the app's 3s of slowness minus startup", took)
	}
	if got := e.runningDigest(p, "web"); got != v2.Digest {
		t.Errorf("running digest = %s, want %s", got, v2.Digest)
	}
	if got, want := readFile(t, p, "compose.yaml"), strings.Replace(file, ":1.0.0\n", ":1.1.0\n", 1); got != want {
		t.Errorf("compose.yaml =\n%s\nwant\n%s", got, want)
	}
	e.upChangesNothing(p)
}

// A container that stays "starting" past the configured deadline fails
// the gate as "never became healthy".
func TestDeployNeverHealthyRollsBack(t *testing.T) {
	t.Parallel()
	e := newEnv(t, compose.Options{HealthTimeout: 3 * time.Second})
	v1 := e.push("1.0.0", testenv.App{Version: "1.0.0", Health: fastHealth})
	longStart := &testenv.Health{Interval: 250 * time.Millisecond, Timeout: time.Second, StartPeriod: 5 * time.Minute, Retries: 3}
	bad := e.push("1.1.0", testenv.App{Version: "1.1.0", Mode: "slow", Slow: time.Hour, Health: longStart})
	file := simpleCompose(e.ref("1.0.0"), "")
	p := e.project(map[string]string{"compose.yaml": file})

	res := e.deploy(deployer.Plan{Target: e.target(p, "web"), To: bad})

	e.rolledBack(p, res, v1.Digest, "1.0.0", map[string]string{"compose.yaml": file})
	if reason := healthReason(t, res); !strings.HasPrefix(reason, "never became healthy within 3s") {
		t.Errorf("reason = %q, want never became healthy within 3s", reason)
	}
}

// A rollout whose caller gives up during the health gate is still
// finished: the deployer rolls back under its own deadline.
func TestDeployCancelledDuringGateStillRollsBack(t *testing.T) {
	t.Parallel()
	e := newEnv(t, compose.Options{})
	v1 := e.push("1.0.0", testenv.App{Version: "1.0.0", Health: fastHealth})
	longStart := &testenv.Health{Interval: 250 * time.Millisecond, Timeout: time.Second, StartPeriod: 5 * time.Minute, Retries: 3}
	slow := e.push("1.1.0", testenv.App{Version: "1.1.0", Mode: "slow", Slow: time.Hour, Health: longStart})
	file := simpleCompose(e.ref("1.0.0"), "")
	p := e.project(map[string]string{"compose.yaml": file})
	target := e.target(p, "web")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res := e.dep.Deploy(ctx, deployer.Plan{Target: target, To: slow}, func(s deployer.Step) {
		if s.Name == "converge" {
			time.AfterFunc(time.Second, cancel)
		}
	})

	e.rolledBack(p, res, v1.Digest, "1.0.0", map[string]string{"compose.yaml": file})
	if !errors.Is(res.Cause, context.Canceled) {
		t.Errorf("cause = %v, want context.Canceled", res.Cause)
	}
	if res.FailedDigest != "" {
		t.Errorf("failed digest = %s, want none: the image did not fail, the caller gave up", res.FailedDigest)
	}
}

// When the restore fails too, the outcome is failed with manual action
// needed, and the deployer does not try again.
func TestDeployRestoreFailureNeedsManualAction(t *testing.T) {
	t.Parallel()
	var failTags *faultEngine
	e := newEnvWrapped(t, compose.Options{}, func(inner compose.Engine) compose.Engine {
		failTags = &faultEngine{Engine: inner}
		return failTags
	})
	e.push("1.0", testenv.App{Version: "1.0.0", Health: fastHealth})
	p := e.project(map[string]string{"compose.yaml": simpleCompose(e.ref("1.0"), "")})
	bad := e.push("1.0", testenv.App{Version: "1.0.1", Mode: "unhealthy", Health: fastHealth})
	// The first two tags (rollback tag, new image) work; moving the tag
	// back fails.
	failTags.tagErrAfter(2, errors.New("simulated engine failure while tagging"))

	res := e.deploy(deployer.Plan{Target: e.target(p, "web"), To: bad})

	if res.Outcome != deployer.Failed || !res.ManualAction {
		t.Fatalf("outcome = %s manual=%v (%v), want failed with manual action", res.Outcome, res.ManualAction, res.Cause)
	}
	if res.FailedDigest != bad.Digest {
		t.Errorf("failed digest = %q, want %s", res.FailedDigest, bad.Digest)
	}
	if !strings.Contains(res.Cause.Error(), "unhealthy") || !strings.Contains(res.Cause.Error(), "simulated engine failure") {
		t.Errorf("cause %q does not say both what failed and what the restore hit", res.Cause)
	}
	if n := countSteps(res, "rollback: restore image tag"); n != 1 {
		t.Errorf("restore attempted %d times, want exactly 1 (never loop)", n)
	}
	if n := countSteps(res, "rollback: converge"); n != 0 {
		t.Errorf("converged %d times after the restore failed, want 0", n)
	}
}

func countSteps(res deployer.Result, name string) int {
	n := 0
	for _, s := range res.Steps {
		if s.Name == name {
			n++
		}
	}
	return n
}

// faultEngine is the real engine with faults injected at its boundary.
type faultEngine struct {
	compose.Engine
	pullErr         error    // returned by the pull stream (e.g. a full disk)
	repoDigests     []string // replaces the RepoDigests of images inspected by digest
	tags, tagsOK    int
	tagErr          error
	pullsAttempted  int
	inspectByDigest int
}

func (f *faultEngine) tagErrAfter(n int, err error) { f.tagsOK, f.tagErr = n, err }

func (f *faultEngine) ImagePull(ctx context.Context, ref string, o client.ImagePullOptions) (client.ImagePullResponse, error) {
	f.pullsAttempted++
	if f.pullErr != nil {
		return failingPull{err: f.pullErr}, nil
	}
	return f.Engine.ImagePull(ctx, ref, o)
}

func (f *faultEngine) ImageInspect(ctx context.Context, ref string, o ...client.ImageInspectOption) (client.ImageInspectResult, error) {
	res, err := f.Engine.ImageInspect(ctx, ref, o...)
	if err == nil && f.repoDigests != nil && strings.Contains(ref, "@sha256:") {
		f.inspectByDigest++
		res.RepoDigests = f.repoDigests
	}
	return res, err
}

func (f *faultEngine) ImageTag(ctx context.Context, o client.ImageTagOptions) (client.ImageTagResult, error) {
	f.tags++
	if f.tagErr != nil && f.tags > f.tagsOK {
		return client.ImageTagResult{}, f.tagErr
	}
	return f.Engine.ImageTag(ctx, o)
}
