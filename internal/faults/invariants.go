package faults

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"sort"
	"strings"

	"github.com/shipwatch/shipwatch/state"
)

// Container is one container of the workload as the engine reports it.
type Container struct {
	ID     string
	Name   string
	State  string // running, exited, created, restarting, …
	Health string // healthy, unhealthy, starting, "" without a healthcheck
	Digest string // the manifest digest of its image in the test registry
	// Task is the Swarm task's desired state ("" for Compose containers).
	Task string
}

// Observation is everything the invariants look at after a run: what the
// engine runs, what the state file says, and every text the agent produced.
// It is plain data, so that the checks can be shown to fire on broken
// states built by hand.
type Observation struct {
	Target  string // target ID, "compose/<project>/web" or "swarm/<service>"
	Swarm   bool
	Desired int // replicas the workload must run
	// Containers are the workload's containers in every state (Compose:
	// by project label; Swarm: by service label).
	Containers []Container
	// UpdateState is the Swarm service's UpdateStatus.State ("" if none).
	UpdateState string
	// SpecDigest is the digest the Swarm service spec pins.
	SpecDigest string
	// Initial is the digest that ran before the agent started.
	Initial string
	// Allowed are the digests the policy allows (signed by the trusted key,
	// with an acceptable scan when the policy asks for one): ground truth
	// from the suite, not from the agent.
	Allowed map[string]bool
	// StateErr is the error of opening and checking the state file.
	StateErr error
	History  []state.Entry // oldest first
	Journals []state.Journal
	// Texts are the agent's outputs by source: "log", "api /v1/history",
	// "notifications", "state file", …
	Texts map[string][]byte
	// Canaries are the planted secrets (registry password, API token,
	// notification webhook URL).
	Canaries map[string]string
}

// Violation is one broken invariant.
type Violation struct {
	Invariant string // I1 … I7
	Detail    string
}

func (v Violation) String() string { return v.Invariant + ": " + v.Detail }

// Check evaluates the seven invariants.
func Check(o Observation) []Violation {
	var out []Violation
	for _, f := range []func(Observation) []Violation{I1Healthy, I2Containers, I3Allowed, I4Verified, I5NotPaused, I6State, I7Secrets} {
		out = append(out, f(o)...)
	}
	return out
}

// live are the containers that count as the workload's replicas: running
// ones (Compose: every running container; Swarm: tasks that should run).
func live(o Observation) []Container {
	var out []Container
	for _, c := range o.Containers {
		if c.State == "running" && (!o.Swarm || c.Task == "running") {
			out = append(out, c)
		}
	}
	return out
}

// I1Healthy: the workload runs its desired number of replicas, each healthy.
func I1Healthy(o Observation) []Violation {
	var out []Violation
	l := live(o)
	if len(l) != o.Desired {
		out = append(out, Violation{"I1", fmt.Sprintf("%d running replica(s), want %d", len(l), o.Desired)})
	}
	for _, c := range l {
		if c.Health != "healthy" {
			out = append(out, Violation{"I1", fmt.Sprintf("container %s is %q, want healthy", short(c.ID), c.Health)})
		}
	}
	return out
}

// I2Containers: exactly the expected containers exist. Compose: the
// project has exactly Desired containers in any state (none lost, none
// duplicated, no renamed leftover of an interrupted recreate). Swarm:
// exactly Desired containers run, and none of a task that should run is
// stuck created, restarting or paused (containers of shut-down tasks are
// Swarm's task history).
func I2Containers(o Observation) []Violation {
	var out []Violation
	if !o.Swarm {
		if len(o.Containers) != o.Desired {
			var names []string
			for _, c := range o.Containers {
				names = append(names, c.Name+"("+c.State+")")
			}
			out = append(out, Violation{"I2", fmt.Sprintf("%d container(s) in the project, want exactly %d: %s", len(o.Containers), o.Desired, strings.Join(names, ", "))})
		}
		return out
	}
	running := 0
	for _, c := range o.Containers {
		switch {
		case c.State == "running":
			running++
		case c.State == "exited" || c.State == "dead":
		case c.Task != "running":
			// A task shut down between its container's create and start
			// leaves the container "created": Swarm's task history, like
			// an exited one, pruned with the task.
		default:
			out = append(out, Violation{"I2", fmt.Sprintf("container %s of a task that should run is %s", short(c.ID), c.State)})
		}
	}
	if running != o.Desired {
		out = append(out, Violation{"I2", fmt.Sprintf("%d running container(s) of the service, want exactly %d", running, o.Desired)})
	}
	return out
}

// I3Allowed: every running digest is one the policy allows.
func I3Allowed(o Observation) []Violation {
	var out []Violation
	for _, c := range live(o) {
		if !o.Allowed[c.Digest] {
			out = append(out, Violation{"I3", fmt.Sprintf("container %s runs %s, which the policy does not allow", short(c.ID), short(c.Digest))})
		}
	}
	if o.Swarm && o.SpecDigest != "" && !o.Allowed[o.SpecDigest] {
		out = append(out, Violation{"I3", fmt.Sprintf("the service spec pins %s, which the policy does not allow", short(o.SpecDigest))})
	}
	return out
}

