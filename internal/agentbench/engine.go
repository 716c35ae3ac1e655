// Package agentbench measures the shipwatch agent as operators run it: the
// real binary, in its own process, watching many Compose services whose
// images live in an in-process registry. A fake Docker Engine API on a unix
// socket stands in for the engine (a thousand real containers do not fit on
// a test machine); the agent cannot tell the difference for discovery. The
// benchmark samples the agent's resident memory and CPU time from /proc and
// times how long a registry push takes to become a rollout, by webhook and
// by polling. cmd/agentbench runs it; docs/benchmarks/agent.md has figures.
package agentbench

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/api/types/image"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/api/types/storage"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/api/types/system"
)

// EngineAPIVersion is what the fake engine announces: the engine of the
// benchmark machine (Docker 20.10.24), so that the agent negotiates down to
// it exactly as it does there.
const EngineAPIVersion = "1.41"

// Service is one Compose service of the fake engine, running one container.
type Service struct {
	Project string
	Name    string
	// Image is the reference the service was started from ("host/repo:tag").
	Image string
	// Digest is the manifest digest the container runs (its RepoDigest).
	Digest string
	// Labels are extra container labels (shipwatch.*), next to the
	// com.docker.compose.* labels the engine adds.
	Labels map[string]string
}

// ID is the shipwatch target ID of the service ("compose/project/name").
func (s Service) ID() string { return "compose/" + s.Project + "/" + s.Name }

// Engine is a fake Docker Engine API serving the read-only calls of
// discovery (ping, version, info, container list and inspect, image list
// and inspect) and the event stream that tells the agent's discovery cache
// about changes, for a fixed set of Compose services. Any other call is answered 404 and
// counted under "unknown", so a benchmark can tell when the agent did
// something the fake does not model. It is safe for concurrent use.
type Engine struct {
	// WorkDir is the working directory the containers' Compose labels name.
	// It does not exist: a rollout attempted against the fake engine fails
	// when it loads the project, before it changes anything.
	WorkDir string

	mu       sync.Mutex
	services []Service
	byID     map[string]int                   // container ID or image ID → index
	calls    map[string]int                   // route → count
	subs     map[chan events.Message]struct{} // open /events streams
	srv      *http.Server
	ln       net.Listener
	done     chan struct{}
}

// NewEngine returns a fake engine for services (not yet serving).
func NewEngine(services []Service) *Engine {
	e := &Engine{WorkDir: "/nonexistent/agentbench", services: append([]Service(nil), services...), byID: map[string]int{}, calls: map[string]int{},
		subs: map[chan events.Message]struct{}{}}
	for i, s := range e.services {
		e.byID[containerID(s)] = i
		e.byID[imageID(s)] = i
	}
	return e
}

// Serve listens on the unix socket at path (removed first when it is a
// stale socket) and serves until Close. DOCKER_HOST=unix://<path> points a
// client at it.
func (e *Engine) Serve(path string) error {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		_ = os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("fake engine: listen on %s: %w", path, err)
	}
	e.ln = ln
	e.srv = &http.Server{Handler: http.HandlerFunc(e.serveHTTP), ReadHeaderTimeout: 10 * time.Second}
	e.done = make(chan struct{})
	go func() {
		defer close(e.done)
		_ = e.srv.Serve(ln)
	}()
	return nil
}

