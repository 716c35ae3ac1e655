package faults

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"github.com/shipwatch/shipwatch/internal/testenv"

	"github.com/shipwatch/shipwatch/verify/sigtest"
)

// Platform is where the workload of a run lives.
type Platform string

// The platforms.
const (
	Compose Platform = "compose"
	Swarm   Platform = "swarm"
)

// Options tune the environment of one run.
type Options struct {
	// Policy is "semver" (the candidate is a new tag: the compose file is
	// rewritten) or "digest" (the same tag moves to a new digest).
	Policy string
	// Scan requires a signed, fresh vulnerability scan of every deployed
	// digest (max severity high, max age 7d).
	Scan bool
	// Referrers enables the registry's OCI 1.1 referrers API (signatures
	// are then found through it; else through the fallback tag).
	Referrers bool
	// Replicas of the workload (default 1).
	Replicas int
	// Restart is the Compose restart policy ("no" or "unless-stopped").
	Restart string
	// SwarmUpdate, when set, is the service's own update_config; nil
	// leaves shipwatch's defaults to apply.
	SwarmUpdate   *swarm.UpdateConfig
	SwarmRollback *swarm.UpdateConfig
	// EngineProxy routes the agent's engine connections through a proxy
	// the run can cut.
	EngineProxy bool
	// HealthTimeout is rollout.health_timeout (default 30s).
	HealthTimeout time.Duration
	// SwarmDeadline is rollout.swarm_deadline (0: derived).
	SwarmDeadline time.Duration
}

// Env is one run's world: a registry with token auth behind a fault
// injector, signing keys, the workload (a Compose project or a Swarm
// service) on the real engine, the agent's configuration with planted
// canary secrets, a notification receiver and a prober on the published
// port. Everything is removed when the run's test ends.
type Env struct {
	T        *testing.T
	Rng      *mrand.Rand
	Platform Platform
	Opts     Options
	ID       string // unique per run, in image labels and names

	Cli      *client.Client
	Reg      *testenv.Registry
	Faults   *Injector
	Proxy    *EngineProxy
	Trusted  *sigtest.Key // the policy's release key
	Scanner  *sigtest.Key // the policy's scanner key
	Stranger *sigtest.Key // a key the policy does not trust

	Dir      string // config, keys, state
	CfgPath  string
	State    string
	APIURL   string
	Port     int // published port of the workload
	Bin      string
	Canaries map[string]string
	user     string
	hookURL  string

	Repo    string // "demo/app"
	Tag     string // tag that runs at the start
	Initial string // digest that runs at the start
	Target  string // target ID
	Project *testenv.ComposeProject
	Service string // Swarm service ID

	mu      sync.Mutex
	allowed map[string]bool
	pushed  map[string]string // digest → description
	hooks   [][]byte          // notification bodies
	texts   map[string][]byte // API answers collected
	agents  []*Agent
	prober  *Prober
	notes   []string
}

// Canary names.
const (
	CanaryRegistry = "registry password"
	CanaryAPIToken = "API token"
	CanaryWebhook  = "notification webhook URL"
)

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// NewEnv builds the world of one run and starts the workload on the
// initial version (signed, allowed).
func NewEnv(t *testing.T, seed int64, platform Platform, bin string, opts Options) *Env {
	t.Helper()
	if opts.Policy == "" {
		opts.Policy = "semver"
	}
	if opts.Replicas == 0 {
		opts.Replicas = 1
	}
	if opts.Restart == "" {
		opts.Restart = "no"
	}
	if opts.HealthTimeout == 0 {
		opts.HealthTimeout = 30 * time.Second
	}
	e := &Env{
		T: t, Rng: mrand.New(mrand.NewPCG(uint64(seed), 0x5eed)), Platform: platform, Opts: opts,
		ID: testenv.Name(""), Bin: bin, Repo: "demo/app", user: "fault-user",
		Canaries: map[string]string{
			CanaryRegistry: "canary-reg-" + randHex(12),
			CanaryAPIToken: "canary-api-" + randHex(12),
			CanaryWebhook:  "canary-hook-" + randHex(12),
		},
		allowed: map[string]bool{}, pushed: map[string]string{}, texts: map[string][]byte{},
	}
	e.Cli = testenv.Engine(t)
	if platform == Swarm {
		testenv.Swarm(t, e.Cli)
	}
	regOpts := []testenv.RegistryOption{testenv.WithTokenAuth(e.user, e.Canaries[CanaryRegistry])}
	if opts.Referrers {
		regOpts = append(regOpts, testenv.WithReferrersAPI())
	}
	e.Reg = testenv.NewRegistry(t, regOpts...)
	testenv.RemoveImagesOf(t, e.Cli, e.Reg.Host)
	e.Faults = NewInjector()
	e.Faults.Attach(e.Reg)
	e.Trusted = sigtest.MustKey(t, "")
	e.Scanner = sigtest.MustKey(t, "")
	e.Stranger = sigtest.MustKey(t, "")

	// A short directory: the engine proxy's socket lives in it.
	dir, err := os.MkdirTemp("", "swf")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	e.Dir = dir
	if opts.EngineProxy {
		e.Proxy, err = NewEngineProxy(dir, EngineSocket())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = e.Proxy.Close() })
	}
	e.startHookReceiver()
	e.Port = freePort(t)
	e.startWorkload()
	e.writeConfig()
	return e
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Note records something about the run for its report line.
func (e *Env) Note(format string, args ...any) {
	e.mu.Lock()
	e.notes = append(e.notes, fmt.Sprintf(format, args...))
	e.mu.Unlock()
	e.T.Logf(format, args...)
}