// I4Verified: what runs is exactly the digest of the last decision that
// changed the workload: every "updated" entry deployed the digest it
// verified (decision allowed, Running equal to its To digest), and the
// digest running now is the one the last workload-changing entry left
// running (the initial digest when there is none).
func I4Verified(o Observation) []Violation {
	var out []Violation
	want, by := o.Initial, "the initial version (no history entry changed the workload)"
	for _, e := range o.History {
		to := digestOf(e.To)
		if e.Outcome == "updated" {
			if e.Mode == "agent" && e.Decision != "allowed" {
				out = append(out, Violation{"I4", fmt.Sprintf("history #%d updated to %s with verification decision %q", e.ID, short(to), e.Decision)})
			}
			if e.Running != to {
				out = append(out, Violation{"I4", fmt.Sprintf("history #%d updated to %s but records %s running", e.ID, short(to), short(e.Running))})
			}
			if !o.Allowed[to] {
				out = append(out, Violation{"I4", fmt.Sprintf("history #%d deployed %s, which the policy does not allow", e.ID, short(to))})
			}
		}
		if changesWorkload(e) {
			want, by = e.Running, fmt.Sprintf("history #%d (%s, %s)", e.ID, e.Mode, e.Outcome)
		}
	}
	for _, c := range live(o) {
		if c.Digest != want {
			out = append(out, Violation{"I4", fmt.Sprintf("container %s runs %s, but %s left %s running", short(c.ID), short(c.Digest), by, short(want))})
		}
	}
	return out
}

// changesWorkload reports whether a history entry says what runs after it.
func changesWorkload(e state.Entry) bool {
	switch e.Outcome {
	case "updated", "rolled-back":
		return e.Running != ""
	case "up-to-date":
		return e.Running != "" && (e.Mode == "recover" || e.Mode == "rollback")
	}
	return false
}

// I5NotPaused: no Swarm service is left paused or rollback_paused.
func I5NotPaused(o Observation) []Violation {
	if o.Swarm && (o.UpdateState == "paused" || o.UpdateState == "rollback_paused") {
		return []Violation{{"I5", "the service is left " + o.UpdateState}}
	}
	return nil
}

// I6State: the state file opens and passes its integrity check, no
// rollout journal is left behind, and the history is consistent with what
// happened: a rolled-back entry left the previous digest running, and
// every digest quarantined by a rollback is not what runs.
func I6State(o Observation) []Violation {
	var out []Violation
	if o.StateErr != nil {
		out = append(out, Violation{"I6", "state file: " + o.StateErr.Error()})
	}
	for _, j := range o.Journals {
		out = append(out, Violation{"I6", fmt.Sprintf("rollout journal left behind for %s (step %q)", j.Target, j.Step)})
	}
	for i, e := range o.History {
		if i > 0 && e.ID <= o.History[i-1].ID {
			out = append(out, Violation{"I6", fmt.Sprintf("history IDs out of order: #%d after #%d", e.ID, o.History[i-1].ID)})
		}
		if e.Target != o.Target {
			continue
		}
		if e.Outcome == "rolled-back" && e.Mode == "agent" && e.Running != "" && e.Running == digestOf(e.To) {
			out = append(out, Violation{"I6", fmt.Sprintf("history #%d says rolled back from %s but records it still running", e.ID, short(e.Running))})
		}
		if e.Outcome == "rolled-back" && e.Mode == "agent" && e.From != "" && e.Running != "" && e.Running != e.From {
			out = append(out, Violation{"I6", fmt.Sprintf("history #%d rolled back from %s to %s, not to the previous %s", e.ID, short(digestOf(e.To)), short(e.Running), short(e.From))})
		}
	}
	return out
}

// I7Secrets: no planted secret appears in any text the agent produced,
// neither as written nor base64-encoded (an Authorization header, a
// Docker X-Registry-Auth).
func I7Secrets(o Observation) []Violation {
	var out []Violation
	srcs := make([]string, 0, len(o.Texts))
	for s := range o.Texts {
		srcs = append(srcs, s)
	}
	sort.Strings(srcs)
	names := make([]string, 0, len(o.Canaries))
	for n := range o.Canaries {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, src := range srcs {
		text := o.Texts[src]
		for _, name := range names {
			secret := o.Canaries[name]
			if secret == "" {
				continue
			}
			for _, form := range secretForms(secret) {
				if i := bytes.Index(text, []byte(form)); i >= 0 {
					out = append(out, Violation{"I7", fmt.Sprintf("%s appears in %s: …%s…", name, src, excerpt(text, i, len(form)))})
					break
				}
			}
		}
	}
	return out
}

// secretForms are the ways a secret can leak: as is, and base64-encoded at
// each of the three byte alignments (so it is found inside a longer
// encoded string such as "user:password").
func secretForms(s string) []string {
	forms := []string{s}
	for pad := 0; pad < 3; pad++ {
		enc := base64.StdEncoding.EncodeToString(append(bytes.Repeat([]byte{0}, pad), s...))
		// Drop the characters that depend on the neighbours.
		start := (pad*4 + 2) / 3
		end := len(enc) - 4
		if end-start >= 8 {
			forms = append(forms, enc[start:end])
		}
	}
	return forms
}

func excerpt(text []byte, i, n int) string {
	from, to := max(0, i-40), min(len(text), i+n+40)
	return strings.ReplaceAll(string(text[from:to]), "\n", " ")
}

func digestOf(ref string) string {
	if i := strings.LastIndexByte(ref, '@'); i >= 0 {
		return ref[i+1:]
	}
	if strings.HasPrefix(ref, "sha256:") {
		return ref
	}
	return ""
}

func short(d string) string {
	if strings.HasPrefix(d, "sha256:") && len(d) > 19 {
		return d[:19]
	}
	if len(d) > 12 && !strings.Contains(d, ":") {
		return d[:12]
	}
	if d == "" {
		return `""`
	}
	return d
}
