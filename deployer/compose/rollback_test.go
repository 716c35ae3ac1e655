package compose_test

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/compose/v5/pkg/api"
	"github.com/moby/moby/client"

	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/deployer/compose"
	"github.com/shipwatch/shipwatch/internal/testenv"
)

func (e *env) rollback(target deployer.Target, to string) deployer.Result {
	e.t.Helper()
	ctx := testenv.Context(e.t, 3*time.Minute)
	res := e.dep.Rollback(ctx, target, to, func(s deployer.Step) {
		e.t.Logf("step %-28s %8s %s %v", s.Name, s.Took.Round(time.Millisecond), s.Detail, errOrNil(s.Err))
	})
	e.t.Logf("outcome %s cause=%v", res.Outcome, res.Cause)
	return res
}

// After a successful semver update, Rollback puts the previous version and
// the previous compose file back, from the local rollback image alone (the
// registry is down), and a second Rollback goes forward again.
func TestRollbackAfterUpdate(t *testing.T) {
	t.Parallel()
	e := newEnv(t, compose.Options{})
	v1 := e.push("1.0.0", testenv.App{Version: "1.0.0", Health: fastHealth})
	v2 := e.push("1.1.0", testenv.App{Version: "1.1.0", Health: fastHealth})
	file := "services:\n  web:\n    image: " + e.ref("1.0.0") + " # app\n    ports: [\"127.0.0.1::8080\"]\n"
	p := e.project(map[string]string{"compose.yaml": file})
	if res := e.deploy(deployer.Plan{Target: e.target(p, "web"), To: v2}); res.Outcome != deployer.Updated {
		t.Fatalf("update: outcome = %s (%v)", res.Outcome, res.Cause)
	}
	e.reg.Close() // the rollback must not need the registry

	res := e.rollback(discovered(t, e, "compose/"+p.Name+"/web"), "")

	if res.Outcome != deployer.RolledBack || res.Cause != nil {
		t.Fatalf("outcome = %s (%v), want %s", res.Outcome, res.Cause, deployer.RolledBack)
	}
	if res.From != v2.Digest || res.To != v1.Digest || res.Running != v1.Digest {
		t.Errorf("from/to/running = %s/%s/%s, want %s/%s/%s", res.From, res.To, res.Running, v2.Digest, v1.Digest, v1.Digest)
	}
	if got := e.runningDigest(p, "web"); got != v1.Digest {
		t.Errorf("running digest = %s, want %s", got, v1.Digest)
	}
	if got := readFile(t, p, "compose.yaml"); got != file {
		t.Errorf("compose.yaml =\n%s\nwant\n%s", got, file)
	}
	if got := e.serving(p, "web"); got != "testapp 1.0.0" {
		t.Errorf("serving %q, want testapp 1.0.0", got)
	}
	if strings.Contains(strings.Join(stepNames(res), ","), "pull") {
		t.Errorf("steps %v pulled; the rollback image is local", stepNames(res))
	}
	e.upChangesNothing(p)

	// The rollback recorded what it replaced: rolling back again goes to 1.1.0.
	res = e.rollback(e.target(p, "web"), "")
	if res.Outcome != deployer.RolledBack || e.runningDigest(p, "web") != v2.Digest {
		t.Fatalf("second rollback: outcome = %s (%v), running %s, want %s", res.Outcome, res.Cause, e.runningDigest(p, "web"), v2.Digest)
	}
	if got, want := readFile(t, p, "compose.yaml"), strings.Replace(file, ":1.0.0 ", ":1.1.0 ", 1); got != want {
		t.Errorf("compose.yaml =\n%s\nwant\n%s", got, want)
	}
	e.upChangesNothing(p)
}

// Rollback to an explicit digest pulls it when it is not local.
func TestRollbackToDigest(t *testing.T) {
	t.Parallel()
	e := newEnv(t, compose.Options{})
	v0 := e.push("0.9", testenv.App{Version: "0.9.0"})
	e.push("1.0", testenv.App{Version: "1.0.0"})
	p := e.project(map[string]string{"compose.yaml": simpleCompose(e.ref("1.0"), "")})

	res := e.rollback(e.target(p, "web"), v0.String())

	if res.Outcome != deployer.RolledBack {
		t.Fatalf("outcome = %s (%v), want %s", res.Outcome, res.Cause, deployer.RolledBack)
	}
	if got := e.runningDigest(p, "web"); got != v0.Digest {
		t.Errorf("running digest = %s, want %s", got, v0.Digest)
	}
	if got := readFile(t, p, "compose.yaml"); !strings.Contains(got, "demo/app:0.9\n") {
		t.Errorf("compose.yaml does not name 0.9:\n%s", got)
	}
	e.upChangesNothing(p)
}