// Close stops serving and removes the socket.
func (e *Engine) Close() error {
	if e.srv == nil {
		return nil
	}
	err := e.srv.Close()
	<-e.done
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// SetDigest makes the service with target ID id run digest from now on, as
// if a rollout had replaced its container. It reports whether id exists.
// Open event streams get the "start" event of the replacing container.
func (e *Engine) SetDigest(id, digest string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := range e.services {
		if e.services[i].ID() == id {
			e.services[i].Digest = digest
			now := time.Now()
			m := events.Message{Type: events.ContainerEventType, Action: events.ActionStart, Scope: "local",
				Actor: events.Actor{ID: containerID(e.services[i])}, Time: now.Unix(), TimeNano: now.UnixNano()}
			for sub := range e.subs {
				select {
				case sub <- m:
				default: // a stream that does not keep up is cut, as the engine does
					close(sub)
					delete(e.subs, sub)
				}
			}
			return true
		}
	}
	return false
}

// serveEvents streams events (GET /events) until the client goes.
func (e *Engine) serveEvents(w http.ResponseWriter, r *http.Request) {
	sub := make(chan events.Message, 64)
	e.mu.Lock()
	e.calls["GET /events"]++
	e.subs[sub] = struct{}{}
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		delete(e.subs, sub)
		e.mu.Unlock()
	}()
	h := w.Header()
	h.Set("Api-Version", EngineAPIVersion)
	h.Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	if flusher != nil {
		flusher.Flush()
	}
	enc := json.NewEncoder(w)
	for {
		select {
		case <-r.Context().Done():
			return
		case m, ok := <-sub:
			if !ok || enc.Encode(m) != nil {
				return
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
	}
}

// Calls returns how many requests each route served since the last
// ResetCalls ("GET /containers/json", "GET /containers/{id}/json", …,
// "unknown" for calls the fake does not model).
func (e *Engine) Calls() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]int, len(e.calls))
	for k, v := range e.calls {
		out[k] = v
	}
	return out
}

// ResetCalls clears the call counts.
func (e *Engine) ResetCalls() {
	e.mu.Lock()
	e.calls = map[string]int{}
	e.mu.Unlock()
}

// versionPrefix is the /v1.41 that a negotiated client puts before paths.
var versionPrefix = regexp.MustCompile(`^/v[0-9]+\.[0-9]+/`)

func (e *Engine) serveHTTP(w http.ResponseWriter, r *http.Request) {
	path := versionPrefix.ReplaceAllString(r.URL.Path, "/")
	if path == "/events" && r.Method == http.MethodGet {
		e.serveEvents(w, r)
		return
	}
	route, body, code := e.route(r, path)
	e.mu.Lock()
	e.calls[route]++
	e.mu.Unlock()
	h := w.Header()
	h.Set("Api-Version", EngineAPIVersion)
	h.Set("Ostype", "linux")
	h.Set("Docker-Experimental", "false")
	h.Set("Server", "Docker/20.10.24 (linux)")
	if s, ok := body.(string); ok {
		h.Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(code)
		if r.Method != http.MethodHead {
			_, _ = w.Write([]byte(s))
		}
		return
	}
	h.Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body)
}

type engineError struct {
	Message string `json:"message"`
}

// route answers one request: the route name for the counts, the body (a
// string for plain text, anything else as JSON) and the status.
func (e *Engine) route(r *http.Request, path string) (string, any, int) {
	get := r.Method == http.MethodGet
	switch {
	case path == "/_ping" && (get || r.Method == http.MethodHead):
		return r.Method + " /_ping", "OK", http.StatusOK
	case path == "/version" && get:
		return "GET /version", map[string]string{
			"Version": "20.10.24", "ApiVersion": EngineAPIVersion, "MinAPIVersion": "1.12",
			"Os": "linux", "Arch": "amd64", "GoVersion": "go1.19.9", "KernelVersion": "6.1.0",
		}, http.StatusOK
	case path == "/info" && get:
		return "GET /info", e.info(), http.StatusOK
	case path == "/containers/json" && get:
		list, err := e.containerList(r)
		if err != nil {
			return "GET /containers/json", engineError{err.Error()}, http.StatusBadRequest
		}
		return "GET /containers/json", list, http.StatusOK
	case strings.HasPrefix(path, "/containers/") && strings.HasSuffix(path, "/json") && get:
		id := strings.TrimSuffix(strings.TrimPrefix(path, "/containers/"), "/json")
		if c, ok := e.containerInspect(id); ok {
			return "GET /containers/{id}/json", c, http.StatusOK
		}
		return "GET /containers/{id}/json", engineError{"No such container: " + id}, http.StatusNotFound
	case path == "/images/json" && get:
		return "GET /images/json", e.imageList(), http.StatusOK
	case strings.HasPrefix(path, "/images/") && strings.HasSuffix(path, "/json") && get:
		id := strings.TrimSuffix(strings.TrimPrefix(path, "/images/"), "/json")
		if img, ok := e.imageInspect(id); ok {
			return "GET /images/{id}/json", img, http.StatusOK
		}
		return "GET /images/{id}/json", engineError{"No such image: " + id}, http.StatusNotFound
	}
	return "unknown", engineError{fmt.Sprintf("agentbench fake engine: %s %s is not modelled", r.Method, path)}, http.StatusNotFound
}

