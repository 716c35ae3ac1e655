package compose_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/moby/moby/client"

	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/deployer/compose"
	"github.com/shipwatch/shipwatch/internal/testenv"
)

// restartingEngine is the real engine that, once armed, answers its next
// down calls the way an engine that is restarting does: the connection
// fails (the error comes from a real client on a socket nobody listens on).
type restartingEngine struct {
	compose.Engine
	dead *client.Client
	tags int // tags that work before the engine "restarts"
	down int // calls that fail once it has
}

func (r *restartingEngine) ImageTag(ctx context.Context, o client.ImageTagOptions) (client.ImageTagResult, error) {
	if r.tags > 0 {
		r.tags--
		return r.Engine.ImageTag(ctx, o)
	}
	if r.down > 0 {
		r.down--
		return r.dead.ImageTag(ctx, o)
	}
	return r.Engine.ImageTag(ctx, o)
}

// An engine that restarts while a failed update is being undone must not
// leave the service half-restored: the restore waits for the engine (within
// its deadline) instead of giving up at the first refused connection. Found
// by the fault suite (internal/faults, class engine-cut): the connections
// were cut during the converge and refused for a few seconds; the restore
// failed at once with "manual action needed", leaving the new container
// created next to the old one, and the agent then took the target for
// updated.
func TestRestoreWaitsForARestartingEngine(t *testing.T) {
	t.Parallel()
	dead, err := client.New(client.WithHost("unix://"+t.TempDir()+"/no-engine.sock"), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dead.Close() })
	var eng *restartingEngine
	e := newEnvWrapped(t, compose.Options{}, func(inner compose.Engine) compose.Engine {
		eng = &restartingEngine{Engine: inner, dead: dead}
		return eng
	})
	v1 := e.push("1.0", testenv.App{Version: "1.0.0", Health: fastHealth})
	file := simpleCompose(e.ref("1.0"), "")
	p := e.project(map[string]string{"compose.yaml": file})
	bad := e.push("1.0", testenv.App{Version: "1.0.1", Mode: "unhealthy", Health: fastHealth})
	// The rollback tag and the new image's tag work; then the engine
	// restarts just as the tag is moved back, refusing three connections.
	eng.tags, eng.down = 2, 3

	res := e.deploy(deployer.Plan{Target: e.target(p, "web"), To: bad})

	e.rolledBack(p, res, v1.Digest, "1.0.0", map[string]string{"compose.yaml": file})
	if n := countSteps(res, "rollback: restore image tag"); n != 1 {
		t.Errorf("restore image tag step recorded %d times, want 1", n)
	}
	if eng.down != 0 {
		t.Errorf("%d refused connections left: the restore did not go through the restart", eng.down)
	}
}

// backupWatch records, at each tag the deployer asks for, whether the
// compose file's backup is on disk.
type backupWatch struct {
	compose.Engine
	backup string
	seen   []bool
}

func (b *backupWatch) ImageTag(ctx context.Context, o client.ImageTagOptions) (client.ImageTagResult, error) {
	_, err := os.Stat(b.backup)
	b.seen = append(b.seen, err == nil)
	return b.Engine.ImageTag(ctx, o)
}

// The backup of a rewritten compose file survives until the restore has
// ended. An agent killed after the restore put the file back, but before
// the previous version ran again, used to leave no backup: on restart the
// recovery met containers running the new version and a file naming the
// old one, took it for drift and refused, leaving the failed version
// running. Found by the fault suite (internal/faults, class kill-compose,
// SIGKILL after "rollback: restore image tag").
func TestRestoreKeepsTheBackupUntilTheOldVersionRuns(t *testing.T) {
	t.Parallel()
	var watch *backupWatch
	e := newEnvWrapped(t, compose.Options{}, func(inner compose.Engine) compose.Engine {
		watch = &backupWatch{Engine: inner}
		return watch
	})
	v1 := e.push("1.0.0", testenv.App{Version: "1.0.0", Health: fastHealth})
	bad := e.push("1.1.0", testenv.App{Version: "1.1.0", Mode: "unhealthy", Health: fastHealth})
	file := simpleCompose(e.ref("1.0.0"), "")
	p := e.project(map[string]string{"compose.yaml": file})
	watch.backup = filepath.Join(p.Dir, "compose.yaml.shipwatch-backup")

	res := e.deploy(deployer.Plan{Target: e.target(p, "web"), To: bad})

	e.rolledBack(p, res, v1.Digest, "1.0.0", map[string]string{"compose.yaml": file})
	// Tags: protect, new image, then the restore's tag back (after the file
	// was put back, before the converge).
	if len(watch.seen) < 3 || !watch.seen[len(watch.seen)-1] {
		t.Errorf("backup on disk at each tag: %v, want it there while the restore runs", watch.seen)
	}
}
