// Package discovery lists what runs on the Docker engine as shipwatch targets:
// every Compose service (from its containers' com.docker.compose.* labels) and
// every Swarm service, with the image reference each was deployed from and the
// digest it runs now. It only reads; the engine is the source of truth.
package discovery

import (
	"context"
	"fmt"
	"sort"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/imageref"
)

// Engine is the part of the Docker client discovery needs.
type Engine interface {
	Info(ctx context.Context, options client.InfoOptions) (client.SystemInfoResult, error)
	ContainerList(ctx context.Context, options client.ContainerListOptions) (client.ContainerListResult, error)
	ContainerInspect(ctx context.Context, id string, options client.ContainerInspectOptions) (client.ContainerInspectResult, error)
	ImageList(ctx context.Context, options client.ImageListOptions) (client.ImageListResult, error)
	ImageInspect(ctx context.Context, id string, opts ...client.ImageInspectOption) (client.ImageInspectResult, error)
	ServiceList(ctx context.Context, options client.ServiceListOptions) (client.ServiceListResult, error)
	TaskList(ctx context.Context, options client.TaskListOptions) (client.TaskListResult, error)
}

var _ Engine = (*client.Client)(nil)

// Compose labels, as written by the docker compose CLI and SDK.
const (
	labelProject    = "com.docker.compose.project"
	labelService    = "com.docker.compose.service"
	labelWorkingDir = "com.docker.compose.project.working_dir"
	labelConfig     = "com.docker.compose.project.config_files"
	labelEnvFiles   = "com.docker.compose.project.environment_file"
	labelConfigHash = "com.docker.compose.config-hash"
	labelOneoff     = "com.docker.compose.oneoff"
	labelSwarmTask  = "com.docker.swarm.task.id"
	labelStack      = "com.docker.stack.namespace"
	labelStackImage = "com.docker.stack.image"
)

// Result is what one discovery found.
type Result struct {
	Targets []deployer.Target // sorted by ID; Unmanaged ones included
	// Swarm says whether this engine is an active swarm manager (services listed).
	Swarm bool
	// Notes explain what was not looked at (for example "this node is a swarm
	// worker: services can only be updated from a manager").
	Notes []string
}

// Discover lists the Compose services and Swarm services on the engine.
// Containers outside Compose and Swarm are returned as unmanaged targets with
// the reason. An engine error is returned, never swallowed.
func Discover(ctx context.Context, eng Engine) (Result, error) {
	info, err := eng.Info(ctx, client.InfoOptions{})
	if err != nil {
		return Result{}, fmt.Errorf("engine info: %w", err)
	}
	return discover(ctx, eng, info.Info.Swarm)
}

// discover is Discover once the engine's swarm state is known.
func discover(ctx context.Context, eng Engine, sw swarm.Info) (Result, error) {
	var res Result
	compose, err := discoverContainers(ctx, eng)
	if err != nil {
		return res, err
	}
	res.Targets = append(res.Targets, compose...)

	switch {
	case sw.LocalNodeState == swarm.LocalNodeStateActive && sw.ControlAvailable:
		services, err := discoverServices(ctx, eng)
		if err != nil {
			return res, err
		}
		res.Swarm = true
		res.Targets = append(res.Targets, services...)
	case sw.LocalNodeState == swarm.LocalNodeStateActive:
		res.Notes = append(res.Notes, "this node is a swarm worker: Swarm services are listed and updated only from a manager; run shipwatch on a manager node")
	}
	sort.Slice(res.Targets, func(i, j int) bool { return res.Targets[i].ID < res.Targets[j].ID })
	return res, nil
}

type composeKey struct{ project, service string }

