package swarm

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"github.com/shipwatch/shipwatch/deployer"
)

// TaskFailure is one task of the new version that failed, was rejected, or
// never got to run, as Swarm reported it.
type TaskFailure struct {
	ID       string
	Slot     int    // 0 for a global service
	Node     string // node ID
	State    string // "failed", "rejected", "pending", "starting", …
	Err      string // Swarm's task error ("task: non-zero exit (1)", "No such image: …")
	Message  string // Swarm's task status message
	ExitCode int
	// Container is the task's container ID ("" when it never got one).
	Container string
	// Health and OOMKilled come from the task's container when it is on
	// this node (best effort): Swarm reports an unhealthy container that
	// exited cleanly as merely "complete".
	Health    string
	OOMKilled bool
}

func (f TaskFailure) String() string {
	s := "task " + shortID(f.ID)
	if f.Slot > 0 {
		s += fmt.Sprintf(" (slot %d)", f.Slot)
	}
	s += " " + f.State
	switch {
	case f.OOMKilled:
		s += ": OOM killed"
	case f.Err != "":
		s += ": " + f.Err
	case f.Health == "unhealthy":
		s += ": container unhealthy"
	case f.Message != "":
		s += ": " + f.Message
	}
	return s
}

// UpdateError is the Cause of an update (or rollback) that did not
// complete: what Swarm said, and what the tasks of the new version did.
// Unwrap gives the reason as a sentinel (ErrDeadline, ErrPull, …) and, when
// the image itself failed, a *deployer.HealthError.
type UpdateError struct {
	Service string
	Image   string            // the image the update tried to run
	State   swarm.UpdateState // Swarm's update state when shipwatch decided
	Message string            // Swarm's UpdateStatus.Message
	Tasks   []TaskFailure
	Errs    []error
}

func (e *UpdateError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "service %s, image %s", e.Service, e.Image)
	for _, err := range e.Errs {
		b.WriteString(": ")
		b.WriteString(err.Error())
	}
	if e.State != "" || e.Message != "" {
		fmt.Fprintf(&b, " (swarm update state %q", string(e.State))
		if e.Message != "" {
			fmt.Fprintf(&b, ": %s", e.Message)
		}
		b.WriteString(")")
	}
	for i, t := range e.Tasks {
		if i == 0 {
			b.WriteString("; ")
		} else {
			b.WriteString(", ")
		}
		if i == 3 {
			fmt.Fprintf(&b, "and %d more task(s)", len(e.Tasks)-i)
			break
		}
		b.WriteString(t.String())
	}
	return b.String()
}

// Unwrap lets errors.Is/As see the reasons.
func (e *UpdateError) Unwrap() []error { return e.Errs }

func isTerminal(s swarm.TaskState) bool {
	switch s {
	case swarm.TaskStateComplete, swarm.TaskStateShutdown, swarm.TaskStateFailed,
		swarm.TaskStateRejected, swarm.TaskStateRemove, swarm.TaskStateOrphaned:
		return true
	}
	return false
}

