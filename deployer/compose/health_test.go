package compose

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/shipwatch/shipwatch/deployer"
)

// scriptedEngine answers ContainerInspect from a script per container: each
// call returns the next state, the last one repeats. Other calls panic: the
// gate must not make them.
type scriptedEngine struct {
	Engine
	mu      sync.Mutex
	script  map[string][]container.InspectResponse
	calls   map[string]int
	hasLogs bool
}

func (s *scriptedEngine) ContainerInspect(_ context.Context, id string, _ client.ContainerInspectOptions) (client.ContainerInspectResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	states, ok := s.script[id]
	if !ok {
		return client.ContainerInspectResult{}, cerrdefs.ErrNotFound.WithMessage("no such container: " + id)
	}
	i := s.calls[id]
	s.calls[id]++
	if i >= len(states) {
		i = len(states) - 1
	}
	return client.ContainerInspectResult{Container: states[i]}, nil
}

func (s *scriptedEngine) ContainerLogs(context.Context, string, client.ContainerLogsOptions) (client.ContainerLogsResult, error) {
	if !s.hasLogs {
		return nil, errors.New("no logs")
	}
	return io.NopCloser(strings.NewReader("starting\nboom: cannot open /data\n")), nil
}

const t0 = "2026-01-01T00:00:00Z"

var probe = &container.HealthConfig{Test: []string{"CMD", "/app", "health"}, Interval: time.Second, Retries: 3}

// state builds an inspect response; health "" means no healthcheck.
func state(status container.ContainerState, health container.HealthStatus, mods ...func(*container.InspectResponse)) container.InspectResponse {
	r := container.InspectResponse{
		State:  &container.State{Status: status, Running: status == container.StateRunning, StartedAt: t0},
		Config: &container.Config{Tty: true},
	}
	if health != "" {
		r.Config.Healthcheck = probe
		r.State.Health = &container.Health{Status: health}
	}
	for _, m := range mods {
		m(&r)
	}
	return r
}

