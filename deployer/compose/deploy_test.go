package compose_test

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/moby/moby/client"
	"github.com/rs/zerolog"

	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/deployer/compose"
	"github.com/shipwatch/shipwatch/discovery"
	"github.com/shipwatch/shipwatch/imageref"
	"github.com/shipwatch/shipwatch/internal/testenv"
)

func TestDeploySameTagNewDigest(t *testing.T) {
	t.Parallel()
	e := newEnv(t, compose.Options{})
	v1 := e.push("1.4", testenv.App{Version: "1.4.0", Health: fastHealth})
	p := e.project(map[string]string{"compose.yaml": simpleCompose(e.ref("1.4"), "")})
	before := readFile(t, p, "compose.yaml")
	oldIDs := e.ids(p)
	// ":1.4" is rebuilt: same tag, new digest.
	v2 := e.push("1.4", testenv.App{Version: "1.4.1", Health: fastHealth})

	res := e.deploy(deployer.Plan{Target: e.target(p, "web"), To: v2})

	if res.Outcome != deployer.Updated {
		t.Fatalf("outcome = %s (%v), want %s", res.Outcome, res.Cause, deployer.Updated)
	}
	if got := e.runningDigest(p, "web"); got != v2.Digest {
		t.Errorf("running digest = %s, want %s", got, v2.Digest)
	}
	if res.From != v1.Digest || res.To != v2.Digest || res.Running != v2.Digest {
		t.Errorf("result from/to/running = %s/%s/%s, want %s/%s/%s", res.From, res.To, res.Running, v1.Digest, v2.Digest, v2.Digest)
	}
	if got := e.serving(p, "web"); got != "testapp 1.4.1" {
		t.Errorf("serving %q, want %q", got, "testapp 1.4.1")
	}
	if got := readFile(t, p, "compose.yaml"); got != before {
		t.Errorf("compose.yaml changed on a same-tag update:\n%s", got)
	}
	if after := e.ids(p); equalIDs(oldIDs, after) {
		t.Errorf("container IDs unchanged %v: the service was not recreated", after)
	}
	// The previous image is protected by the rollback tag and recorded on
	// the new container.
	ctx := testenv.Context(t, 30*time.Second)
	rb, err := e.cli.ImageInspect(ctx, e.ref(compose.RollbackTag(p.Name, "web")))
	if err != nil {
		t.Fatalf("rollback tag: %v", err)
	}
	if !slices.Contains(rb.RepoDigests, e.reg.Host+"/demo/app@"+v1.Digest) {
		t.Errorf("rollback image repo digests = %v, want %s", rb.RepoDigests, v1.Digest)
	}
	labels := e.containers(p, "web")[0].Container.Config.Labels
	if got, want := labels[compose.LabelPrevious], v1.String(); got != want {
		t.Errorf("label %s = %q, want %q", compose.LabelPrevious, got, want)
	}
	wantSteps := []string{"load project", "drift guard", "plan", "pull", "verify digest", "protect previous image", "tag image", "converge", "health gate", "finish"}
	if got := stepNames(res); !slices.Equal(got, wantSteps) {
		t.Errorf("steps = %v, want %v", got, wantSteps)
	}
	e.upChangesNothing(p)
}

