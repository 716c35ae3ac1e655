package compose_test

import (
	"context"
	"errors"
	"iter"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/jsonstream"

	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/deployer/compose"
	"github.com/shipwatch/shipwatch/internal/testenv"
)

// snapshot is what runs and what the files say before a rollout that must
// fail without touching anything.
type snapshot struct {
	ids     map[string][]string
	digest  string
	serving string
	files   map[string]string
}

func (e *env) snapshot(p *testenv.ComposeProject, files ...string) snapshot {
	e.t.Helper()
	s := snapshot{ids: e.ids(p), digest: e.runningDigest(p, "web"), serving: e.serving(p, "web"), files: map[string]string{}}
	for _, f := range files {
		s.files[f] = readFile(e.t, p, f)
	}
	return s
}

// untouched checks that a failed rollout left the service as it was: same
// containers, same digest, still serving, same files, no backups.
func (e *env) untouched(p *testenv.ComposeProject, before snapshot, res deployer.Result) {
	e.t.Helper()
	if res.Outcome != deployer.Failed || res.Cause == nil {
		e.t.Fatalf("outcome = %s (%v), want failed with a cause", res.Outcome, res.Cause)
	}
	if res.ManualAction {
		e.t.Errorf("manual action requested, but nothing was touched")
	}
	if got := e.ids(p); !equalIDs(got, before.ids) {
		e.t.Errorf("containers = %v, want untouched %v", got, before.ids)
	}
	if got := e.runningDigest(p, "web"); got != before.digest {
		e.t.Errorf("running digest = %s, want %s", got, before.digest)
	}
	if got := e.serving(p, "web"); got != before.serving {
		e.t.Errorf("serving %q, want %q", got, before.serving)
	}
	for name, want := range before.files {
		if got := readFile(e.t, p, name); got != want {
			e.t.Errorf("%s changed:\n%s", name, got)
		}
	}
	assertNoBackups(e.t, p.Dir)
}

// The registry goes down in the middle of the rollout (manifest served,
// blobs not): the old container keeps running untouched.
func TestDeployPullFailureRegistryDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t, compose.Options{})
	e.push("1.0.0", testenv.App{Version: "1.0.0"})
	v2 := e.push("1.1.0", testenv.App{Version: "1.1.0"})
	p := e.project(map[string]string{"compose.yaml": simpleCompose(e.ref("1.0.0"), "")})
	before := e.snapshot(p, "compose.yaml")
	e.reg.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.Contains(r.URL.Path, "/blobs/") {
			http.Error(w, "registry down", http.StatusServiceUnavailable)
			return true
		}
		return false
	})

	res := e.deploy(deployer.Plan{Target: e.target(p, "web"), To: v2})

	e.untouched(p, before, res)
	if !strings.Contains(res.Cause.Error(), "pull") {
		t.Errorf("cause %q does not say the pull failed", res.Cause)
	}
	if res.FailedDigest != "" {
		t.Errorf("failed digest = %s, want none: an unreachable registry is not the image's fault", res.FailedDigest)
	}
}

// The registry serves other bytes for the verified digest: the engine's
// content check fails the pull, reported as a digest mismatch.
func TestDeployRegistryServesOtherDigest(t *testing.T) {
	t.Parallel()
	e := newEnv(t, compose.Options{})
	e.push("1.0.0", testenv.App{Version: "1.0.0"})
	verified := e.push("1.1.0", testenv.App{Version: "1.1.0"})
	evil := testenv.App{Version: "1.1.0-evil", Labels: map[string]string{"shipwatch.test.registry": e.reg.Host}}.MustImage(t)
	e.reg.MustPush(t, "demo/app:evil", evil)
	evilManifest, _ := evil.RawManifest()
	evilType, _ := evil.MediaType()
	p := e.project(map[string]string{"compose.yaml": simpleCompose(e.ref("1.0.0"), "")})
	before := e.snapshot(p, "compose.yaml")
	e.reg.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasSuffix(r.URL.Path, "/manifests/"+verified.Digest) {
			w.Header().Set("Content-Type", string(evilType))
			w.Header().Set("Docker-Content-Digest", verified.Digest) // a lie
			if r.Method == http.MethodGet {
				_, _ = w.Write(evilManifest)
			}
			return true
		}
		return false
	})

	res := e.deploy(deployer.Plan{Target: e.target(p, "web"), To: verified})

	e.untouched(p, before, res)
	if !errors.Is(res.Cause, deployer.ErrDigestMismatch) {
		t.Errorf("cause = %v, want ErrDigestMismatch", res.Cause)
	}
}