// newTasks are the tasks created for image since the update began (not in
// before).
func newTasks(tasks []swarm.Task, image string, before map[string]bool) []swarm.Task {
	var out []swarm.Task
	for _, t := range tasks {
		if !before[t.ID] && taskImage(t) == image {
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out
}

// failures lists what went wrong with the tasks of the new version: tasks
// that failed, were rejected or ended on their own (a service's task that
// "completes" terminated early), and tasks that should run but do not.
func failures(tasks []swarm.Task) []TaskFailure {
	var out []TaskFailure
	for _, t := range tasks {
		st := t.Status.State
		failed := st == swarm.TaskStateFailed || st == swarm.TaskStateRejected || st == swarm.TaskStateComplete
		stuck := t.DesiredState == swarm.TaskStateRunning && st != swarm.TaskStateRunning && !isTerminal(st)
		if !failed && !stuck && t.Status.Err == "" {
			continue
		}
		f := TaskFailure{ID: t.ID, Slot: t.Slot, Node: t.NodeID, State: string(st), Err: t.Status.Err, Message: t.Status.Message}
		if cs := t.Status.ContainerStatus; cs != nil {
			f.ExitCode, f.Container = cs.ExitCode, cs.ContainerID
		}
		out = append(out, f)
	}
	return out
}

// inspectContainers adds what the containers of the first few failed tasks
// say about their health (only containers on this node can be read).
func inspectContainers(ctx context.Context, eng Engine, fs []TaskFailure) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	looked := 0
	for i := range fs {
		if fs[i].Container == "" || looked == 3 {
			continue
		}
		looked++
		res, err := eng.ContainerInspect(ctx, fs[i].Container, client.ContainerInspectOptions{})
		if err != nil || res.Container.State == nil {
			continue
		}
		st := res.Container.State
		fs[i].OOMKilled = st.OOMKilled
		if st.ExitCode != 0 && fs[i].ExitCode == 0 {
			fs[i].ExitCode = st.ExitCode
		}
		if st.Health != nil {
			fs[i].Health = string(st.Health.Status)
		}
	}
}

// diagnosis turns task failures into the reasons of an UpdateError, and
// says whether the image itself is to blame (crash, unhealthy, never
// healthy) rather than the registry or the cluster (pull error, no node).
func diagnosis(fs []TaskFailure, deadline bool) (reasons []error, imageFault bool) {
	var crash, unhealthy, oom, early, pull, starting, pending int
	var exit int
	for _, f := range fs {
		e := strings.ToLower(f.Err)
		switch {
		case f.OOMKilled:
			oom++
		case f.ExitCode != 0 || strings.Contains(e, "non-zero exit"):
			// A container that exited with an error crashed, whatever its
			// healthcheck said last.
			crash++
			if exit == 0 {
				exit = f.ExitCode
			}
		case f.Health == "unhealthy" || strings.Contains(e, "unhealthy"):
			unhealthy++
		case isPullError(e):
			pull++
		case f.State == string(swarm.TaskStateComplete):
			early++
		case f.State == string(swarm.TaskStateStarting):
			starting++
		case f.State == string(swarm.TaskStatePending) || f.State == string(swarm.TaskStateAssigned) ||
			f.State == string(swarm.TaskStateAllocated) || f.State == string(swarm.TaskStateNew) ||
			f.State == string(swarm.TaskStatePreparing) || f.State == string(swarm.TaskStateAccepted):
			pending++
		}
	}
	switch {
	case oom > 0:
		reasons = append(reasons, &deployer.HealthError{Reason: fmt.Sprintf("%d task(s) of the new version were OOM killed", oom)})
		imageFault = true
	case crash > 0:
		reason := fmt.Sprintf("%d task(s) of the new version exited", crash)
		if exit != 0 {
			reason = fmt.Sprintf("%d task(s) of the new version exited with code %d", crash, exit)
		}
		reasons = append(reasons, &deployer.HealthError{Reason: reason})
		imageFault = true
	case unhealthy > 0:
		reasons = append(reasons, &deployer.HealthError{Reason: fmt.Sprintf("%d task(s) of the new version were unhealthy", unhealthy)})
		imageFault = true
	case early > 0:
		reasons = append(reasons, &deployer.HealthError{Reason: fmt.Sprintf("%d task(s) of the new version stopped on their own (exit code 0) during the update", early)})
		imageFault = true
	case pull > 0:
		reasons = append(reasons, fmt.Errorf("%w (check the registry and the credentials the nodes have for it)", ErrPull))
	case deadline && starting > 0:
		reasons = append(reasons, &deployer.HealthError{Reason: fmt.Sprintf("%d task(s) of the new version never became healthy", starting)})
		imageFault = true
	case deadline && pending > 0:
		reasons = append(reasons, fmt.Errorf("%d task(s) of the new version never started: no node could run them (see the task errors)", pending))
	}
	return reasons, imageFault
}

func isPullError(lowerErr string) bool {
	for _, s := range []string{"no such image", "pull access denied", "manifest unknown", "manifest for", "unauthorized", "denied", "failed to resolve reference", "error pulling", "pull failed"} {
		if strings.Contains(lowerErr, s) {
			return true
		}
	}
	return false
}

// runningDigest is the digest every running task of the service runs (read
// from the tasks' container specs), "" when they disagree or none runs.
func runningDigest(tasks []swarm.Task) (digest string, running int) {
	for _, t := range tasks {
		if t.DesiredState != swarm.TaskStateRunning || t.Status.State != swarm.TaskStateRunning {
			continue
		}
		d := digestOf(taskImage(t))
		if running > 0 && d != digest {
			return "", running + 1
		}
		digest = d
		running++
	}
	return digest, running
}

// converged reports whether the service runs image: every running task that
// should run runs it, and at least want of them run (want < 0: any number).
func converged(tasks []swarm.Task, image string, want int) bool {
	ok := 0
	for _, t := range tasks {
		if t.DesiredState != swarm.TaskStateRunning {
			continue
		}
		if taskImage(t) != image {
			return false
		}
		if t.Status.State == swarm.TaskStateRunning {
			ok++
		}
	}
	return ok >= want
}

// runningIDs identifies the set of tasks that should run: when it changes,
// a task was replaced (crashed and restarted, for instance).
func runningIDs(tasks []swarm.Task) string {
	var ids []string
	for _, t := range tasks {
		if t.DesiredState == swarm.TaskStateRunning {
			ids = append(ids, t.ID)
		}
	}
	sort.Strings(ids)
	return strings.Join(ids, ",")
}

// countRunning counts tasks that should run and do.
func countRunning(tasks []swarm.Task) int {
	n := 0
	for _, t := range tasks {
		if t.DesiredState == swarm.TaskStateRunning && t.Status.State == swarm.TaskStateRunning {
			n++
		}
	}
	return n
}

// taskLogs returns the last lines of a task's logs; it is best effort and
// bounded (logs of a task on an unreachable node are simply missing).
func taskLogs(ctx context.Context, eng Engine, taskID string, lines int) []string {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	rc, err := eng.TaskLogs(ctx, taskID, client.TaskLogsOptions{ShowStdout: true, ShowStderr: true, Tail: fmt.Sprint(lines)})
	if err != nil {
		return nil
	}
	defer rc.Close()
	var out bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &out, rc); err != nil && out.Len() == 0 {
		return nil
	}
	text := strings.TrimRight(out.String(), "\n")
	if text == "" {
		return nil
	}
	all := strings.Split(text, "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return all
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