// A new semver tag rewrites the compose file in place: only the tag
// changes, comments and layout stay. The target comes from discovery.
func TestDeployNewTagRewritesComposeFile(t *testing.T) {
	t.Parallel()
	e := newEnv(t, compose.Options{})
	v1 := e.push("1.0.0", testenv.App{Version: "1.0.0"})
	v2 := e.push("1.1.0", testenv.App{Version: "1.1.0"})
	file := `# the web front end
services:
  web:
    # pinned by shipwatch
    image: "` + e.ref("1.0.0") + `"   # keep this comment
    ports:
      - "127.0.0.1::8080"
    restart: unless-stopped
`
	p := e.project(map[string]string{"compose.yaml": file})
	target := discovered(t, e, "compose/"+p.Name+"/web")
	if target.Digest != v1.Digest {
		t.Fatalf("discovered digest = %s, want %s", target.Digest, v1.Digest)
	}

	res := e.deploy(deployer.Plan{Target: target, To: v2})

	if res.Outcome != deployer.Updated {
		t.Fatalf("outcome = %s (%v), want %s", res.Outcome, res.Cause, deployer.Updated)
	}
	want := strings.Replace(file, `/demo/app:1.0.0"`, `/demo/app:1.1.0"`, 1)
	if got := readFile(t, p, "compose.yaml"); got != want {
		t.Errorf("compose.yaml =\n%s\nwant\n%s", got, want)
	}
	assertNoBackups(t, p.Dir)
	if got := e.runningDigest(p, "web"); got != v2.Digest {
		t.Errorf("running digest = %s, want %s", got, v2.Digest)
	}
	if got := e.serving(p, "web"); got != "testapp 1.1.0" {
		t.Errorf("serving %q, want testapp 1.1.0", got)
	}
	e.upChangesNothing(p)
}

// A reference interpolated from .env is updated where the variable is
// defined; the compose file is not touched.
func TestDeployEnvInterpolatedReference(t *testing.T) {
	t.Parallel()
	e := newEnv(t, compose.Options{})
	e.push("1.0.0", testenv.App{Version: "1.0.0", Health: fastHealth})
	v2 := e.push("1.2.0", testenv.App{Version: "1.2.0", Health: fastHealth})
	composeFile := simpleCompose("${REGISTRY}/demo/app:${APP_TAG:-0.0.1}", "")
	dotenv := "# registry of the test\nREGISTRY=" + e.reg.Host + "\nexport APP_TAG=\"1.0.0\" # the version\nOTHER=x\n"
	p := e.project(map[string]string{"compose.yaml": composeFile, ".env": dotenv})

	res := e.deploy(deployer.Plan{Target: e.target(p, "web"), To: v2})

	if res.Outcome != deployer.Updated {
		t.Fatalf("outcome = %s (%v), want %s", res.Outcome, res.Cause, deployer.Updated)
	}
	if got := readFile(t, p, "compose.yaml"); got != composeFile {
		t.Errorf("compose.yaml changed:\n%s", got)
	}
	wantEnv := strings.Replace(dotenv, `APP_TAG="1.0.0"`, `APP_TAG="1.2.0"`, 1)
	if got := readFile(t, p, ".env"); got != wantEnv {
		t.Errorf(".env =\n%s\nwant\n%s", got, wantEnv)
	}
	if got := e.runningDigest(p, "web"); got != v2.Digest {
		t.Errorf("running digest = %s, want %s", got, v2.Digest)
	}
	e.upChangesNothing(p)
}

// Every replica is recreated and gated.
func TestDeploySeveralReplicas(t *testing.T) {
	t.Parallel()
	e := newEnv(t, compose.Options{})
	e.push("1.0.0", testenv.App{Version: "1.0.0", Health: fastHealth})
	v2 := e.push("1.0.1", testenv.App{Version: "1.0.1", Health: fastHealth})
	file := "services:\n  web:\n    image: " + e.ref("1.0.0") + "\n    deploy:\n      replicas: 3\n"
	p := e.project(map[string]string{"compose.yaml": file})
	old := e.ids(p)["web"]
	if len(old) != 3 {
		t.Fatalf("replicas before = %d, want 3", len(old))
	}

	res := e.deploy(deployer.Plan{Target: e.target(p, "web"), To: v2})

	if res.Outcome != deployer.Updated {
		t.Fatalf("outcome = %s (%v), want %s", res.Outcome, res.Cause, deployer.Updated)
	}
	now := e.ids(p)["web"]
	if len(now) != 3 {
		t.Fatalf("replicas after = %d, want 3", len(now))
	}
	for _, id := range now {
		if slices.Contains(old, id) {
			t.Errorf("replica %s was not recreated", id[:12])
		}
	}
	if got := e.runningDigest(p, "web"); got != v2.Digest {
		t.Errorf("running digest = %s, want %s", got, v2.Digest)
	}
	if got, want := readFile(t, p, "compose.yaml"), strings.Replace(file, ":1.0.0\n", ":1.0.1\n", 1); got != want {
		t.Errorf("compose.yaml =\n%s\nwant\n%s", got, want)
	}
	if d := stepDetail(res, "health gate"); !strings.Contains(d, "3 replica(s)") {
		t.Errorf("health gate detail %q does not cover 3 replicas", d)
	}
	e.upChangesNothing(p)
}

