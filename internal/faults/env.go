package faults

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/moby/moby/api/pkg/authconfig"
	"github.com/moby/moby/api/types/registry"
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
		upstream := "/var/run/docker.sock"
		if h := os.Getenv("DOCKER_HOST"); strings.HasPrefix(h, "unix://") {
			upstream = strings.TrimPrefix(h, "unix://")
		}
		e.Proxy, err = NewEngineProxy(dir, upstream)
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

// Version is one image of the workload.
type Version struct {
	App     testenv.App
	Sign    *sigtest.Key // nil: unsigned
	Scan    ScanKind
	Digest  string
	Tag     string
	Allowed bool
	extra   v1.Layer // a layer of its own (PushCandidate)
}

// ScanKind is the vulnerability scan attested for a version.
type ScanKind string

// Scans.
const (
	ScanNone   ScanKind = ""         // no scan attestation
	ScanFresh  ScanKind = "fresh"    // clean, finished an hour ago, signed by the scanner
	ScanStale  ScanKind = "stale"    // clean but 30 days old
	ScanBad    ScanKind = "critical" // fresh, with a critical finding
	ScanWrong  ScanKind = "wrongkey" // fresh and clean, signed by a stranger
	scanMaxAge          = 7 * 24 * time.Hour
)

// App returns the workload's app for version with this run's label (so
// that its digests are the run's own) and a fast healthcheck.
func (e *Env) App(version string) testenv.App {
	return testenv.App{Version: version, Health: testenv.FastHealth, Labels: map[string]string{"org.shipwatch.faults.run": e.ID}}
}

// Push builds, pushes, signs and attests v as repo:tag and records whether
// the policy allows it.
func (e *Env) Push(tag string, v Version) Version {
	e.T.Helper()
	img := v.App.MustImage(e.T)
	if v.extra != nil {
		var err error
		if img, err = mutate.AppendLayers(img, v.extra); err != nil {
			e.T.Fatal(err)
		}
	}
	ref, err := name.ParseReference(e.Reg.Ref(e.Repo+":"+tag), name.Insecure)
	if err != nil {
		e.T.Fatal(err)
	}
	if err := remote.Write(ref, img, e.driverOptions()...); err != nil {
		e.T.Fatalf("push %s: %v", ref, err)
	}
	d, _ := img.Digest()
	v.Digest, v.Tag = d.String(), tag
	pinned := e.Reg.Ref(e.Repo + "@" + v.Digest)
	if v.Sign != nil {
		sigtest.MustSign(e.T, e.Reg, pinned, v.Sign, sigtest.Bundle)
	}
	if v.Scan != ScanNone {
		scan := sigtest.Scan{FinishedAt: time.Now().Add(-time.Hour)}
		signer := e.Scanner
		switch v.Scan {
		case ScanStale:
			scan.FinishedAt = time.Now().Add(-30 * 24 * time.Hour)
		case ScanBad:
			scan.Vulns = []sigtest.Vuln{{ID: "CVE-2099-0001", Severity: "CRITICAL"}}
		case ScanWrong:
			signer = e.Stranger
		}
		if err := sigtest.AttestVuln(context.Background(), e.Reg, pinned, signer, sigtest.Bundle, scan); err != nil {
			e.T.Fatalf("attest scan of %s: %v", pinned, err)
		}
	}
	v.Allowed = v.Sign == e.Trusted && (!e.Opts.Scan || v.Scan == ScanFresh)
	e.mu.Lock()
	e.allowed[v.Digest] = v.Allowed
	e.pushed[v.Digest] = fmt.Sprintf("%s %s signed=%v scan=%s", tag, v.App.Version, v.Sign != nil, v.Scan)
	e.mu.Unlock()
	return v
}

// Good is a version the policy allows: signed by the trusted key, with a
// fresh clean scan when the policy wants one.
func (e *Env) Good(app testenv.App) Version {
	v := Version{App: app, Sign: e.Trusted}
	if e.Opts.Scan {
		v.Scan = ScanFresh
	}
	return v
}

// Allowed returns the digests the policy allows (ground truth).
func (e *Env) Allowed() map[string]bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]bool{}
	for d, ok := range e.allowed {
		if ok {
			out[d] = true
		}
	}
	return out
}

// driverOptions are the suite's own registry options: its User-Agent keeps
// the fault rules off its requests.
func (e *Env) driverOptions() []remote.Option {
	return []remote.Option{remote.WithAuth(e.Reg.Auth()), remote.WithTransport(e.Reg.Transport()), remote.WithUserAgent(driverAgent)}
}

// MoveTag points repo:tag at digest (already in the registry), as a
// re-push of the tag would.
func (e *Env) MoveTag(tag, digest string) error {
	src, err := name.NewDigest(e.Reg.Ref(e.Repo+"@"+digest), name.Insecure)
	if err != nil {
		return err
	}
	desc, err := remote.Get(src, e.driverOptions()...)
	if err != nil {
		return fmt.Errorf("get %s: %w", digest, err)
	}
	dst, err := name.NewTag(e.Reg.Ref(e.Repo+":"+tag), name.Insecure)
	if err != nil {
		return err
	}
	return remote.Tag(dst, desc, e.driverOptions()...)
}

// DeleteRef removes repo:tag or repo@digest from the registry.
func (e *Env) DeleteRef(ref string) error {
	r, err := name.ParseReference(e.Reg.Ref(e.Repo+ref), name.Insecure)
	if err != nil {
		return err
	}
	return remote.Delete(r, e.driverOptions()...)
}