func (e *Engine) info() system.Info {
	e.mu.Lock()
	n := len(e.services)
	e.mu.Unlock()
	return system.Info{
		ID: "AGENTBENCH", Name: "agentbench", Containers: n, ContainersRunning: n, Images: n,
		Driver: "overlay2", ServerVersion: "20.10.24", OperatingSystem: "Debian GNU/Linux 12 (bookworm)",
		OSType: "linux", Architecture: "x86_64", NCPU: 2, MemTotal: 24 << 30, CgroupDriver: "systemd",
		CgroupVersion: "2", LoggingDriver: "json-file", DockerRootDir: "/var/lib/docker",
		Swarm:      swarm.Info{LocalNodeState: swarm.LocalNodeStateInactive},
		SystemTime: time.Now().Format(time.RFC3339Nano),
	}
}

// labelFilter is the "label" part of the filters query parameter.
type labelFilter map[string]bool

func (e *Engine) containerList(r *http.Request) ([]container.Summary, error) {
	var want labelFilter
	if f := r.URL.Query().Get("filters"); f != "" {
		var filters map[string]labelFilter
		if err := json.Unmarshal([]byte(f), &filters); err != nil {
			return nil, fmt.Errorf("invalid filters: %w", err)
		}
		for k := range filters {
			if k != "label" {
				return nil, fmt.Errorf("agentbench fake engine: filter %q is not modelled", k)
			}
		}
		want = filters["label"]
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]container.Summary, 0, len(e.services))
	for _, s := range e.services {
		labels := containerLabels(s, e.WorkDir)
		if !matchLabels(labels, want) {
			continue
		}
		out = append(out, container.Summary{
			ID: containerID(s), Names: []string{"/" + containerName(s)}, Image: s.Image, ImageID: imageID(s),
			Command: "/app", Created: created.Unix(), Labels: labels, State: container.StateRunning, Status: "Up 3 days",
			Ports:           []container.PortSummary{},
			NetworkSettings: &container.NetworkSettingsSummary{Networks: map[string]*network.EndpointSettings{s.Project + "_default": endpoint(s)}},
			Mounts:          []container.MountPoint{},
		})
	}
	return out, nil
}

func matchLabels(labels map[string]string, want labelFilter) bool {
	for f, on := range want {
		if !on {
			continue
		}
		k, v, hasValue := strings.Cut(f, "=")
		got, ok := labels[k]
		if !ok || (hasValue && got != v) {
			return false
		}
	}
	return true
}

// created is when every fake container was created and started.
var created = time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)

