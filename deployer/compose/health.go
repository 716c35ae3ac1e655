package compose

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/shipwatch/shipwatch/deployer"
)

// Docker's healthcheck defaults, used to derive the gate's deadline when
// the image or compose file leaves a field unset.
const (
	defaultHealthInterval = 30 * time.Second
	defaultHealthTimeout  = 30 * time.Second
	defaultHealthRetries  = 3
	healthMargin          = 5 * time.Second
	noHealthcheckMargin   = 30 * time.Second
	logLines              = 20
)

// gate proves containers healthy: every replica must give samples good
// samples in a row, interval apart, before the deadline. A good sample is
// "healthy" for a container with a healthcheck, and "running, not
// restarted since the gate began" for one without.
type gate struct {
	engine   Engine
	samples  int
	interval time.Duration
	timeout  time.Duration // 0: derive from the healthcheck
}

// baseline is a container as the gate first saw it.
type baseline struct {
	startedAt string
	restarts  int
}

// wait returns nil once every container passed, a *deployer.HealthError
// (with the failing container's last log lines) when one failed or the
// deadline passed, or the context's error.
func (g gate) wait(ctx context.Context, ids []string) (string, error) {
	if len(ids) == 0 {
		return "", &deployer.HealthError{Reason: "no container to check"}
	}
	first, err := g.engine.ContainerInspect(ctx, ids[0], client.ContainerInspectOptions{})
	if err != nil {
		return "", fmt.Errorf("inspect %s: %w", shortID(ids[0]), err)
	}
	timeout, hasCheck := g.deadline(first.Container.Config)
	start := time.Now()
	deadline := start.Add(timeout)
	base := map[string]baseline{}
	if st := first.Container.State; st != nil {
		base[ids[0]] = baseline{startedAt: st.StartedAt, restarts: first.Container.RestartCount}
	}
	streak := 0
	ticker := time.NewTicker(g.interval)
	defer ticker.Stop()
	for {
		good := true
		var waiting string
		for _, id := range ids {
			ok, status, failure, err := g.sample(ctx, id, base)
			if err != nil {
				return "", err
			}
			if failure != "" {
				return "", &deployer.HealthError{Reason: failure, Logs: g.logs(ctx, id)}
			}
			if !ok {
				good, waiting = false, fmt.Sprintf("%s is %s", shortID(id), status)
			}
		}
		if good {
			streak++
			if streak >= g.samples {
				kind := "running and stable"
				if hasCheck {
					kind = "healthy"
				}
				return fmt.Sprintf("%d replica(s) %s for %d samples, after %s", len(ids), kind, g.samples, time.Since(start).Round(time.Millisecond)), nil
			}
		} else {
			streak = 0
		}
		if time.Now().After(deadline) {
			id := ids[0]
			reason := fmt.Sprintf("never became healthy within %s", timeout)
			if waiting != "" {
				reason += " (" + waiting + ")"
				id = strings.Fields(waiting)[0]
			}
			return "", &deployer.HealthError{Reason: reason, Logs: g.logs(ctx, id)}
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("health gate interrupted: %w", ctx.Err())
		case <-ticker.C:
		}
	}
}

// deadline returns the gate's time limit and whether the container has a
// healthcheck.
func (g gate) deadline(cfg *container.Config) (time.Duration, bool) {
	var hc *container.HealthConfig
	if cfg != nil {
		hc = cfg.Healthcheck
	}
	hasCheck := hc != nil && len(hc.Test) > 0 && hc.Test[0] != "NONE"
	if g.timeout > 0 {
		return g.timeout, hasCheck
	}
	confirm := time.Duration(g.samples) * g.interval
	if !hasCheck {
		return confirm + noHealthcheckMargin, false
	}
	interval, timeout, retries := hc.Interval, hc.Timeout, hc.Retries
	if interval <= 0 {
		interval = defaultHealthInterval
	}
	if timeout <= 0 {
		timeout = defaultHealthTimeout
	}
	if retries <= 0 {
		retries = defaultHealthRetries
	}
	return hc.StartPeriod + (interval+timeout)*time.Duration(retries+1) + confirm + healthMargin, true
}

// sample inspects one container. ok is a good sample; failure, when not
// empty, ends the gate.
func (g gate) sample(ctx context.Context, id string, base map[string]baseline) (ok bool, status, failure string, err error) {
	res, err := g.engine.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if cerrdefs.IsNotFound(err) {
		return false, "", fmt.Sprintf("container %s disappeared", shortID(id)), nil
	}
	if err != nil {
		return false, "", "", fmt.Errorf("inspect %s: %w", shortID(id), err)
	}
	c := res.Container
	st := c.State
	if st == nil {
		return false, "unknown", "", nil
	}
	b, seen := base[id]
	if !seen {
		b = baseline{startedAt: st.StartedAt, restarts: c.RestartCount}
		base[id] = b
	}
	switch {
	case st.OOMKilled:
		return false, "", fmt.Sprintf("OOM killed (container %s)", shortID(id)), nil
	case st.Restarting || c.RestartCount > 0 || st.StartedAt != b.startedAt:
		return false, "", fmt.Sprintf("crash loop: container %s restarted %d time(s), last exit code %d", shortID(id), c.RestartCount, st.ExitCode), nil
	case st.Status == container.StateExited || st.Status == container.StateDead:
		return false, "", fmt.Sprintf("exited with code %d (container %s)", st.ExitCode, shortID(id)), nil
	case st.Status != container.StateRunning:
		return false, string(st.Status), "", nil
	}
	if st.Health == nil || st.Health.Status == "" || st.Health.Status == container.NoHealthcheck {
		return true, "running", "", nil
	}
	switch st.Health.Status {
	case container.Healthy:
		return true, "healthy", "", nil
	case container.Unhealthy:
		reason := fmt.Sprintf("unhealthy (container %s)", shortID(id))
		if n := len(st.Health.Log); n > 0 {
			if out := strings.TrimSpace(st.Health.Log[n-1].Output); out != "" {
				reason += ": " + firstLine(out)
			}
		}
		return false, "", reason, nil
	}
	return false, string(st.Health.Status), "", nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// logs returns the container's last log lines, best effort: the gate's
// verdict does not depend on them.
func (g gate) logs(ctx context.Context, id string) []string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	tty := false
	if res, err := g.engine.ContainerInspect(ctx, id, client.ContainerInspectOptions{}); err == nil && res.Container.Config != nil {
		tty = res.Container.Config.Tty
	}
	rc, err := g.engine.ContainerLogs(ctx, id, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true, Tail: fmt.Sprint(logLines)})
	if err != nil {
		return nil
	}
	defer rc.Close()
	var buf bytes.Buffer
	if tty {
		_, err = buf.ReadFrom(rc)
	} else {
		_, err = stdcopy.StdCopy(&buf, &buf, rc)
	}
	if err != nil && buf.Len() == 0 {
		return nil
	}
	lines := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
	if len(lines) > logLines {
		lines = lines[len(lines)-logLines:]
	}
	if len(lines) == 1 && lines[0] == "" {
		return nil
	}
	return lines
}
