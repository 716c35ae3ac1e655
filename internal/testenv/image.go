package testenv

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

//go:embed testapp/main.go
var testappSource []byte

// App describes one version of the test workload. Two Apps that differ in any
// field give images with different digests; equal Apps give the same digest.
type App struct {
	Version    string
	Mode       string        // "" or "ok", "crash", "unhealthy", "slow"
	CrashAfter time.Duration // for Mode "crash"
	Slow       time.Duration // for Mode "slow": unhealthy for this long after start
	Health     *Health       // nil: the image has no HEALTHCHECK
	Env        []string
	Labels     map[string]string
}

// Health is the HEALTHCHECK baked into an App image; it runs "/app health".
type Health struct {
	Interval    time.Duration
	Timeout     time.Duration
	StartPeriod time.Duration
	Retries     int
}

// FastHealth is a healthcheck tuned for tests: it decides within a second or two.
var FastHealth = &Health{Interval: 250 * time.Millisecond, Timeout: time.Second, Retries: 3}

var (
	binaryOnce sync.Once
	binaryPath string
	binaryErr  error
	layerOnce  sync.Once
	appLayer   v1.Layer
	layerErr   error
)

// AppBinary compiles the test workload as a static linux binary once per
// process (cached across runs by the hash of its source) and returns its path.
func AppBinary() (string, error) {
	binaryOnce.Do(func() {
		sum := sha256.Sum256(append(testappSource, runtime.GOARCH...))
		cache, err := os.UserCacheDir()
		if err != nil {
			cache = os.TempDir()
		}
		dir := filepath.Join(cache, "shipwatch-testenv")
		binaryPath = filepath.Join(dir, "testapp-"+hex.EncodeToString(sum[:8]))
		if _, err := os.Stat(binaryPath); err == nil {
			return
		}
		binaryErr = buildApp(dir, binaryPath)
	})
	return binaryPath, binaryErr
}

func buildApp(dir, out string) error {
	src, err := os.MkdirTemp("", "shipwatch-testapp-src-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(src)
	if err := os.WriteFile(filepath.Join(src, "main.go"), testappSource, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte("module testapp\n\ngo 1.22\n"), 0o644); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp := out + ".tmp" + fmt.Sprint(os.Getpid())
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", tmp, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH, "GOFLAGS=-mod=mod", "GOWORK=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build test app: %v\n%s", err, b)
	}
	return os.Rename(tmp, out)
}

// appBaseLayer is the one layer every App image shares: /app.
func appBaseLayer() (v1.Layer, error) {
	layerOnce.Do(func() {
		path, err := AppBinary()
		if err != nil {
			layerErr = err
			return
		}
		bin, err := os.ReadFile(path)
		if err != nil {
			layerErr = err
			return
		}
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		hdr := &tar.Header{Name: "app", Mode: 0o755, Size: int64(len(bin)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}
		if err := tw.WriteHeader(hdr); err != nil {
			layerErr = err
			return
		}
		if _, err := tw.Write(bin); err != nil {
			layerErr = err
			return
		}
		if err := tw.Close(); err != nil {
			layerErr = err
			return
		}
		appLayer = static.NewLayer(buf.Bytes(), types.DockerLayer)
	})
	return appLayer, layerErr
}

// Image builds the runnable image for app on this machine's platform.
func (app App) Image() (v1.Image, error) {
	return app.imageFor("linux", runtime.GOARCH)
}

func (app App) imageFor(os, arch string) (v1.Image, error) {
	layer, err := appBaseLayer()
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	img = mutate.MediaType(img, types.DockerManifestSchema2)
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = os, arch
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	env := []string{"APP_VERSION=" + app.Version}
	if app.Mode != "" {
		env = append(env, "APP_MODE="+app.Mode)
	}
	if app.CrashAfter > 0 {
		env = append(env, "APP_CRASH_AFTER="+app.CrashAfter.String())
	}
	if app.Slow > 0 {
		env = append(env, "APP_SLOW="+app.Slow.String())
	}
	cf.Config = v1.Config{
		Entrypoint:   []string{"/app"},
		Env:          append(env, app.Env...),
		Labels:       app.Labels,
		ExposedPorts: map[string]struct{}{"8080/tcp": {}},
		StopSignal:   "SIGTERM",
	}
	if h := app.Health; h != nil {
		cf.Config.Healthcheck = &v1.HealthConfig{
			Test:        []string{"CMD", "/app", "health"},
			Interval:    h.Interval,
			Timeout:     h.Timeout,
			StartPeriod: h.StartPeriod,
			Retries:     h.Retries,
		}
	}
	return mutate.ConfigFile(img, cf)
}

// MustImage is Image for tests: it fails tb on error.
func (app App) MustImage(tb testing.TB) v1.Image {
	tb.Helper()
	img, err := app.Image()
	if err != nil {
		tb.Fatalf("build image for app %s: %v", app.Version, err)
	}
	return img
}

var (
	shipwatchOnce sync.Once
	shipwatchBin  string
	shipwatchErr  error
)

// BuildShipwatch builds the shipwatch CLI of this checkout once per process
// into dir (a temporary directory when empty) and returns its path.
func BuildShipwatch(dir string) (string, error) {
	shipwatchOnce.Do(func() {
		if dir == "" {
			dir, shipwatchErr = os.MkdirTemp("", "shipwatch-bin-")
			if shipwatchErr != nil {
				return
			}
		}
		shipwatchBin, shipwatchErr = BuildBinaries(context.Background(), dir)
	})
	return shipwatchBin, shipwatchErr
}

// BuildBinaries builds, into dir, the two binaries the project ships from
// cmd/shipwatch: shipwatch (every command) and shipwatch-agent (-tags
// agentonly), which `shipwatch agent` execs when it is installed alongside.
// flags go to both builds. It returns the path of shipwatch.
func BuildBinaries(ctx context.Context, dir string, flags ...string) (string, error) {
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w (building shipwatch needs Go)", err)
	}
	root := filepath.Dir(string(bytes.TrimSpace(gomod)))
	for _, b := range []struct{ out, tags string }{{"shipwatch", ""}, {"shipwatch-agent", "agentonly"}} {
		args := append(append([]string{"build", "-tags", b.tags}, flags...), "-o", filepath.Join(dir, b.out), "./cmd/shipwatch")
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("build %s: %w\n%s", b.out, err, out)
		}
	}
	return filepath.Join(dir, "shipwatch"), nil
}