func (e *Engine) containerInspect(id string) (container.InspectResponse, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	i, ok := e.byID[id]
	if !ok || containerID(e.services[i]) != id {
		return container.InspectResponse{}, false
	}
	s := e.services[i]
	at := created.Format(time.RFC3339Nano)
	layer := "/var/lib/docker/overlay2/" + hash("layer", s.ID())
	var healthLog []*container.HealthcheckResult
	for n := range 5 {
		t := created.Add(time.Duration(n) * 30 * time.Second)
		healthLog = append(healthLog, &container.HealthcheckResult{Start: t, End: t.Add(40 * time.Millisecond)})
	}
	// The fields a real engine fills for a Compose service with a
	// healthcheck, a volume and one network, so that the agent decodes a
	// body of realistic size and shape (about 6 KB, like Docker 20.10's
	// answer for the test workload of internal/testenv) rather than a sketch.
	return container.InspectResponse{
		ID: id, Created: at, Path: "/app", Args: []string{},
		State: &container.State{
			Status: container.StateRunning, Running: true, Pid: 4242, StartedAt: at, FinishedAt: "0001-01-01T00:00:00Z",
			Health: &container.Health{Status: container.Healthy, Log: healthLog},
		},
		Image: imageID(s), Name: "/" + containerName(s), Driver: "overlay2", Platform: "linux",
		ResolvConfPath: "/var/lib/docker/containers/" + id + "/resolv.conf",
		HostnamePath:   "/var/lib/docker/containers/" + id + "/hostname",
		HostsPath:      "/var/lib/docker/containers/" + id + "/hosts",
		LogPath:        "/var/lib/docker/containers/" + id + "/" + id + "-json.log",
		HostConfig: &container.HostConfig{
			NetworkMode:   container.NetworkMode(s.Project + "_default"),
			RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyUnlessStopped},
			LogConfig:     container.LogConfig{Type: "json-file", Config: map[string]string{"max-file": "3", "max-size": "10m"}},
			Binds:         []string{s.Project + "_data:/data:rw"},
			Runtime:       "runc", IpcMode: "private", CgroupnsMode: "private", ShmSize: 64 << 20,
			MaskedPaths:   []string{"/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"},
			ReadonlyPaths: []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
		},
		GraphDriver: &storage.DriverData{Name: "overlay2", Data: map[string]string{
			"LowerDir":  layer + "-init/diff:/var/lib/docker/overlay2/" + hash("base", s.ID()) + "/diff",
			"MergedDir": layer + "/merged", "UpperDir": layer + "/diff", "WorkDir": layer + "/work",
		}},
		Mounts: []container.MountPoint{{Type: "volume", Name: s.Project + "_data", Source: "/var/lib/docker/volumes/" + s.Project + "_data/_data", Destination: "/data", Driver: "local", Mode: "rw", RW: true}},
		Config: &container.Config{
			Hostname: id[:12], Image: s.Image, Labels: containerLabels(s, e.WorkDir),
			Env: []string{
				"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "APP_ENV=production", "APP_PORT=8080",
				"APP_LOG_LEVEL=info", "DATABASE_URL=postgres://app@db:5432/app", "CACHE_URL=redis://cache:6379/0", "TZ=UTC",
			},
			Entrypoint: []string{"/app"}, Cmd: []string{"serve", "--listen", ":8080"}, WorkingDir: "/srv", User: "65532:65532",
			Healthcheck: &container.HealthConfig{Test: []string{"CMD", "/app", "health"}, Interval: 30 * time.Second, Timeout: 5 * time.Second, Retries: 3},
			StopSignal:  "SIGTERM",
		},
		NetworkSettings: &container.NetworkSettings{
			SandboxID:  hash("sandbox", s.ID()),
			SandboxKey: "/var/run/docker/netns/" + hash("netns", s.ID())[:12],
			Networks:   map[string]*network.EndpointSettings{s.Project + "_default": endpoint(s)},
		},
	}, true
}

func endpoint(s Service) *network.EndpointSettings {
	return &network.EndpointSettings{
		Aliases: []string{containerName(s), s.Name}, NetworkID: hash("network", s.Project), EndpointID: hash("endpoint", s.ID()),
		Gateway: netip.MustParseAddr("172.18.0.1"), IPAddress: netip.MustParseAddr("172.18.0.2"), IPPrefixLen: 16,
		DNSNames: []string{containerName(s), s.Name, containerID(s)[:12]},
	}
}

func (e *Engine) imageList() []image.Summary {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]image.Summary, 0, len(e.services))
	for _, s := range e.services {
		out = append(out, image.Summary{
			ID: imageID(s), ParentID: "", RepoTags: []string{s.Image}, RepoDigests: []string{repoOf(s.Image) + "@" + s.Digest},
			Created: created.Unix(), Size: 4 << 20, SharedSize: -1, Containers: -1, Labels: imageLabels(s),
		})
	}
	return out
}