// Notes returns the run's notes.
func (e *Env) Notes() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.notes...)
}

func (e *Env) startHookReceiver() {
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		e.mu.Lock()
		e.hooks = append(e.hooks, body)
		e.mu.Unlock()
	}))
	e.T.Cleanup(hook.Close)
	e.hookURL = hook.URL + "/hook/" + e.Canaries[CanaryWebhook]
}

// Notifications returns the notification bodies received so far.
func (e *Env) Notifications() [][]byte {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([][]byte(nil), e.hooks...)
}

func (e *Env) initialTag() string {
	if e.Opts.Policy == "digest" {
		return "1.0"
	}
	return "1.0.0"
}

// startWorkload pushes the initial version and runs it.
func (e *Env) startWorkload() {
	t := e.T
	e.Tag = e.initialTag()
	v := e.Push(e.Tag, e.Good(e.App("1.0.0")))
	e.Initial = v.Digest
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// No shipwatch.enable label: the run's own configuration opts the
	// target in, so that other tests' agents and CLIs on this shared engine
	// leave it alone (they would fail to check it without the registry's
	// credentials).
	labels := `shipwatch.semver: "^1"`
	if e.Opts.Policy == "digest" {
		labels = `shipwatch.policy: digest`
	}
	switch e.Platform {
	case Compose:
		// The user pulled the image with credentials, then ran compose up.
		pull, err := e.Cli.ImagePull(ctx, e.Reg.Ref(e.Repo+":"+e.Tag), client.ImagePullOptions{RegistryAuth: e.registryAuth()})
		if err == nil {
			err = pull.Wait(ctx)
		}
		if err != nil {
			t.Fatalf("initial pull: %v", err)
		}
		ports := fmt.Sprintf("\n    ports: [\"127.0.0.1:%d:8080\"]", e.Port)
		if e.Opts.Replicas > 1 {
			ports, e.Port = "", 0 // replicas cannot share a fixed host port
		}
		e.Project = testenv.NewComposeProject(t, map[string]string{"compose.yaml": fmt.Sprintf(`# fault suite workload
services:
  web:
    image: %s
    restart: %q%s
    labels: {%s}
    deploy: {replicas: %d}
`, e.Reg.Ref(e.Repo+":"+e.Tag), e.Opts.Restart, ports, labels, e.Opts.Replicas)})
		e.Project.MustUp(t)
		e.Target = "compose/" + e.Project.Name + "/web"
	case Swarm:
		n := uint64(e.Opts.Replicas)
		lbl := map[string]string{testenv.LabelKey: "1", "shipwatch.semver": "^1"}
		if e.Opts.Policy == "digest" {
			delete(lbl, "shipwatch.semver")
			lbl["shipwatch.policy"] = "digest"
		}
		spec := swarm.ServiceSpec{
			Annotations: swarm.Annotations{Name: testenv.Name("svc"), Labels: lbl},
			TaskTemplate: swarm.TaskSpec{
				ContainerSpec: &swarm.ContainerSpec{Image: e.Reg.Ref(e.Repo + ":" + e.Tag + "@" + v.Digest)},
				RestartPolicy: &swarm.RestartPolicy{Condition: swarm.RestartPolicyConditionAny},
			},
			Mode:           swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &n}},
			UpdateConfig:   e.Opts.SwarmUpdate,
			RollbackConfig: e.Opts.SwarmRollback,
		}
		// Host mode: the routing mesh (ingress) needs IPVS, which this
		// machine's kernel does not offer. Replicas cannot share the port.
		if e.Opts.Replicas == 1 {
			spec.EndpointSpec = &swarm.EndpointSpec{Ports: []swarm.PortConfig{{Protocol: "tcp", TargetPort: 8080, PublishedPort: uint32(e.Port), PublishMode: swarm.PortConfigPublishModeHost}}}
		} else {
			e.Port = 0
		}
		created, err := e.Cli.ServiceCreate(ctx, client.ServiceCreateOptions{Spec: spec, EncodedRegistryAuth: e.registryAuth()})
		if err != nil {
			t.Fatalf("service create: %v", err)
		}
		e.Service = created.ID
		t.Cleanup(func() { testenv.RemoveService(t, e.Cli, created.ID) })
		e.Target = "swarm/" + spec.Name
	}
	testenv.Eventually(t, 2*time.Minute, 250*time.Millisecond, func() (bool, string) {
		o := e.observeWorkload(ctx)
		l := live(o)
		healthy := 0
		for _, c := range l {
			if c.Health == "healthy" {
				healthy++
			}
		}
		return healthy == e.Opts.Replicas, fmt.Sprintf("%d of %d replicas healthy", healthy, e.Opts.Replicas)
	})
	if e.Port != 0 {
		testenv.Eventually(t, time.Minute, 100*time.Millisecond, func() (bool, string) {
			resp, err := http.Get(e.ProbeURL())
			if err != nil {
				return false, err.Error()
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK, resp.Status
		})
	}
}

// ProbeURL is the workload's published endpoint.
func (e *Env) ProbeURL() string { return fmt.Sprintf("http://127.0.0.1:%d/", e.Port) }

// StartProber starts probing the published port every 50 ms (single
// published port only).
func (e *Env) StartProber() {
	if e.Port == 0 || e.prober != nil {
		return
	}
	e.prober = StartProber(e.ProbeURL(), 50*time.Millisecond)
	e.T.Cleanup(e.prober.Stop)
}