func discoverContainers(ctx context.Context, eng Engine) ([]deployer.Target, error) {
	list, err := eng.ContainerList(ctx, client.ContainerListOptions{All: true})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	groups := map[composeKey][]string{}
	first := map[composeKey]int{}
	running := map[composeKey]int{}
	var out []deployer.Target
	for i, c := range list.Items {
		labels := c.Labels
		switch {
		case labels[labelSwarmTask] != "":
			continue // a task of a Swarm service: the service is the target
		case labels[labelProject] == "" || labels[labelService] == "":
			if c.State != "running" {
				continue
			}
			name := strings.TrimPrefix(firstOr(c.Names, c.ID), "/")
			out = append(out, deployer.Target{
				ID:        "container/" + name,
				Name:      name,
				Labels:    labels,
				Unmanaged: "not part of a Compose project or Swarm service: shipwatch updates Compose services and Swarm services only (start it with docker compose to manage it)",
			})
			continue
		case strings.EqualFold(labels[labelOneoff], "true"):
			continue // docker compose run containers
		}
		k := composeKey{labels[labelProject], labels[labelService]}
		// The target is what runs: a running container stands for the
		// service, not a leftover of an interrupted recreate (created,
		// never started, with the new image) listed before it.
		if _, ok := groups[k]; !ok || c.State == "running" && list.Items[first[k]].State != "running" {
			first[k] = i
		}
		groups[k] = append(groups[k], c.ID)
		if c.State == "running" {
			running[k]++
		}
	}
	if len(groups) == 0 {
		return out, nil
	}
	// One image listing instead of an inspect per service: on a host with
	// a thousand services this is the difference between one request and
	// a thousand per pass (docs/benchmarks/agent.md).
	images, err := eng.ImageList(ctx, client.ImageListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	repoDigests := make(map[string][]string, len(images.Items))
	for _, img := range images.Items {
		repoDigests[img.ID] = img.RepoDigests
	}
	for k, ids := range groups {
		c := list.Items[first[k]]
		t, err := composeTarget(ctx, eng, k, c, ids, running[k], repoDigests)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// configuredImage returns the image reference a listed container was
// created from, or "" when the list cannot tell. The engine lists
// Config.Image while that reference still names the container's image, and
// the image ID once the tag has moved on (a newer image pulled under the
// same tag): only then does it take an inspect to learn the reference.
func configuredImage(c container.Summary) string {
	if c.Image == "" || c.Image == c.ImageID || strings.HasPrefix(c.Image, "sha256:") {
		return ""
	}
	return c.Image
}

func composeTarget(ctx context.Context, eng Engine, k composeKey, c container.Summary, ids []string, running int, repoDigests map[string][]string) (deployer.Target, error) {
	sort.Strings(ids)
	labels := c.Labels
	t := deployer.Target{
		ID:       "compose/" + k.project + "/" + k.service,
		Kind:     deployer.KindCompose,
		Name:     k.project + "/" + k.service,
		Labels:   labels,
		Replicas: running,
		Compose: &deployer.ComposeService{
			Project:     k.project,
			Service:     k.service,
			WorkingDir:  labels[labelWorkingDir],
			ConfigFiles: splitList(labels[labelConfig]),
			EnvFiles:    splitList(labels[labelEnvFiles]),
			ConfigHash:  labels[labelConfigHash],
			ImageID:     c.ImageID,
			Containers:  ids,
		},
	}
	configured := configuredImage(c)
	if configured == "" {
		insp, err := eng.ContainerInspect(ctx, c.ID, client.ContainerInspectOptions{})
		if err != nil {
			if isNotFound(err) { // removed between list and inspect
				t.Unmanaged = "its container disappeared during discovery; it will be looked at again on the next pass"
				return t, nil
			}
			return t, fmt.Errorf("inspect container %s of %s: %w", shortID(c.ID), t.Name, err)
		}
		if insp.Container.Config != nil {
			configured = insp.Container.Config.Image
		}
	}
	ref, err := imageref.Parse(configured)
	if err != nil {
		t.Unmanaged = fmt.Sprintf("its image %q is not a registry reference (built locally?): nothing to watch", configured)
		return t, nil
	}
	t.Image = ref.Tagged()
	if ref.Digest != "" {
		t.Digest = ref.Digest
		return t, nil
	}
	rds, listed := repoDigests[c.ImageID]
	if !listed { // not among the top-level images (or pulled since the listing)
		img, err := eng.ImageInspect(ctx, c.ImageID)
		if err != nil {
			if isNotFound(err) {
				t.Unmanaged = "its image is no longer present on this engine"
				return t, nil
			}
			return t, fmt.Errorf("inspect image of %s: %w", t.Name, err)
		}
		rds = img.RepoDigests
	}
	t.Digest = repoDigest(rds, ref)
	return t, nil
}

func discoverServices(ctx context.Context, eng Engine) ([]deployer.Target, error) {
	list, err := eng.ServiceList(ctx, client.ServiceListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list swarm services: %w", err)
	}
	out := make([]deployer.Target, 0, len(list.Items))
	for _, s := range list.Items {
		t := serviceTarget(s)
		if t.Unmanaged == "" && t.Digest == "" {
			d, err := runningTaskDigest(ctx, eng, s.ID, t.Image)
			if err != nil {
				return nil, fmt.Errorf("digest of swarm service %s: %w", t.Name, err)
			}
			t.Digest = d
		}
		out = append(out, t)
	}
	return out, nil
}

// runningTaskDigest finds the digest a service created with a bare tag (through
// the API rather than the docker CLI, which pins digests) runs, from a task
// container on this node. "" when no task runs here.
func runningTaskDigest(ctx context.Context, eng Engine, serviceID string, ref imageref.Ref) (string, error) {
	tasks, err := eng.TaskList(ctx, client.TaskListOptions{Filters: make(client.Filters).Add("service", serviceID).Add("desired-state", "running")})
	if err != nil {
		return "", err
	}
	for _, task := range tasks.Items {
		if task.Status.ContainerStatus == nil || task.Status.ContainerStatus.ContainerID == "" {
			continue
		}
		c, err := eng.ContainerInspect(ctx, task.Status.ContainerStatus.ContainerID, client.ContainerInspectOptions{})
		if err != nil {
			continue // on another node, or gone: try the next task
		}
		img, err := eng.ImageInspect(ctx, c.Container.Image)
		if err != nil {
			continue
		}
		if d := repoDigest(img.RepoDigests, ref); d != "" {
			return d, nil
		}
	}
	return "", nil
}

func serviceTarget(s swarm.Service) deployer.Target {
	spec := s.Spec
	t := deployer.Target{
		ID:     "swarm/" + spec.Name,
		Kind:   deployer.KindSwarm,
		Name:   spec.Name,
		Labels: spec.Labels,
		Swarm: &deployer.SwarmService{
			ID:      s.ID,
			Version: s.Version.Index,
			Stack:   spec.Labels[labelStack],
		},
	}
	if s.UpdateStatus != nil {
		t.Swarm.UpdateState = string(s.UpdateStatus.State)
	}
	switch m := spec.Mode; {
	case m.Replicated != nil:
		t.Swarm.Mode = "replicated"
		if m.Replicated.Replicas != nil {
			t.Replicas = int(*m.Replicated.Replicas)
		}
	case m.Global != nil:
		t.Swarm.Mode, t.Replicas = "global", -1
	case m.ReplicatedJob != nil:
		t.Swarm.Mode = "replicated-job"
		t.Unmanaged = "a replicated job runs to completion; shipwatch does not update jobs (change its spec by hand)"
	case m.GlobalJob != nil:
		t.Swarm.Mode = "global-job"
		t.Unmanaged = "a global job runs to completion; shipwatch does not update jobs (change its spec by hand)"
	}
	cs := spec.TaskTemplate.ContainerSpec
	if cs == nil {
		if t.Unmanaged == "" {
			t.Unmanaged = "not a container service (plugin or network attachment)"
		}
		return t
	}
	ref, err := imageref.Parse(cs.Image)
	if err != nil {
		if t.Unmanaged == "" {
			t.Unmanaged = fmt.Sprintf("its image %q is not a registry reference: nothing to watch", cs.Image)
		}
		return t
	}
	t.Digest = ref.Digest
	t.Image = ref.Tagged()
	// The stack file's reference (the CLI pins tags to digests when it
	// deploys): prefer it when it names the same repository.
	if stackImage, err := imageref.Parse(spec.Labels[labelStackImage]); err == nil && stackImage.SameRepo(ref) && stackImage.Tag != "" && ref.Tag == "" {
		t.Image = stackImage.Tagged()
	}
	return t
}

// repoDigest picks the RepoDigest of ref's repository ("" when the image was
// never pulled from that repository, e.g. built locally).
func repoDigest(repoDigests []string, ref imageref.Ref) string {
	for _, rd := range repoDigests {
		r, err := imageref.Parse(rd)
		if err == nil && r.SameRepo(ref) && r.Digest != "" {
			return r.Digest
		}
	}
	return ""
}

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	parts := strings.Split(s, ",")
	out := parts[:0]
	for _, p := range parts {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func firstOr(names []string, def string) string {
	if len(names) > 0 {
		return names[0]
	}
	return def
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func isNotFound(err error) bool { return cerrdefs.IsNotFound(err) }