// repoOf strips the tag from a reference.
func repoOf(ref string) string {
	if j := strings.LastIndexByte(ref, ':'); j > strings.LastIndexByte(ref, '/') {
		return ref[:j]
	}
	return ref
}

func imageLabels(s Service) map[string]string {
	return map[string]string{
		"org.opencontainers.image.source":   "https://github.com/example/" + s.Name,
		"org.opencontainers.image.revision": hash("revision", s.ID())[:40],
		"org.opencontainers.image.version":  "1.0",
		"org.opencontainers.image.created":  created.Format(time.RFC3339),
		"org.opencontainers.image.licenses": "Apache-2.0",
	}
}

func (e *Engine) imageInspect(id string) (image.InspectResponse, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	i, ok := e.byID[id]
	if !ok || imageID(e.services[i]) != id {
		return image.InspectResponse{}, false
	}
	s := e.services[i]
	var layers []string
	for n := range 5 {
		layers = append(layers, "sha256:"+hash(fmt.Sprint("layer", n), s.ID()))
	}
	layer := "/var/lib/docker/overlay2/" + hash("image-layer", s.ID())
	cfg := &dockerspec.DockerOCIImageConfig{}
	cfg.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "APP_PORT=8080"}
	cfg.Entrypoint, cfg.Cmd, cfg.WorkingDir, cfg.User, cfg.StopSignal = []string{"/app"}, []string{"serve"}, "/srv", "65532:65532", "SIGTERM"
	cfg.Labels = imageLabels(s)
	cfg.Healthcheck = &dockerspec.HealthcheckConfig{Test: []string{"CMD", "/app", "health"}, Interval: 30 * time.Second, Timeout: 5 * time.Second, Retries: 3}
	return image.InspectResponse{
		ID: id, RepoTags: []string{s.Image}, RepoDigests: []string{repoOf(s.Image) + "@" + s.Digest},
		Created: created.Format(time.RFC3339Nano), Architecture: "amd64", Os: "linux", Size: 4 << 20, Config: cfg,
		RootFS:      image.RootFS{Type: "layers", Layers: layers},
		GraphDriver: &storage.DriverData{Name: "overlay2", Data: map[string]string{"LowerDir": layer + "-1/diff:" + layer + "-2/diff", "MergedDir": layer + "/merged", "UpperDir": layer + "/diff", "WorkDir": layer + "/work"}},
		Metadata:    image.Metadata{LastTagTime: created},
	}, true
}

// containerLabels are the labels docker compose puts on a service's
// container, plus the service's own.
func containerLabels(s Service, workDir string) map[string]string {
	dir := workDir + "/" + s.Project
	l := map[string]string{
		"com.docker.compose.project":              s.Project,
		"com.docker.compose.service":              s.Name,
		"com.docker.compose.project.working_dir":  dir,
		"com.docker.compose.project.config_files": dir + "/compose.yaml",
		"com.docker.compose.config-hash":          hash("config", s.ID()),
		"com.docker.compose.container-number":     "1",
		"com.docker.compose.oneoff":               "False",
		"com.docker.compose.version":              "2.24.6",
		"com.docker.compose.depends_on":           "",
		"com.docker.compose.image":                imageID(s),
	}
	for k, v := range s.Labels {
		l[k] = v
	}
	return l
}

func containerName(s Service) string { return s.Project + "-" + s.Name + "-1" }

// containerID and imageID are stable per service. Each service has an image
// of its own, as on a host that runs a thousand different applications.
func containerID(s Service) string { return hash("container", s.ID()) }
func imageID(s Service) string     { return "sha256:" + hash("image", s.ID()) }

func hash(kind, s string) string {
	sum := sha256.Sum256([]byte(kind + "\x00" + s))
	return hex.EncodeToString(sum[:])
}

// CallSummary formats call counts as "route=n, …" sorted by route.
func CallSummary(calls map[string]int) string {
	keys := make([]string, 0, len(calls))
	for k := range calls {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, calls[k]))
	}
	return strings.Join(parts, ", ")
}
