package compose

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/docker/compose/v5/pkg/api"
	composesdk "github.com/docker/compose/v5/pkg/compose"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/imageref"
)

// service is what a rollout knows about the target service: how to load
// its project, the project as it is on disk, and what runs.
type service struct {
	name       string
	loadOpts   api.ProjectLoadOptions
	envFiles   []string // env files Compose reads for interpolation, absolute
	project    *types.Project
	config     types.ServiceConfig
	containers []container.Summary // the service's replicas, by number
	imageID    string              // the local image they run
	// image is the reference the compose files give (interpolated), and
	// running its digest as it runs ("" when the engine cannot tell).
	image   imageref.Ref
	running string
}

func (s *service) containerIDs() []string {
	ids := make([]string, len(s.containers))
	for i, c := range s.containers {
		ids[i] = c.ID
	}
	return ids
}

// loadOptions derives how to load the project from the target, falling
// back on the labels Compose put on the containers.
func loadOptions(t deployer.Target, labels map[string]string) api.ProjectLoadOptions {
	cs := t.Compose
	wd := cs.WorkingDir
	if wd == "" {
		wd = labels[api.WorkingDirLabel]
	}
	files := cs.ConfigFiles
	if len(files) == 0 && labels[api.ConfigFilesLabel] != "" {
		files = strings.Split(labels[api.ConfigFilesLabel], ",")
	}
	envFiles := cs.EnvFiles
	if len(envFiles) == 0 && labels[api.EnvironmentFileLabel] != "" {
		envFiles = strings.Split(labels[api.EnvironmentFileLabel], ",")
	}
	abs := func(p string) string {
		if filepath.IsAbs(p) || wd == "" {
			return p
		}
		return filepath.Join(wd, p)
	}
	opts := api.ProjectLoadOptions{ProjectName: cs.Project, WorkingDir: wd}
	for _, f := range files {
		opts.ConfigPaths = append(opts.ConfigPaths, abs(f))
	}
	for _, f := range envFiles {
		opts.EnvFiles = append(opts.EnvFiles, abs(f))
	}
	return opts
}

// serviceContainers lists the replicas of a Compose service, in any state,
// without one-off and hook containers, ordered by container number.
func (d *Deployer) serviceContainers(ctx context.Context, project, svc string) ([]container.Summary, error) {
	list, err := d.engine.ContainerList(ctx, client.ContainerListOptions{
		All: true,
		Filters: make(client.Filters).
			Add("label", api.ProjectLabel+"="+project).
			Add("label", api.ServiceLabel+"="+svc).
			Add("label", api.OneoffLabel+"=False"),
	})
	if err != nil {
		return nil, fmt.Errorf("list containers of %s/%s: %w", project, svc, err)
	}
	out := slices.DeleteFunc(list.Items, func(c container.Summary) bool { return c.Labels[api.HookLabel] != "" })
	sort.Slice(out, func(i, j int) bool {
		return out[i].Labels[api.ContainerNumberLabel] < out[j].Labels[api.ContainerNumberLabel] ||
			(out[i].Labels[api.ContainerNumberLabel] == out[j].Labels[api.ContainerNumberLabel] && out[i].ID < out[j].ID)
	})
	return out, nil
}

