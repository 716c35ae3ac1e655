package compose_test

import (
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/docker/compose/v5/pkg/api"
	"github.com/moby/moby/client"

	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/deployer/compose"
	"github.com/shipwatch/shipwatch/imageref"
	"github.com/shipwatch/shipwatch/internal/testenv"
)

// fastHealth is a healthcheck that decides within about a second.
var fastHealth = testenv.FastHealth

// env is one test's engine, registry and deployer.
type env struct {
	t   *testing.T
	cli *client.Client
	reg *testenv.Registry
	dep *compose.Deployer
}

func newEnv(t *testing.T, opts compose.Options, regOpts ...testenv.RegistryOption) *env {
	t.Helper()
	cli := testenv.Engine(t)
	reg := testenv.NewRegistry(t, regOpts...)
	testenv.RemoveImagesOf(t, cli, reg.Host)
	return &env{t: t, cli: cli, reg: reg, dep: newDeployer(t, opts)}
}

// newEnvWrapped is newEnv with the deployer's engine calls going through
// wrap (fault injection at the engine boundary).
func newEnvWrapped(t *testing.T, opts compose.Options, wrap func(compose.Engine) compose.Engine) *env {
	t.Helper()
	cli := testenv.Engine(t)
	reg := testenv.NewRegistry(t)
	testenv.RemoveImagesOf(t, cli, reg.Host)
	opts.Engine = wrap(cli)
	return &env{t: t, cli: cli, reg: reg, dep: newDeployer(t, opts)}
}

// newDeployer is compose.New with test timings: 200ms between health
// samples, bounded restores.
func newDeployer(t *testing.T, opts compose.Options) *compose.Deployer {
	t.Helper()
	if opts.HealthInterval == 0 {
		opts.HealthInterval = 200 * time.Millisecond
	}
	if opts.RestoreTimeout == 0 {
		opts.RestoreTimeout = 2 * time.Minute
	}
	ctx := testenv.Context(t, 30*time.Second)
	dep, err := compose.New(ctx, opts)
	if err != nil {
		t.Fatalf("compose.New: %v", err)
	}
	t.Cleanup(func() { _ = dep.Close() })
	return dep
}

// assertNoBackups fails when a rollout left a backup file in dir.
func assertNoBackups(t *testing.T, dir string) {
	t.Helper()
	left, _ := filepath.Glob(filepath.Join(dir, "*.shipwatch-*"))
	hidden, _ := filepath.Glob(filepath.Join(dir, ".*.shipwatch-*"))
	if all := append(left, hidden...); len(all) > 0 {
		t.Errorf("rollout left files behind: %v", all)
	}
}

// push pushes app as demo/app:tag and returns the pinned reference.
//
// The image is labelled with the registry's address: testenv.RemoveImagesOf
// force-removes images by ID, so two parallel tests must never share an
// image ID.
func (e *env) push(tag string, app testenv.App) imageref.Ref {
	e.t.Helper()
	app.Labels = maps.Clone(app.Labels)
	if app.Labels == nil {
		app.Labels = map[string]string{}
	}
	app.Labels["shipwatch.test.registry"] = e.reg.Host
	d := e.reg.MustPush(e.t, "demo/app:"+tag, app.MustImage(e.t))
	return imageref.MustParse(e.reg.Ref("demo/app:" + tag)).WithDigest(d)
}

// ref is the reference of demo/app:tag in the test registry.
func (e *env) ref(tag string) string { return e.reg.Ref("demo/app:" + tag) }

// project writes files and runs `docker compose up -d` through the SDK.
func (e *env) project(files map[string]string) *testenv.ComposeProject {
	e.t.Helper()
	p := testenv.NewComposeProject(e.t, files)
	p.MustUp(e.t)
	return p
}

// target builds the deployer.Target of a service from its containers'
// labels and inspect, as discovery does.
func (e *env) target(p *testenv.ComposeProject, svc string) deployer.Target {
	e.t.Helper()
	ctx := testenv.Context(e.t, 30*time.Second)
	ctrs := e.containers(p, svc)
	if len(ctrs) == 0 {
		e.t.Fatalf("service %s has no containers", svc)
	}
	c := ctrs[0].Container
	img, err := imageref.Parse(c.Config.Image)
	if err != nil {
		e.t.Fatal(err)
	}
	ii, err := e.cli.ImageInspect(ctx, c.Image)
	if err != nil {
		e.t.Fatal(err)
	}
	digest := ""
	for _, rd := range ii.RepoDigests {
		if r, err := imageref.Parse(rd); err == nil && r.SameRepo(img) {
			digest = r.Digest
		}
	}
	var ids []string
	for _, c := range ctrs {
		ids = append(ids, c.Container.ID)
	}
	sort.Strings(ids)
	l := c.Config.Labels
	var envFiles []string
	if v := l[api.EnvironmentFileLabel]; v != "" {
		envFiles = strings.Split(v, ",")
	}
	return deployer.Target{
		ID:       "compose/" + p.Name + "/" + svc,
		Kind:     deployer.KindCompose,
		Name:     p.Name + "/" + svc,
		Image:    img.Tagged(),
		Digest:   digest,
		Labels:   l,
		Replicas: len(ctrs),
		Compose: &deployer.ComposeService{
			Project:     p.Name,
			Service:     svc,
			WorkingDir:  l[api.WorkingDirLabel],
			ConfigFiles: strings.Split(l[api.ConfigFilesLabel], ","),
			EnvFiles:    envFiles,
			ConfigHash:  l[api.ConfigHashLabel],
			ImageID:     c.Image,
			Containers:  ids,
		},
	}
}

