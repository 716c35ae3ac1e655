package faults

import (
	"archive/tar"
	"bytes"
	"context"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/moby/moby/client"

	"github.com/shipwatch/shipwatch/imageref"
	"github.com/shipwatch/shipwatch/state"
)

// CandidateTag is the tag the next version is pushed as: a new semver tag,
// or the running tag itself under the digest policy.
func (e *Env) CandidateTag() string {
	if e.Opts.Policy == "digest" {
		return e.Tag
	}
	return "1.1.0"
}

// PushCandidate pushes v as the candidate with a layer of its own (so that
// the engine really transfers a layer when it pulls it, which the pull
// faults cut) and returns it.
func (e *Env) PushCandidate(v Version) Version {
	e.T.Helper()
	return e.Push(e.CandidateTag(), e.withLayer(v))
}

// withLayer gives v's image an extra layer: a tar with one file of 256 KiB
// to 1 MiB of seeded bytes.
func (e *Env) withLayer(v Version) Version {
	size := 256<<10 + e.Rng.IntN(768<<10)
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(e.Rng.Uint32())
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdr := &tar.Header{Name: "payload", Mode: 0o644, Size: int64(size), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}
	if err := tw.WriteHeader(hdr); err != nil {
		e.T.Fatal(err)
	}
	if _, err := tw.Write(b); err != nil {
		e.T.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		e.T.Fatal(err)
	}
	v.extra = static.NewLayer(buf.Bytes(), types.DockerLayer)
	return v
}

// WaitPasses waits until the agent has finished n passes after mark.
func WaitPasses(a *Agent, mark, n int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for i := 0; i < n; i++ {
		m, next := a.WaitFrom(mark, time.Until(deadline), func(m map[string]any) bool { return Str(m, "message") == "pass done" })
		if m == nil {
			return false
		}
		mark = next
	}
	return true
}

// StepEnded matches the Compose deployer's log line for the end of step
// on target.
func StepEnded(target, step string) func(map[string]any) bool {
	return func(m map[string]any) bool {
		return Str(m, "message") == "compose rollout step" && Str(m, "target") == target && Str(m, "step") == step
	}
}

// Journals reads the rollout journals from the state file (the agent must
// be stopped: the file is locked while it runs).
func (e *Env) Journals() ([]state.Journal, error) {
	st, err := state.Open(e.State, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	return st.Journals()
}

// Quarantined reports whether digest is quarantined for the run's target,
// as the running agent's API says.
func (e *Env) Quarantined(digest string) bool {
	code, body, err := e.API("GET", "/v1/quarantine", e.Canaries[CanaryAPIToken], "")
	return err == nil && code == 200 && strings.Contains(string(body), digest)
}

// Watch polls the engine every 25 ms until cond holds for the workload or
// ctx ends; it returns whether cond held.
func (e *Env) Watch(ctx context.Context, cond func(o Observation) bool) bool {
	t := time.NewTicker(25 * time.Millisecond)
	defer t.Stop()
	for {
		if cond(e.observeQuick(ctx)) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}

// observeQuick reads only what the kill triggers need: the Swarm
// service's state and pinned digest, and which digests run.
func (e *Env) observeQuick(ctx context.Context) Observation {
	o := Observation{Swarm: e.Platform == Swarm}
	if e.Platform == Swarm {
		svc, err := e.Cli.ServiceInspect(ctx, e.Service, client.ServiceInspectOptions{})
		if err != nil {
			return o
		}
		if svc.Service.UpdateStatus != nil {
			o.UpdateState = string(svc.Service.UpdateStatus.State)
		}
		if cs := svc.Service.Spec.TaskTemplate.ContainerSpec; cs != nil {
			if r, err := imageref.Parse(cs.Image); err == nil {
				o.SpecDigest = r.Digest
			}
		}
		tl, err := e.Cli.TaskList(ctx, client.TaskListOptions{Filters: make(client.Filters).Add("service", e.Service)})
		if err != nil {
			return o
		}
		for _, tk := range tl.Items {
			if tk.Status.State != "running" || tk.Spec.ContainerSpec == nil {
				continue
			}
			if r, err := imageref.Parse(tk.Spec.ContainerSpec.Image); err == nil {
				o.Containers = append(o.Containers, Container{ID: tk.ID, State: "running", Task: string(tk.DesiredState), Digest: r.Digest})
			}
		}
		return o
	}
	return e.observeWorkload(ctx)
}