// depends_on, named volumes, several networks with aliases, configs and
// published ports survive an update; the dependency is not recreated.
func TestDeployKeepsWiring(t *testing.T) {
	t.Parallel()
	e := newEnv(t, compose.Options{})
	e.push("1.0.0", testenv.App{Version: "1.0.0", Health: fastHealth})
	e.push("db", testenv.App{Version: "db", Health: fastHealth})
	v2 := e.push("2.0.0", testenv.App{Version: "2.0.0", Health: fastHealth})
	file := `services:
  db:
    image: ` + e.ref("db") + `
    networks: [back]
  web:
    image: ` + e.ref("1.0.0") + `
    depends_on:
      db:
        condition: service_healthy
    ports:
      - "127.0.0.1::8080"
    volumes:
      - data:/data
    networks:
      front:
        aliases: [www, frontend]
      back:
        aliases: [api]
    configs:
      - source: appconf
        target: /etc/app.conf
volumes:
  data: {}
networks:
  front: {}
  back: {}
configs:
  appconf:
    file: ./app.conf
`
	p := e.project(map[string]string{"compose.yaml": file, "app.conf": "setting=1\n"})
	dbBefore := e.ids(p)["db"]

	res := e.deploy(deployer.Plan{Target: e.target(p, "web"), To: v2})

	if res.Outcome != deployer.Updated {
		t.Fatalf("outcome = %s (%v), want %s", res.Outcome, res.Cause, deployer.Updated)
	}
	if got, want := readFile(t, p, "compose.yaml"), strings.Replace(file, "demo/app:1.0.0\n", "demo/app:2.0.0\n", 1); got != want {
		t.Errorf("compose.yaml =\n%s\nwant\n%s", got, want)
	}
	if got := e.ids(p)["db"]; !slices.Equal(got, dbBefore) {
		t.Errorf("db containers = %v, want %v (dependencies must not be recreated)", got, dbBefore)
	}
	c := e.containers(p, "web")[0].Container
	var volume, config bool
	for _, m := range c.Mounts {
		volume = volume || (m.Type == "volume" && m.Name == p.Name+"_data" && m.Destination == "/data")
		config = config || m.Destination == "/etc/app.conf"
	}
	if !volume {
		t.Errorf("web lost its named volume: mounts %+v", c.Mounts)
	}
	if !config {
		t.Errorf("web lost its config /etc/app.conf: mounts %+v", c.Mounts)
	}
	for net, aliases := range map[string][]string{p.Name + "_front": {"www", "frontend"}, p.Name + "_back": {"api"}} {
		ep, ok := c.NetworkSettings.Networks[net]
		if !ok {
			t.Errorf("web is not on network %s: %v", net, keys(c.NetworkSettings.Networks))
			continue
		}
		for _, a := range aliases {
			if !slices.Contains(ep.Aliases, a) {
				t.Errorf("web on %s has aliases %v, want %s among them", net, ep.Aliases, a)
			}
		}
	}
	if got := e.serving(p, "web"); got != "testapp 2.0.0" {
		t.Errorf("serving %q, want testapp 2.0.0", got)
	}
	e.upChangesNothing(p)
}