// Containers never touched by shipwatch have no recorded previous version.
func TestRollbackWithoutHistory(t *testing.T) {
	t.Parallel()
	e := newEnv(t, compose.Options{})
	e.push("1.0", testenv.App{Version: "1.0.0"})
	p := e.project(map[string]string{"compose.yaml": simpleCompose(e.ref("1.0"), "")})
	before := e.snapshot(p, "compose.yaml")

	res := e.rollback(e.target(p, "web"), "")

	e.untouched(p, before, res)
	if !errors.Is(res.Cause, deployer.ErrNoPrevious) {
		t.Errorf("cause = %v, want ErrNoPrevious", res.Cause)
	}
}

// With CleanupOld, a success removes the image the previous success
// replaced, never the one it replaced itself (the rollback image).
func TestCleanupOldKeepsRollbackImage(t *testing.T) {
	t.Parallel()
	e := newEnv(t, compose.Options{CleanupOld: true})
	v1 := e.push("1.0.0", testenv.App{Version: "1.0.0"})
	v2 := e.push("1.1.0", testenv.App{Version: "1.1.0"})
	v3 := e.push("1.2.0", testenv.App{Version: "1.2.0"})
	p := e.project(map[string]string{"compose.yaml": simpleCompose(e.ref("1.0.0"), "")})
	ctx := testenv.Context(t, time.Minute)
	imageOf := func(digest string) string {
		img, err := e.cli.ImageInspect(ctx, e.reg.Host+"/demo/app@"+digest)
		if err != nil {
			return ""
		}
		return img.ID
	}
	v1ID := imageOf(v1.Digest)

	if res := e.deploy(deployer.Plan{Target: e.target(p, "web"), To: v2}); res.Outcome != deployer.Updated {
		t.Fatalf("first update: %s (%v)", res.Outcome, res.Cause)
	}
	if imageOf(v1.Digest) != v1ID {
		t.Fatalf("1.0.0 removed by the update that replaced it: it is the rollback image")
	}
	if res := e.deploy(deployer.Plan{Target: e.target(p, "web"), To: v3}); res.Outcome != deployer.Updated {
		t.Fatalf("second update: %s (%v)", res.Outcome, res.Cause)
	}
	if id := imageOf(v1.Digest); id != "" {
		t.Errorf("1.0.0 (%s) still present after the next success, want removed", id)
	}
	if imageOf(v2.Digest) == "" {
		t.Errorf("1.1.0 removed, but it is the rollback image now")
	}
	if got := e.runningDigest(p, "web"); got != v3.Digest {
		t.Errorf("running digest = %s, want %s", got, v3.Digest)
	}
	if got := readFile(t, p, "compose.yaml"); !strings.Contains(got, e.ref("1.2.0")+"\n") {
		t.Errorf("compose.yaml does not name 1.2.0:\n%s", got)
	}
	e.upChangesNothing(p)
}

// A failed update gives the rollback tag back to the version recorded as
// previous, so a later Rollback still finds it locally.
func TestFailedUpdateKeepsRollbackImage(t *testing.T) {
	t.Parallel()
	e := newEnv(t, compose.Options{})
	v1 := e.push("1.0.0", testenv.App{Version: "1.0.0"})
	v2 := e.push("1.1.0", testenv.App{Version: "1.1.0"})
	bad := e.push("1.2.0", testenv.App{Version: "1.2.0", Mode: "crash", CrashAfter: 200 * time.Millisecond})
	p := e.project(map[string]string{"compose.yaml": simpleCompose(e.ref("1.0.0"), "    restart: unless-stopped\n")})
	if res := e.deploy(deployer.Plan{Target: e.target(p, "web"), To: v2}); res.Outcome != deployer.Updated {
		t.Fatalf("update: %s (%v)", res.Outcome, res.Cause)
	}
	if res := e.deploy(deployer.Plan{Target: e.target(p, "web"), To: bad}); res.Outcome != deployer.RolledBack {
		t.Fatalf("bad update: %s (%v), want rolled back", res.Outcome, res.Cause)
	}
	ctx := testenv.Context(t, time.Minute)
	rb, err := e.cli.ImageInspect(ctx, e.ref(compose.RollbackTag(p.Name, "web")))
	if err != nil {
		t.Fatal(err)
	}
	if want := e.reg.Host + "/demo/app@" + v1.Digest; !slices.Contains(rb.RepoDigests, want) {
		t.Errorf("rollback tag points at %v, want %s (the recorded previous version)", rb.RepoDigests, want)
	}
	e.reg.Close()

	res := e.rollback(e.target(p, "web"), "")

	if res.Outcome != deployer.RolledBack || e.runningDigest(p, "web") != v1.Digest {
		t.Fatalf("rollback: %s (%v), running %s, want %s", res.Outcome, res.Cause, e.runningDigest(p, "web"), v1.Digest)
	}
	if d := stepDetail(res, "resolve previous version"); !strings.Contains(d, "local rollback image") {
		t.Errorf("resolve detail %q: the rollback image was not used", d)
	}
	e.upChangesNothing(p)
}