// load reads the target's project from disk as Compose does and finds what
// runs. Nothing is changed.
func (d *Deployer) load(ctx context.Context, t deployer.Target) (*service, string, error) {
	cs := t.Compose
	ctrs, err := d.serviceContainers(ctx, cs.Project, cs.Service)
	if err != nil {
		return nil, "", err
	}
	if len(ctrs) == 0 {
		return nil, "", fmt.Errorf("%w: no container of service %s in Compose project %s: was it removed? Discover targets again",
			deployer.ErrNotFound, cs.Service, cs.Project)
	}
	s := &service{name: cs.Service, containers: ctrs, loadOpts: loadOptions(t, ctrs[0].Labels)}
	if err := checkFiles(s.loadOpts); err != nil {
		return nil, "", err
	}
	if s.project, err = d.loadProject(ctx, s.loadOpts, s.name); err != nil {
		return nil, "", err
	}
	s.config = s.project.Services[s.name]
	s.envFiles = envFilesOf(s.loadOpts)
	if s.config.Image == "" {
		return nil, "", fmt.Errorf("%w: service %s has no image: (built locally); shipwatch updates images from registries", deployer.ErrUnsupported, s.name)
	}
	if s.image, err = imageref.Parse(s.config.Image); err != nil {
		return nil, "", fmt.Errorf("%w: service %s: %v", deployer.ErrUnsupported, s.name, err)
	}
	ids := map[string]bool{}
	for _, c := range ctrs {
		ids[c.ImageID] = true
	}
	if len(ids) != 1 {
		return nil, "", fmt.Errorf("%w: the replicas of %s run different images (%d); run docker compose up -d to settle them first",
			deployer.ErrDrift, s.name, len(ids))
	}
	s.imageID = ctrs[0].ImageID
	if cs.ImageID != "" && cs.ImageID != s.imageID {
		return nil, "", fmt.Errorf("%w: %s runs image %s now, not %s as discovered; discover targets again",
			deployer.ErrConflict, t.Name, shortID(s.imageID), shortID(cs.ImageID))
	}
	img, err := d.engine.ImageInspect(ctx, s.imageID)
	if err != nil {
		return nil, "", fmt.Errorf("inspect running image %s: %w", shortID(s.imageID), err)
	}
	s.running = repoDigestOf(img.RepoDigests, s.image)
	detail := fmt.Sprintf("%s: %d replica(s) of %s (%s)", s.loadOpts.WorkingDir, len(ctrs), s.config.Image, orUnknown(s.running))
	return s, detail, nil
}

func orUnknown(digest string) string {
	if digest == "" {
		return "digest unknown"
	}
	return digest
}

// checkFiles turns a project that moved or lost its files into a clear
// error before Compose's own loader reports something cryptic.
func checkFiles(o api.ProjectLoadOptions) error {
	if o.WorkingDir == "" || len(o.ConfigPaths) == 0 {
		return fmt.Errorf("%w: the containers carry no com.docker.compose.project.working_dir/config_files labels; start the project with docker compose v2 or later",
			deployer.ErrUnsupported)
	}
	if fi, err := os.Stat(o.WorkingDir); err != nil || !fi.IsDir() {
		return fmt.Errorf("project directory %s (recorded on the containers) is gone: was the project moved? Run docker compose up -d from its new place so the labels point there: %w",
			o.WorkingDir, orNotDir(err))
	}
	for _, f := range append(append([]string{}, o.ConfigPaths...), o.EnvFiles...) {
		if _, err := os.ReadFile(f); err != nil {
			return fmt.Errorf("compose file %s (recorded on the containers) cannot be read; if the project moved, run docker compose up -d from its new place: %w", f, err)
		}
	}
	return nil
}

func orNotDir(err error) error {
	if err != nil {
		return err
	}
	return errors.New("not a directory")
}

// envFilesOf returns the env files Compose reads for interpolation: the
// ones given, or the project directory's .env.
func envFilesOf(o api.ProjectLoadOptions) []string {
	if len(o.EnvFiles) > 0 {
		return o.EnvFiles
	}
	if v := os.Getenv("COMPOSE_DISABLE_ENV_FILE"); v == "1" || strings.EqualFold(v, "true") {
		return nil
	}
	return []string{filepath.Join(o.WorkingDir, ".env")}
}

// loadProject loads the project with the Compose SDK (compose-go: .env,
// interpolation, profiles) and makes sure svc is enabled even when it sits
// behind a profile the environment does not activate.
func (d *Deployer) loadProject(ctx context.Context, o api.ProjectLoadOptions, svc string) (*types.Project, error) {
	p, err := d.sdk.LoadProject(ctx, o)
	if err != nil {
		return nil, fmt.Errorf("load compose project %s from %s: %w", o.ProjectName, strings.Join(o.ConfigPaths, ", "), err)
	}
	if _, ok := p.Services[svc]; !ok {
		if _, disabled := p.DisabledServices[svc]; !disabled {
			return nil, fmt.Errorf("%w: service %s is no longer defined in %s", deployer.ErrNotFound, svc, strings.Join(o.ConfigPaths, ", "))
		}
		if p, err = p.WithServicesEnabled(svc); err != nil {
			return nil, fmt.Errorf("enable service %s: %w", svc, err)
		}
	}
	return p, nil
}