func TestDeployUpToDate(t *testing.T) {
	t.Parallel()
	e := newEnv(t, compose.Options{})
	v1 := e.push("1.0.0", testenv.App{Version: "1.0.0"})
	p := e.project(map[string]string{"compose.yaml": simpleCompose(e.ref("1.0.0"), "")})
	ids := e.ids(p)

	res := e.deploy(deployer.Plan{Target: e.target(p, "web"), To: v1})

	if res.Outcome != deployer.UpToDate || res.Cause != nil {
		t.Fatalf("outcome = %s (%v), want %s", res.Outcome, res.Cause, deployer.UpToDate)
	}
	if got := e.ids(p); !equalIDs(got, ids) {
		t.Errorf("containers changed on an up-to-date plan: %v, want %v", got, ids)
	}
}

func TestDeployDryRunChangesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, compose.Options{})
	e.push("1.0.0", testenv.App{Version: "1.0.0"})
	v2 := e.push("1.1.0", testenv.App{Version: "1.1.0"})
	p := e.project(map[string]string{"compose.yaml": simpleCompose(e.ref("1.0.0"), "")})
	ids, file := e.ids(p), readFile(t, p, "compose.yaml")
	e.reg.Reset()

	res := e.deploy(deployer.Plan{Target: e.target(p, "web"), To: v2, DryRun: true})

	if res.Outcome != deployer.Available || res.Cause != nil {
		t.Fatalf("outcome = %s (%v), want %s", res.Outcome, res.Cause, deployer.Available)
	}
	if d := stepDetail(res, "plan"); !strings.Contains(d, "compose.yaml:3") || !strings.Contains(d, "1.1.0") {
		t.Errorf("plan detail %q does not say which line changes to what", d)
	}
	if got := e.ids(p); !equalIDs(got, ids) {
		t.Errorf("containers changed on a dry run")
	}
	if got := readFile(t, p, "compose.yaml"); got != file {
		t.Errorf("compose.yaml changed on a dry run")
	}
	if n := e.reg.Count("", ""); n != 0 {
		t.Errorf("dry run made %d registry requests, want 0", n)
	}
}

type keychain struct{ host, user, pass string }

func (k keychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if r.RegistryStr() == k.host {
		return &authn.Basic{Username: k.user, Password: k.pass}, nil
	}
	return authn.Anonymous, nil
}

