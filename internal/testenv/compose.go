package testenv

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/docker/cli/cli/command"
	"github.com/docker/cli/cli/flags"
	"github.com/docker/compose/v5/pkg/api"
	"github.com/docker/compose/v5/pkg/compose"
)

// ComposeProject is a Compose project written by a test into its own
// directory and run the way `docker compose up -d` would run it, through the
// official Compose SDK in-process.
type ComposeProject struct {
	Name string
	Dir  string
	svc  api.Compose
}

// NewComposeProject writes files (relative name → content; "compose.yaml" at
// least) into a fresh directory and returns the project, not yet started.
// When the test ends the project is taken down with its volumes, networks
// and orphans.
func NewComposeProject(tb testing.TB, files map[string]string) *ComposeProject {
	tb.Helper()
	dir := tb.TempDir()
	for name, content := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	svc, err := ComposeService(io.Discard)
	if err != nil {
		tb.Fatalf("compose SDK: %v", err)
	}
	p := &ComposeProject{Name: Name("proj"), Dir: dir, svc: svc}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := p.Down(ctx); err != nil {
			tb.Errorf("compose down %s: %v", p.Name, err)
		}
	})
	return p
}

// OpenComposeProject is a Compose project in dir named name, for programs
// that are not tests (the quickstart); the caller takes it Down.
func OpenComposeProject(dir, name string, out io.Writer) (*ComposeProject, error) {
	svc, err := ComposeService(out)
	if err != nil {
		return nil, err
	}
	return &ComposeProject{Name: name, Dir: dir, svc: svc}, nil
}

// ComposeService returns the Compose SDK service talking to the engine from
// the environment, as the docker CLI would, writing progress to out.
func ComposeService(out io.Writer) (api.Compose, error) {
	dcli, err := command.NewDockerCli(command.WithOutputStream(out), command.WithErrorStream(out))
	if err != nil {
		return nil, err
	}
	if err := dcli.Initialize(flags.NewClientOptions()); err != nil {
		return nil, err
	}
	return compose.NewComposeService(dcli, compose.WithOutputStream(out), compose.WithErrorStream(out))
}

// Load loads the project from its directory as `docker compose` does
// (.env, interpolation, profiles).
func (p *ComposeProject) Load(ctx context.Context) (*types.Project, error) {
	return p.svc.LoadProject(ctx, api.ProjectLoadOptions{
		ProjectName: p.Name,
		WorkingDir:  p.Dir,
		ConfigPaths: []string{filepath.Join(p.Dir, "compose.yaml")},
	})
}

// Up is `docker compose up -d` in the project directory.
func (p *ComposeProject) Up(ctx context.Context) error {
	project, err := p.Load(ctx)
	if err != nil {
		return fmt.Errorf("load project: %w", err)
	}
	return p.svc.Up(ctx, project, api.UpOptions{
		Create: api.CreateOptions{Recreate: api.RecreateDiverged, RecreateDependencies: api.RecreateDiverged, Inherit: true, QuietPull: true},
		Start:  api.StartOptions{Project: project},
	})
}

// MustUp is Up for tests.
func (p *ComposeProject) MustUp(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := p.Up(ctx); err != nil {
		tb.Fatalf("compose up %s: %v", p.Name, err)
	}
}

// Down is `docker compose down --volumes --remove-orphans`.
func (p *ComposeProject) Down(ctx context.Context) error {
	return p.svc.Down(ctx, p.Name, api.DownOptions{RemoveOrphans: true, Volumes: true})
}

// Containers lists the project's containers (all states).
func (p *ComposeProject) Containers(ctx context.Context) ([]api.ContainerSummary, error) {
	return p.svc.Ps(ctx, p.Name, api.PsOptions{All: true})
}