// containers inspects the service's containers, ordered by number.
func (e *env) containers(p *testenv.ComposeProject, svc string) []inspected {
	e.t.Helper()
	ctx := testenv.Context(e.t, 30*time.Second)
	list, err := e.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).
		Add("label", api.ProjectLabel+"="+p.Name).Add("label", api.ServiceLabel+"="+svc).Add("label", api.OneoffLabel+"=False")})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []inspected
	for _, c := range list.Items {
		res, err := e.cli.ContainerInspect(ctx, c.ID, client.ContainerInspectOptions{})
		if err != nil {
			e.t.Fatal(err)
		}
		out = append(out, inspected(res))
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Container.Config.Labels[api.ContainerNumberLabel] < out[j].Container.Config.Labels[api.ContainerNumberLabel]
	})
	return out
}

type inspected client.ContainerInspectResult

// ids returns the IDs of every container of the project, by service.
func (e *env) ids(p *testenv.ComposeProject) map[string][]string {
	e.t.Helper()
	ctx := testenv.Context(e.t, 30*time.Second)
	cs, err := p.Containers(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string][]string{}
	for _, c := range cs {
		out[c.Service] = append(out[c.Service], c.ID)
	}
	for _, v := range out {
		sort.Strings(v)
	}
	return out
}

// runningDigest is the digest of demo/app that the service's containers
// run; it fails the test when replicas disagree.
func (e *env) runningDigest(p *testenv.ComposeProject, svc string) string {
	e.t.Helper()
	ctx := testenv.Context(e.t, 30*time.Second)
	var digests []string
	for _, c := range e.containers(p, svc) {
		ii, err := e.cli.ImageInspect(ctx, c.Container.Image)
		if err != nil {
			e.t.Fatal(err)
		}
		d := ""
		for _, rd := range ii.RepoDigests {
			if r, err := imageref.Parse(rd); err == nil && r.Path == "demo/app" {
				d = r.Digest
			}
		}
		digests = append(digests, d)
	}
	digests = slices.Compact(digests)
	if len(digests) != 1 {
		e.t.Fatalf("replicas of %s run digests %v, want one", svc, digests)
	}
	return digests[0]
}

// serving returns what the service's first container answers on its
// published port 8080 ("testapp 1.0.0").
func (e *env) serving(p *testenv.ComposeProject, svc string) string {
	e.t.Helper()
	cs := e.containers(p, svc)
	if len(cs) == 0 {
		e.t.Fatalf("service %s has no container", svc)
	}
	c := cs[0].Container
	if c.State == nil || !c.State.Running {
		e.t.Fatalf("container of %s is not running: %+v", svc, c.State)
	}
	var port string
	for p, bindings := range c.NetworkSettings.Ports {
		if p.Num() == 8080 && len(bindings) > 0 {
			port = bindings[0].HostPort
		}
	}
	if port == "" {
		e.t.Fatalf("service %s publishes no port 8080", svc)
	}
	var body string
	testenv.Eventually(e.t, 10*time.Second, 100*time.Millisecond, func() (bool, string) {
		resp, err := http.Get("http://127.0.0.1:" + port + "/")
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = strings.TrimSpace(string(b))
		return resp.StatusCode == http.StatusOK, fmt.Sprintf("status %d", resp.StatusCode)
	})
	return body
}

// upChangesNothing runs `docker compose up -d` through the SDK, as the
// user's CLI would, and checks that no container was recreated.
func (e *env) upChangesNothing(p *testenv.ComposeProject) {
	e.t.Helper()
	before := e.ids(p)
	ctx := testenv.Context(e.t, 2*time.Minute)
	if err := p.Up(ctx); err != nil {
		e.t.Fatalf("compose up after the rollout: %v", err)
	}
	if after := e.ids(p); !equalIDs(before, after) {
		e.t.Errorf("docker compose up -d after the rollout recreated containers: got %v, want %v", after, before)
	}
}

func equalIDs(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

func (e *env) deploy(plan deployer.Plan) deployer.Result {
	e.t.Helper()
	ctx := testenv.Context(e.t, 3*time.Minute)
	res := e.dep.Deploy(ctx, plan, func(s deployer.Step) {
		e.t.Logf("step %-28s %8s %s %v", s.Name, s.Took.Round(time.Millisecond), s.Detail, errOrNil(s.Err))
	})
	e.t.Logf("outcome %s cause=%v", res.Outcome, res.Cause)
	return res
}

func errOrNil(err error) string {
	if err == nil {
		return ""
	}
	return "ERR " + err.Error()
}

func readFile(t *testing.T, p *testenv.ComposeProject, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(p.Dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func stepNames(res deployer.Result) []string {
	var names []string
	for _, s := range res.Steps {
		names = append(names, s.Name)
	}
	return names
}

// simpleCompose is a one-service project publishing port 8080 on a random
// loopback port.
func simpleCompose(image string, extra string) string {
	return "services:\n  web:\n    image: " + image + "\n    ports:\n      - \"127.0.0.1::8080\"\n" + extra
}