// The pull sends the keychain's credentials to the engine; without them
// the registry refuses and nothing changes.
func TestDeployPullsWithCredentials(t *testing.T) {
	t.Parallel()
	reg := testenv.NewRegistry(t, testenv.WithTokenAuth("alice", "s3cret"))
	kc := keychain{host: reg.Host, user: "alice", pass: "s3cret"}
	cli := testenv.Engine(t)
	testenv.RemoveImagesOf(t, cli, reg.Host)
	ctx := testenv.Context(t, 2*time.Minute)
	d1 := reg.MustPush(t, "demo/app:1.0.0", testenv.App{Version: "1.0.0", Labels: map[string]string{"shipwatch.test.registry": reg.Host}}.MustImage(t))
	d2 := reg.MustPush(t, "demo/app:1.1.0", testenv.App{Version: "1.1.0", Labels: map[string]string{"shipwatch.test.registry": reg.Host}}.MustImage(t))
	// Start from an image pulled with credentials, as the user did.
	auth := "eyJ1c2VybmFtZSI6ImFsaWNlIiwicGFzc3dvcmQiOiJzM2NyZXQifQ==" // {"username":"alice","password":"s3cret"}
	pull, err := cli.ImagePull(ctx, reg.Ref("demo/app:1.0.0"), client.ImagePullOptions{RegistryAuth: auth})
	if err == nil {
		err = pull.Wait(ctx)
	}
	if err != nil {
		t.Fatalf("initial pull: %v", err)
	}
	p := testenv.NewComposeProject(t, map[string]string{"compose.yaml": simpleCompose(reg.Ref("demo/app:1.0.0"), "")})
	p.MustUp(t)
	to := imageref.MustParse(reg.Ref("demo/app:1.1.0")).WithDigest(d2)

	anon := &env{t: t, cli: cli, reg: reg, dep: newDeployer(t, compose.Options{HealthInterval: 200 * time.Millisecond})}
	res := anon.deploy(deployer.Plan{Target: anon.target(p, "web"), To: to})
	if res.Outcome != deployer.Failed || res.Cause == nil {
		t.Fatalf("anonymous pull: outcome = %s (%v), want failed", res.Outcome, res.Cause)
	}
	if strings.Contains(res.Cause.Error(), "s3cret") {
		t.Errorf("cause leaks the password: %v", res.Cause)
	}
	if got := anon.runningDigest(p, "web"); got != d1 {
		t.Fatalf("running digest after a refused pull = %s, want %s", got, d1)
	}

	var logs bytes.Buffer
	withCreds := &env{t: t, cli: cli, reg: reg, dep: newDeployer(t, compose.Options{
		Keychain: kc, HealthInterval: 200 * time.Millisecond, Logger: zerolog.New(&logs).Level(zerolog.DebugLevel),
	})}
	res = withCreds.deploy(deployer.Plan{Target: withCreds.target(p, "web"), To: to})
	if res.Outcome != deployer.Updated {
		t.Fatalf("outcome = %s (%v), want %s", res.Outcome, res.Cause, deployer.Updated)
	}
	if got := withCreds.runningDigest(p, "web"); got != d2 {
		t.Errorf("running digest = %s, want %s", got, d2)
	}
	if got := readFile(t, p, "compose.yaml"); !strings.Contains(got, reg.Ref("demo/app:1.1.0")+"\n") {
		t.Errorf("compose.yaml does not name 1.1.0:\n%s", got)
	}
	withCreds.upChangesNothing(p)
	if !strings.Contains(logs.String(), `"step":"pull"`) {
		t.Errorf("the injected logger got no step lines:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "s3cret") || strings.Contains(logs.String(), auth) {
		t.Errorf("the log leaks the credentials")
	}
	if n := reg.Count("", "token"); n == 0 {
		t.Errorf("registry issued no token: credentials were not used")
	}
}

func discovered(t *testing.T, e *env, id string) deployer.Target {
	t.Helper()
	ctx := testenv.Context(t, 30*time.Second)
	res, err := discovery.Discover(ctx, e.cli)
	if err != nil {
		t.Fatalf("discover: %v", err)
	}
	for _, tg := range res.Targets {
		if tg.ID == id {
			return tg
		}
	}
	t.Fatalf("discovery did not find %s", id)
	return deployer.Target{}
}

func stepDetail(res deployer.Result, name string) string {
	for _, s := range res.Steps {
		if s.Name == name {
			return s.Detail
		}
	}
	return ""
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// A compose file that pins the digest gets the new tag and digest written;
// no tag is moved.
func TestDeployDigestPinnedReference(t *testing.T) {
	t.Parallel()
	e := newEnv(t, compose.Options{})
	v1 := e.push("1.0.0", testenv.App{Version: "1.0.0"})
	v2 := e.push("1.1.0", testenv.App{Version: "1.1.0"})
	file := simpleCompose(v1.Familiar(), "")
	p := e.project(map[string]string{"compose.yaml": file})

	res := e.deploy(deployer.Plan{Target: e.target(p, "web"), To: v2})

	if res.Outcome != deployer.Updated {
		t.Fatalf("outcome = %s (%v), want %s", res.Outcome, res.Cause, deployer.Updated)
	}
	if got, want := readFile(t, p, "compose.yaml"), strings.Replace(file, v1.Familiar(), v2.Familiar(), 1); got != want {
		t.Errorf("compose.yaml =\n%s\nwant\n%s", got, want)
	}
	if slices.Contains(stepNames(res), "tag image") {
		t.Errorf("steps %v moved a tag for a digest-pinned reference", stepNames(res))
	}
	if got := e.runningDigest(p, "web"); got != v2.Digest {
		t.Errorf("running digest = %s, want %s", got, v2.Digest)
	}
	e.upChangesNothing(p)
}