// A recreate that Compose left halfway (the agent or its helper was killed
// during "converge") is settled by the recovery's rollback: the temporary
// container is removed and the old one runs again, or, when the old one was
// already removed, the temporary one gets its name and is then replaced.
// In every case the service ends with one running container of the old
// version under its own name.
func TestRollbackSettlesAnInterruptedRecreate(t *testing.T) {
	for _, stage := range []string{"created", "old stopped", "old removed"} {
		t.Run(strings.ReplaceAll(stage, " ", "-"), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, compose.Options{})
			v1 := e.push("1.0", testenv.App{Version: "1.0", Health: fastHealth})
			p := e.project(map[string]string{"compose.yaml": "services:\n  web:\n    image: " + e.ref("1.0") + "\n"})
			v2 := e.push("1.0", testenv.App{Version: "2.0", Health: fastHealth})
			ctx := testenv.Context(t, 2*time.Minute)
			old := e.containers(p, "web")[0].Container
			oldName := strings.TrimPrefix(old.Name, "/")
			pull, err := e.cli.ImagePull(ctx, v2.String(), client.ImagePullOptions{})
			if err != nil {
				t.Fatal(err)
			}
			_ = pull.Wait(ctx)
			// What Compose's recreate does first: the new container under
			// a temporary name, with the service's labels.
			cfg := *old.Config
			cfg.Image = v2.String()
			img, err := e.cli.ImageInspect(ctx, v2.String())
			if err != nil {
				t.Fatal(err)
			}
			cfg.Labels = maps.Clone(cfg.Labels)
			cfg.Labels[api.ImageDigestLabel] = img.ID // as Compose labels the new container
			tmp, err := e.cli.ContainerCreate(ctx, client.ContainerCreateOptions{Config: &cfg, HostConfig: old.HostConfig, Name: old.ID[:12] + "_" + oldName})
			if err != nil {
				t.Fatal(err)
			}
			switch stage {
			case "old stopped":
				if _, err := e.cli.ContainerStop(ctx, old.ID, client.ContainerStopOptions{}); err != nil {
					t.Fatal(err)
				}
			case "old removed":
				if _, err := e.cli.ContainerRemove(ctx, old.ID, client.ContainerRemoveOptions{Force: true}); err != nil {
					t.Fatal(err)
				}
			}

			res := e.rollback(discovered(t, e, "compose/"+p.Name+"/web"), v1.Digest)

			if res.Outcome != deployer.RolledBack && res.Outcome != deployer.UpToDate {
				t.Fatalf("outcome = %s (%v), want the old version back", res.Outcome, res.Cause)
			}
			if !strings.Contains(res.Steps[0].Detail, "interrupted recreate") {
				t.Errorf("first step %q: %q, want it to settle the interrupted recreate", res.Steps[0].Name, res.Steps[0].Detail)
			}
			ctrs := e.containers(p, "web")
			if len(ctrs) != 1 {
				t.Fatalf("%d containers of web, want 1", len(ctrs))
			}
			c := ctrs[0].Container
			if c.Name != "/"+oldName || !c.State.Running {
				t.Errorf("container %s running=%v, want %s running", c.Name, c.State.Running, oldName)
			}
			if stage != "old removed" && c.ID != old.ID {
				t.Errorf("container %s, want the old %s kept", c.ID, old.ID)
			}
			if c.ID == tmp.ID {
				t.Errorf("the temporary container %s still runs", tmp.ID)
			}
			if got := e.runningDigest(p, "web"); got != v1.Digest {
				t.Errorf("runs %s, want the old %s", got, v1.Digest)
			}
		})
	}
}