// The engine reports the pulled image under another digest than the one
// verified (checked on the local RepoDigests): nothing is changed.
func TestDeployLocalRepoDigestMismatch(t *testing.T) {
	t.Parallel()
	var fe *faultEngine
	e := newEnvWrapped(t, compose.Options{}, func(inner compose.Engine) compose.Engine {
		fe = &faultEngine{Engine: inner}
		return fe
	})
	e.push("1.0.0", testenv.App{Version: "1.0.0"})
	v2 := e.push("1.1.0", testenv.App{Version: "1.1.0"})
	p := e.project(map[string]string{"compose.yaml": simpleCompose(e.ref("1.0.0"), "")})
	before := e.snapshot(p, "compose.yaml")
	fe.repoDigests = []string{e.reg.Host + "/demo/app@sha256:" + strings.Repeat("0", 64)}

	res := e.deploy(deployer.Plan{Target: e.target(p, "web"), To: v2})

	e.untouched(p, before, res)
	if !errors.Is(res.Cause, deployer.ErrDigestMismatch) {
		t.Errorf("cause = %v, want ErrDigestMismatch", res.Cause)
	}
	if fe.inspectByDigest == 0 {
		t.Errorf("the local RepoDigests were never checked")
	}
}

// A full disk during the pull cannot be produced on this machine, so the
// engine boundary is made to fail the pull stream with the engine's own
// error text for it. The service stays untouched.
func TestDeployDiskFullDuringPull(t *testing.T) {
	t.Parallel()
	var fe *faultEngine
	e := newEnvWrapped(t, compose.Options{}, func(inner compose.Engine) compose.Engine {
		fe = &faultEngine{Engine: inner}
		return fe
	})
	e.push("1.0.0", testenv.App{Version: "1.0.0"})
	v2 := e.push("1.1.0", testenv.App{Version: "1.1.0"})
	p := e.project(map[string]string{"compose.yaml": simpleCompose(e.ref("1.0.0"), "")})
	before := e.snapshot(p, "compose.yaml")
	fe.pullErr = errors.New("failed to register layer: write /var/lib/docker/overlay2/x/diff/app: no space left on device")

	res := e.deploy(deployer.Plan{Target: e.target(p, "web"), To: v2})

	e.untouched(p, before, res)
	if fe.pullsAttempted != 1 {
		t.Errorf("pulls attempted = %d, want 1", fe.pullsAttempted)
	}
	if !strings.Contains(res.Cause.Error(), "no space left on device") {
		t.Errorf("cause %q does not carry the engine's reason", res.Cause)
	}
}

type failingPull struct{ err error }

func (failingPull) Read([]byte) (int, error) { return 0, errors.New("stream closed") }
func (failingPull) Close() error             { return nil }
func (f failingPull) JSONMessages(context.Context) iter.Seq2[jsonstream.Message, error] {
	return func(yield func(jsonstream.Message, error) bool) { yield(jsonstream.Message{}, f.err) }
}
func (f failingPull) Wait(context.Context) error { return f.err }