func (e *Env) registryAuth() string {
	auth, err := authconfig.Encode(registry.AuthConfig{Username: e.user, Password: e.Canaries[CanaryRegistry], ServerAddress: e.Reg.Host})
	if err != nil {
		e.T.Fatal(err)
	}
	return auth
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

func (e *Env) writeConfig() {
	t := e.T
	write := func(name, content string) string {
		p := filepath.Join(e.Dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keyPath, err := e.Trusted.WritePublicKey(e.Dir, "release.pub")
	if err != nil {
		t.Fatal(err)
	}
	scanKey, err := e.Scanner.WritePublicKey(e.Dir, "scanner.pub")
	if err != nil {
		t.Fatal(err)
	}
	passFile := write("registry-password", e.Canaries[CanaryRegistry]+"\n")
	tokenFile := write("api-token", e.Canaries[CanaryAPIToken]+"\n")
	apiPort := freePort(t)
	e.APIURL = fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	e.State = filepath.Join(e.Dir, "state.db")
	scan := ""
	if e.Opts.Scan {
		scan = "\n      scan: {signed_by: [scanner], max_severity: high, max_age: 7d, missing: block}"
	}
	// Only this run's target is enabled: the engine is shared with other
	// tests whose workloads carry shipwatch labels too.
	sel := "compose: " + strings.TrimPrefix(e.Target, "compose/")
	if e.Platform == Swarm {
		sel = "swarm: " + strings.TrimPrefix(e.Target, "swarm/")
	}
	swarmDeadline := ""
	if e.Opts.SwarmDeadline > 0 {
		swarmDeadline = ", swarm_deadline: " + e.Opts.SwarmDeadline.String()
	}
	cfg := fmt.Sprintf(`# fault suite agent (run %s)
schedule: "@every 3s"
state: {path: %s}
api: {listen: "127.0.0.1:%d", token_file: %s}
registries:
  - host: %q
    username: %s
    password_file: %s
notify:
  webhooks: [{url: %q}]
rollout: {health_timeout: %s, shutdown_grace: 2m%s}
targets:
  - %s
  - {compose: "*/*", enable: false}
  - {swarm: "*", enable: false}
verify:
  authorities:
    release: {key_file: %s}
    scanner: {key_file: %s}
  policies:
    - name: faults
      images: ["%s/**"]
      signed_by: [release]%s
`, e.ID, e.State, apiPort, tokenFile, e.Reg.Host, e.user, passFile, e.hookURL,
		e.Opts.HealthTimeout, swarmDeadline, sel, keyPath, scanKey, e.Reg.Host, scan)
	e.CfgPath = write("shipwatch.yaml", cfg)
}

// StartAgent starts an agent process on the run's configuration (through
// the engine proxy when the run has one).
func (e *Env) StartAgent() *Agent {
	e.T.Helper()
	var env []string
	if e.Proxy != nil {
		env = append(env, "DOCKER_HOST="+e.Proxy.Host())
	}
	a, err := StartAgent(e.Bin, e.CfgPath, env...)
	if err != nil {
		e.T.Fatal(err)
	}
	e.mu.Lock()
	e.agents = append(e.agents, a)
	e.mu.Unlock()
	e.T.Cleanup(func() {
		if !a.Exited() {
			a.Kill()
		}
	})
	return a
}

// Agents returns every agent process the run started.
func (e *Env) Agents() []*Agent {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]*Agent(nil), e.agents...)
}

func (e *Env) agentAlive() bool {
	for _, a := range e.Agents() {
		if !a.Exited() {
			return true
		}
	}
	return false
}

// API calls the agent's API with token ("" for none) and returns the
// status and body; the body is kept for the secret sweep.
func (e *Env) API(method, path, token, body string) (int, []byte, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.APIURL+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := &http.Client{Timeout: 2 * time.Minute}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	e.mu.Lock()
	key := fmt.Sprintf("api %s %s (%d)", method, path, resp.StatusCode)
	e.texts[key] = append(e.texts[key], data...)
	e.mu.Unlock()
	return resp.StatusCode, data, err
}

// HistoryEntry is a history entry as the API returns it.
type HistoryEntry struct {
	ID       uint64 `json:"id"`
	Mode     string `json:"mode"`
	From     string `json:"from"`
	To       string `json:"to"`
	Decision string `json:"decision"`
	Outcome  string `json:"outcome"`
	Reason   string `json:"reason"`
	Running  string `json:"running"`
	Duration int64  `json:"duration_ms"`
}

// History asks the running agent for the target's history (newest first);
// nil when the agent cannot answer.
func (e *Env) History() []HistoryEntry {
	c := &http.Client{Timeout: 5 * time.Second}
	req, _ := http.NewRequest(http.MethodGet, e.APIURL+"/v1/history?limit=0&target="+e.Target, nil)
	req.Header.Set("Authorization", "Bearer "+e.Canaries[CanaryAPIToken])
	resp, err := c.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var out []HistoryEntry
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&out) != nil {
		return nil
	}
	return out
}

// WaitHistory polls the agent's history until match accepts an entry and
// returns it; ok is false after timeout.
func (e *Env) WaitHistory(timeout time.Duration, match func(HistoryEntry) bool) (HistoryEntry, bool) {
	deadline := time.Now().Add(timeout)
	for {
		for _, h := range e.History() {
			if match(h) {
				return h, true
			}
		}
		if time.Now().After(deadline) || !e.agentAlive() {
			return HistoryEntry{}, false
		}
		time.Sleep(300 * time.Millisecond) // polling interval of a condition with a deadline
	}
}

// Outcome matches entries with outcome for digest ("" any digest).
func Outcome(outcome, digest string) func(HistoryEntry) bool {
	return func(h HistoryEntry) bool {
		return h.Outcome == outcome && (digest == "" || digestOf(h.To) == digest)
	}
}