// narrow returns the project reduced to the one service, as
// `docker compose up --no-deps <service>` does: the SDK converges every
// service it is given, so the project itself must be narrowed. The service
// keeps the number of replicas that runs, never pulls (the verified image is
// already local and tagged: a pull by tag could bring another digest), and
// carries shipwatch's labels (not part of the config-hash).
func narrow(p *types.Project, svc string, replicas int, labels map[string]string) (*types.Project, error) {
	n, err := p.WithSelectedServices([]string{svc}, types.IgnoreDependencies)
	if err != nil {
		return nil, fmt.Errorf("narrow project to %s: %w", svc, err)
	}
	n = n.WithoutUnnecessaryResources()
	s := n.Services[svc]
	s.PullPolicy = types.PullPolicyNever
	s.SetScale(replicas)
	for k, v := range labels {
		s.CustomLabels = s.CustomLabels.Add(k, v)
	}
	n.Services[svc] = s
	return n, nil
}

// ExpectedConfigHash returns the com.docker.compose.config-hash that
// `docker compose up` would give the target's containers from the files on
// disk now. When it differs from the running containers' label, the files
// were edited and not applied (drift).
func (d *Deployer) ExpectedConfigHash(ctx context.Context, target deployer.Target) (string, error) {
	if err := checkTarget(target); err != nil {
		return "", err
	}
	ctx, cancel := quick(ctx)
	defer cancel()
	s, _, err := d.load(ctx, target)
	if err != nil {
		return "", err
	}
	return d.expectedHash(ctx, s.project, s.config)
}

// expectedHash is the SDK's ServiceHash of the service with references to
// other services' containers (network_mode/ipc/pid: service:x,
// volumes_from) resolved as the SDK resolves them when it creates a
// container.
func (d *Deployer) expectedHash(ctx context.Context, p *types.Project, cfg types.ServiceConfig) (string, error) {
	var deps []string
	for _, mode := range []string{cfg.NetworkMode, cfg.Ipc, cfg.Pid} {
		if name, ok := strings.CutPrefix(mode, types.ServicePrefix); ok {
			deps = append(deps, name)
		}
	}
	for _, v := range cfg.VolumesFrom {
		if !strings.HasPrefix(v, types.ContainerPrefix) {
			name, _, _ := strings.Cut(v, ":")
			deps = append(deps, name)
		}
	}
	if len(deps) > 0 {
		first := map[string]string{} // service → first container ID by canonical name
		for _, dep := range deps {
			ctrs, err := d.serviceContainers(ctx, p.Name, dep)
			if err != nil {
				return "", err
			}
			sort.Slice(ctrs, func(i, j int) bool { return canonicalName(ctrs[i]) < canonicalName(ctrs[j]) })
			if len(ctrs) > 0 {
				first[dep] = ctrs[0].ID
			}
		}
		resolve := func(mode string) string {
			if name, ok := strings.CutPrefix(mode, types.ServicePrefix); ok && first[name] != "" {
				return types.ContainerPrefix + first[name]
			}
			return mode
		}
		cfg.NetworkMode, cfg.Ipc, cfg.Pid = resolve(cfg.NetworkMode), resolve(cfg.Ipc), resolve(cfg.Pid)
		cfg.VolumesFrom = slices.Clone(cfg.VolumesFrom)
		for i, v := range cfg.VolumesFrom {
			if spec := strings.Split(v, ":"); spec[0] == "container" && len(spec) > 1 {
				cfg.VolumesFrom[i] = spec[1]
				continue
			}
			name, _, _ := strings.Cut(v, ":")
			if first[name] != "" {
				cfg.VolumesFrom[i] = first[name]
			}
		}
	}
	h, err := composesdk.ServiceHash(cfg)
	if err != nil {
		return "", fmt.Errorf("config hash of %s: %w", cfg.Name, err)
	}
	return h, nil
}

func canonicalName(c container.Summary) string {
	for _, n := range c.Names {
		if strings.LastIndex(n, "/") == 0 {
			return n[1:]
		}
	}
	if len(c.Names) > 0 {
		return strings.TrimPrefix(c.Names[0], "/")
	}
	return c.ID
}