// Files edited and not applied: refused by default with an explanation,
// applied together with the update when drift is allowed.
func TestDeployDrift(t *testing.T) {
	t.Parallel()
	e := newEnv(t, compose.Options{})
	e.push("1.0.0", testenv.App{Version: "1.0.0"})
	v2 := e.push("1.1.0", testenv.App{Version: "1.1.0"})
	p := e.project(map[string]string{"compose.yaml": simpleCompose(e.ref("1.0.0"), "")})
	edited := simpleCompose(e.ref("1.0.0"), "    environment:\n      FEATURE: \"on\"\n")
	if err := os.WriteFile(filepath.Join(p.Dir, "compose.yaml"), []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	before := e.snapshot(p, "compose.yaml")
	target := e.target(p, "web")

	res := e.deploy(deployer.Plan{Target: target, To: v2})

	e.untouched(p, before, res)
	if !errors.Is(res.Cause, deployer.ErrDrift) {
		t.Fatalf("cause = %v, want ErrDrift", res.Cause)
	}
	if !strings.Contains(res.Cause.Error(), "docker compose up -d") {
		t.Errorf("cause %q does not say what to do", res.Cause)
	}
	ctx := testenv.Context(t, time.Minute)
	want, err := e.dep.ExpectedConfigHash(ctx, target)
	if err != nil {
		t.Fatal(err)
	}
	if want == target.Compose.ConfigHash {
		t.Errorf("ExpectedConfigHash = running hash %s after an edit", want)
	}

	res = e.deploy(deployer.Plan{Target: target, To: v2, AllowDrift: true})

	if res.Outcome != deployer.Updated {
		t.Fatalf("with drift allowed: outcome = %s (%v), want %s", res.Outcome, res.Cause, deployer.Updated)
	}
	env := e.containers(p, "web")[0].Container.Config.Env
	if !strings.Contains(strings.Join(env, " "), "FEATURE=on") {
		t.Errorf("the drifted setting was not applied: env %v", env)
	}
	e.upChangesNothing(p)
}

// No drift on a fresh project: ExpectedConfigHash is what Compose stamped.
func TestExpectedConfigHashMatchesCompose(t *testing.T) {
	t.Parallel()
	e := newEnv(t, compose.Options{})
	e.push("1.0.0", testenv.App{Version: "1.0.0"})
	p := e.project(map[string]string{"compose.yaml": `services:
  db:
    image: ` + e.ref("1.0.0") + `
  web:
    image: ` + e.ref("1.0.0") + `
    network_mode: service:db
    volumes_from: [db]
    environment:
      A: "1"
`})
	target := e.target(p, "web")
	got, err := e.dep.ExpectedConfigHash(testenv.Context(t, time.Minute), target)
	if err != nil {
		t.Fatal(err)
	}
	if got != target.Compose.ConfigHash {
		t.Errorf("ExpectedConfigHash = %s, want the label %s", got, target.Compose.ConfigHash)
	}
}

// Bad input that must fail before anything is touched, with an error that
// tells the user what is wrong.
func TestDeployBadInput(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		files func(e *env) map[string]string
		// break the project after `up`; returns the files to compare after
		breakIt func(t *testing.T, p *testenv.ComposeProject) []string
		want    string
		is      error
		toTag   string // default 1.1.0
	}{{
		name: "missing compose file",
		files: func(e *env) map[string]string {
			return map[string]string{"compose.yaml": simpleCompose(e.ref("1.0.0"), "")}
		},
		breakIt: func(t *testing.T, p *testenv.ComposeProject) []string {
			if err := os.Rename(filepath.Join(p.Dir, "compose.yaml"), filepath.Join(p.Dir, "elsewhere.yaml")); err != nil {
				t.Fatal(err)
			}
			return []string{"elsewhere.yaml"}
		},
		want: "compose.yaml (recorded on the containers) cannot be read",
	}, {
		name: "unreadable compose file",
		files: func(e *env) map[string]string {
			return map[string]string{"compose.yaml": simpleCompose(e.ref("1.0.0"), "")}
		},
		breakIt: func(t *testing.T, p *testenv.ComposeProject) []string {
			if err := os.WriteFile(filepath.Join(p.Dir, "compose.yaml"), []byte("services: [\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			return []string{"compose.yaml"}
		},
		want: "load compose project",
	}, {
		name: "project moved",
		files: func(e *env) map[string]string {
			return map[string]string{"compose.yaml": simpleCompose(e.ref("1.0.0"), "")}
		},
		breakIt: func(t *testing.T, p *testenv.ComposeProject) []string {
			moved := p.Dir + "-moved"
			if err := os.Rename(p.Dir, moved); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = os.Rename(moved, p.Dir) })
			return nil
		},
		want: "was the project moved?",
	}, {
		name: "service gone from the file",
		files: func(e *env) map[string]string {
			return map[string]string{"compose.yaml": simpleCompose(e.ref("1.0.0"), "")}
		},
		breakIt: func(t *testing.T, p *testenv.ComposeProject) []string {
			b := readFile(t, p, "compose.yaml")
			if err := os.WriteFile(filepath.Join(p.Dir, "compose.yaml"), []byte(strings.Replace(b, "  web:", "  www:", 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			return []string{"compose.yaml"}
		},
		is:   deployer.ErrNotFound,
		want: "service web is no longer defined",
	}, {
		name: "extends file outside the project",
		files: func(e *env) map[string]string {
			return map[string]string{
				"compose.yaml":        "services:\n  web:\n    extends:\n      file: ../shared/base.yaml\n      service: app\n    ports: [\"127.0.0.1::8080\"]\n",
				"../shared/base.yaml": "services:\n  app:\n    image: " + e.ref("1.0.0") + "\n",
			}
		},
		is:   deployer.ErrUnsupported,
		want: "outside the project directory",
	}, {
		name: "tag assembled from two variables",
		files: func(e *env) map[string]string {
			return map[string]string{
				"compose.yaml": simpleCompose(e.reg.Host+"/demo/app:${MAJOR}.${MINOR}.0", ""),
				".env":         "MAJOR=1\nMINOR=0\n",
			}
		},
		toTag: "2.1.0", // MAJOR and MINOR both change
		is:    deployer.ErrUnsupported,
		want:  "spans more than one",
	}, {
		name: "variable shared with another service",
		files: func(e *env) map[string]string {
			return map[string]string{
				"compose.yaml": simpleCompose(e.reg.Host+"/demo/app:${TAG}", "  worker:\n    image: "+e.reg.Host+"/demo/app:${TAG}\n"),
				".env":         "TAG=1.0.0\n",
			}
		},
		is:   deployer.ErrUnsupported,
		want: "would also change [service worker]",
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, compose.Options{})
			e.push("1.0.0", testenv.App{Version: "1.0.0"})
			toTag := tc.toTag
			if toTag == "" {
				toTag = "1.1.0"
			}
			v2 := e.push(toTag, testenv.App{Version: toTag})
			files := tc.files(e)
			p := e.project(files)
			target := e.target(p, "web")
			var compare []string
			for name := range files {
				if !strings.HasPrefix(name, "..") {
					compare = append(compare, name)
				}
			}
			if tc.breakIt != nil {
				compare = tc.breakIt(t, p)
			}
			before := e.snapshot(p, compare...)

			res := e.deploy(deployer.Plan{Target: target, To: v2})

			e.untouched(p, before, res)
			if !strings.Contains(res.Cause.Error(), tc.want) {
				t.Errorf("cause = %q, want it to say %q", res.Cause, tc.want)
			}
			if tc.is != nil && !errors.Is(res.Cause, tc.is) {
				t.Errorf("cause = %v, want errors.Is %v", res.Cause, tc.is)
			}
		})
	}
}

// A reference taken from a variable of the environment (a shell variable)
// cannot be rewritten. The test sets the variable in its own process, so
// it cannot run in parallel.
func TestDeployRefusesShellVariable(t *testing.T) {
	e := newEnv(t, compose.Options{})
	e.push("1.0.0", testenv.App{Version: "1.0.0"})
	v2 := e.push("1.1.0", testenv.App{Version: "1.1.0"})
	t.Setenv("SHIPWATCH_TEST_WEB_IMAGE", e.ref("1.0.0"))
	p := e.project(map[string]string{"compose.yaml": simpleCompose("${SHIPWATCH_TEST_WEB_IMAGE}", "")})
	before := e.snapshot(p, "compose.yaml")

	res := e.deploy(deployer.Plan{Target: e.target(p, "web"), To: v2})

	e.untouched(p, before, res)
	if !errors.Is(res.Cause, deployer.ErrUnsupported) || !strings.Contains(res.Cause.Error(), "SHIPWATCH_TEST_WEB_IMAGE") {
		t.Errorf("cause = %v, want ErrUnsupported naming the variable", res.Cause)
	}
}

// A backup left by an interrupted rollout stops the next one: the file
// may name a version that never ran, and the backup is the only copy of
// what did.
func TestDeployRefusesAfterInterruptedRollout(t *testing.T) {
	t.Parallel()
	e := newEnv(t, compose.Options{})
	e.push("1.0.0", testenv.App{Version: "1.0.0"})
	v2 := e.push("1.1.0", testenv.App{Version: "1.1.0"})
	p := e.project(map[string]string{"compose.yaml": simpleCompose(e.ref("1.0.0"), "")})
	backup := filepath.Join(p.Dir, "compose.yaml.shipwatch-backup")
	if err := os.WriteFile(backup, []byte("original\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ids, file := e.ids(p), readFile(t, p, "compose.yaml")

	res := e.deploy(deployer.Plan{Target: e.target(p, "web"), To: v2})

	if res.Outcome != deployer.Failed || !errors.Is(res.Cause, deployer.ErrConflict) || !strings.Contains(res.Cause.Error(), "interrupted") {
		t.Fatalf("outcome = %s (%v), want failed with ErrConflict about an interrupted rollout", res.Outcome, res.Cause)
	}
	if got := e.ids(p); !equalIDs(got, ids) {
		t.Errorf("containers changed")
	}
	if got := readFile(t, p, "compose.yaml"); got != file {
		t.Errorf("compose.yaml changed")
	}
	if b, _ := os.ReadFile(backup); string(b) != "original\n" {
		t.Errorf("the backup was overwritten: %q", b)
	}
}