func TestGate(t *testing.T) {
	running, exited := container.StateRunning, container.StateExited
	restarted := func(r *container.InspectResponse) { r.RestartCount = 1; r.State.ExitCode = 1 }
	newStart := func(r *container.InspectResponse) { r.State.StartedAt = "2026-01-01T00:00:05Z" }
	probeSays := func(r *container.InspectResponse) {
		r.State.Health.Log = []*container.HealthcheckResult{{ExitCode: 1, Output: "health: status 503\n"}}
	}
	tests := []struct {
		name    string
		script  map[string][]container.InspectResponse
		ids     []string
		timeout time.Duration
		want    string // "" for success, else a part of the HealthError reason
		minCall int    // inspect calls on "a" at least (samples are consecutive)
		noLogs  bool
	}{{
		name:    "healthy after starting",
		script:  map[string][]container.InspectResponse{"a": {state(running, container.Starting), state(running, container.Starting), state(running, container.Healthy)}},
		minCall: 2 + 3,
	}, {
		name:   "unhealthy",
		script: map[string][]container.InspectResponse{"a": {state(running, container.Starting), state(running, container.Unhealthy, probeSays)}},
		want:   "unhealthy (container a): health: status 503",
	}, {
		name:   "crash loop",
		script: map[string][]container.InspectResponse{"a": {state(running, container.Starting), state(running, container.Starting, restarted)}},
		want:   "crash loop: container a restarted 1 time(s), last exit code 1",
	}, {
		name:   "restarting",
		script: map[string][]container.InspectResponse{"a": {state("restarting", "", func(r *container.InspectResponse) { r.State.Restarting = true })}},
		want:   "crash loop",
	}, {
		name:   "exited",
		script: map[string][]container.InspectResponse{"a": {state(running, ""), state(exited, "", func(r *container.InspectResponse) { r.State.ExitCode = 2 })}},
		want:   "exited with code 2",
	}, {
		name:   "OOM killed",
		script: map[string][]container.InspectResponse{"a": {state(exited, "", func(r *container.InspectResponse) { r.State.OOMKilled = true; r.State.ExitCode = 137 })}},
		want:   "OOM killed",
	}, {
		name:    "never healthy",
		script:  map[string][]container.InspectResponse{"a": {state(running, container.Starting)}},
		timeout: 100 * time.Millisecond,
		want:    "never became healthy within 100ms (a is starting)",
	}, {
		name:    "no healthcheck, stable",
		script:  map[string][]container.InspectResponse{"a": {state(running, "")}},
		minCall: 3,
	}, {
		name:   "no healthcheck, restarted between samples",
		script: map[string][]container.InspectResponse{"a": {state(running, ""), state(running, "", newStart)}},
		want:   "crash loop",
	}, {
		name: "every replica is gated",
		script: map[string][]container.InspectResponse{
			"a": {state(running, container.Healthy)},
			"b": {state(running, container.Starting), state(running, container.Unhealthy)},
		},
		ids:  []string{"a", "b"},
		want: "unhealthy (container b)",
	}, {
		name:   "container disappears",
		script: map[string][]container.InspectResponse{"a": {state(running, "")}},
		ids:    []string{"a", "gone"},
		want:   "container gone disappeared",
		noLogs: true,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eng := &scriptedEngine{script: tt.script, calls: map[string]int{}, hasLogs: true}
			ids := tt.ids
			if ids == nil {
				ids = []string{"a"}
			}
			timeout := tt.timeout
			if timeout == 0 {
				timeout = 5 * time.Second
			}
			g := gate{engine: eng, samples: 3, interval: 5 * time.Millisecond, timeout: timeout}
			_, err := g.wait(context.Background(), ids)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("gate failed: %v", err)
				}
				if got := eng.calls["a"]; got < tt.minCall {
					t.Errorf("inspected a %d times, want at least %d", got, tt.minCall)
				}
				return
			}
			var he *deployer.HealthError
			if !errors.As(err, &he) {
				t.Fatalf("error = %v, want a *deployer.HealthError", err)
			}
			if !strings.Contains(he.Reason, tt.want) {
				t.Errorf("reason = %q, want it to contain %q", he.Reason, tt.want)
			}
			if tt.noLogs {
				return
			}
			if len(he.Logs) != 2 || he.Logs[1] != "boom: cannot open /data" {
				t.Errorf("logs = %q, want the container's last lines", he.Logs)
			}
		})
	}
}

func TestGateStopsWithContext(t *testing.T) {
	eng := &scriptedEngine{script: map[string][]container.InspectResponse{"a": {state(container.StateRunning, container.Starting)}}, calls: map[string]int{}}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := gate{engine: eng, samples: 3, interval: 5 * time.Millisecond, timeout: time.Hour}.wait(ctx, []string{"a"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error = %v, want the context's", err)
	}
}

func TestGateDeadline(t *testing.T) {
	tests := []struct {
		name   string
		hc     *container.HealthConfig
		set    time.Duration
		want   time.Duration
		wCheck bool
	}{
		{"no healthcheck", nil, 0, 3*time.Second + 30*time.Second, false},
		{"disabled healthcheck", &container.HealthConfig{Test: []string{"NONE"}}, 0, 33 * time.Second, false},
		// start_period + (interval + timeout) × (retries + 1) + samples × interval + margin
		{"healthcheck", &container.HealthConfig{Test: []string{"CMD", "x"}, Interval: 2 * time.Second, Timeout: time.Second, StartPeriod: 10 * time.Second, Retries: 2}, 0,
			10*time.Second + 3*3*time.Second + 3*time.Second + 5*time.Second, true},
		{"docker defaults", &container.HealthConfig{Test: []string{"CMD", "x"}}, 0, 60*time.Second*4 + 3*time.Second + 5*time.Second, true},
		{"configured", &container.HealthConfig{Test: []string{"CMD", "x"}}, 7 * time.Second, 7 * time.Second, true},
	}
	for _, tt := range tests {
		g := gate{samples: 3, interval: time.Second, timeout: tt.set}
		got, check := g.deadline(&container.Config{Healthcheck: tt.hc})
		if got != tt.want || check != tt.wCheck {
			t.Errorf("%s: deadline = %s, %v; want %s, %v", tt.name, got, check, tt.want, tt.wCheck)
		}
	}
}
