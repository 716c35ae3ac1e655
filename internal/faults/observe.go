package faults

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/moby/moby/client"

	"github.com/shipwatch/shipwatch/imageref"
	"github.com/shipwatch/shipwatch/state"
)

// observeWorkload reads the workload's containers (and the Swarm service)
// from the engine. Engine errors leave the lists empty, which the
// invariants then report.
func (e *Env) observeWorkload(ctx context.Context) Observation {
	o := Observation{Target: e.Target, Swarm: e.Platform == Swarm, Desired: e.Opts.Replicas, Initial: e.Initial}
	var filter client.Filters
	tasks := map[string]string{} // task ID → desired state
	if e.Platform == Swarm {
		filter = make(client.Filters).Add("label", "com.docker.swarm.service.id="+e.Service)
		if svc, err := e.Cli.ServiceInspect(ctx, e.Service, client.ServiceInspectOptions{}); err == nil {
			if svc.Service.UpdateStatus != nil {
				o.UpdateState = string(svc.Service.UpdateStatus.State)
			}
			if cs := svc.Service.Spec.TaskTemplate.ContainerSpec; cs != nil {
				if r, err := imageref.Parse(cs.Image); err == nil {
					o.SpecDigest = r.Digest
				}
			}
		} else {
			o.UpdateState = "inspect failed: " + err.Error()
		}
		if tl, err := e.Cli.TaskList(ctx, client.TaskListOptions{Filters: make(client.Filters).Add("service", e.Service)}); err == nil {
			for _, tk := range tl.Items {
				tasks[tk.ID] = string(tk.DesiredState)
			}
		}
	} else {
		filter = make(client.Filters).Add("label", "com.docker.compose.project="+e.Project.Name)
	}
	list, err := e.Cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: filter})
	if err != nil {
		return o
	}
	digests := map[string]string{} // image ID → digest
	for _, c := range list.Items {
		ct := Container{ID: c.ID, State: string(c.State)}
		if len(c.Names) > 0 {
			ct.Name = strings.TrimPrefix(c.Names[0], "/")
		}
		if insp, err := e.Cli.ContainerInspect(ctx, c.ID, client.ContainerInspectOptions{}); err == nil && insp.Container.State != nil {
			ct.State = string(insp.Container.State.Status)
			if h := insp.Container.State.Health; h != nil {
				ct.Health = string(h.Status)
			}
		}
		if d, ok := digests[c.ImageID]; ok {
			ct.Digest = d
		} else {
			ct.Digest = e.digestOfImage(ctx, c.ImageID)
			digests[c.ImageID] = ct.Digest
		}
		if e.Platform == Swarm {
			ct.Task = tasks[c.Labels["com.docker.swarm.task.id"]]
			if ct.Task == "" {
				ct.Task = "unknown task"
			}
		}
		o.Containers = append(o.Containers, ct)
	}
	return o
}

// digestOfImage is the manifest digest of a local image in the run's
// repository ("" when the image has no RepoDigest there: not pulled from
// the run's registry).
func (e *Env) digestOfImage(ctx context.Context, id string) string {
	img, err := e.Cli.ImageInspect(ctx, id)
	if err != nil {
		return ""
	}
	prefix := e.Reg.Host + "/" + e.Repo + "@"
	for _, rd := range img.RepoDigests {
		if d, ok := strings.CutPrefix(rd, prefix); ok {
			return d
		}
	}
	return ""
}

// Observe collects everything the invariants need. Call it after every
// agent process has stopped (the state file is locked while one runs).
func (e *Env) Observe() Observation {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	o := e.observeWorkload(ctx)
	o.Allowed = e.Allowed()
	o.Canaries = e.Canaries
	o.Texts = map[string][]byte{}
	st, err := state.Open(e.State, 5*time.Second)
	if err == nil {
		defer st.Close()
		err = st.Check()
		hist, herr := st.History(e.Target, 0)
		if herr != nil && err == nil {
			err = herr
		}
		for i := len(hist) - 1; i >= 0; i-- {
			o.History = append(o.History, hist[i])
		}
		js, jerr := st.Journals()
		if jerr != nil && err == nil {
			err = jerr
		}
		o.Journals = js
	}
	o.StateErr = err
	if raw, err := os.ReadFile(e.State); err == nil {
		o.Texts["state file"] = raw
	}
	for i, a := range e.Agents() {
		o.Texts[fmt.Sprintf("agent %d log", i+1)] = []byte(a.Log())
	}
	for i, n := range e.Notifications() {
		o.Texts[fmt.Sprintf("notification %d", i+1)] = n
	}
	e.mu.Lock()
	for k, v := range e.texts {
		o.Texts[k] = v
	}
	e.mu.Unlock()
	return o
}

// SweepAPI asks the running agent everything it answers (and provokes its
// error answers) so that the secret sweep covers API responses and /metrics.
func (e *Env) SweepAPI() {
	tok := e.Canaries[CanaryAPIToken]
	calls := []struct{ method, path, token, body string }{
		{"GET", "/v1/history?limit=0", tok, ""},
		{"GET", "/v1/targets", tok, ""},
		{"GET", "/v1/quarantine", tok, ""},
		{"GET", "/v1/approvals", tok, ""},
		{"GET", "/metrics", tok, ""},
		{"GET", "/healthz", "", ""},
		{"POST", "/v1/check", tok, `{"targets":["` + e.Target + `"]}`},
		// Error answers: a wrong token, bad bodies, an unknown target.
		{"GET", "/v1/targets", "wrong-" + tok[:8], ""},
		{"POST", "/v1/rollouts", tok, `{"target":"` + e.Target + `","to":"sha256:nope"}`},
		{"POST", "/v1/rollouts", tok, `{"target":"swarm/does-not-exist"}`},
		{"POST", "/v1/rollbacks", tok, `{"target":"` + e.Target + `","bogus":1}`},
		{"DELETE", "/v1/quarantine", tok, ""},
	}
	for _, c := range calls {
		if _, _, err := e.API(c.method, c.path, c.token, c.body); err != nil {
			e.Note("API %s %s: %v", c.method, c.path, err)
		}
	}
}
