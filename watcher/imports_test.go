package watcher

import (
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestWatcherNeverImportsDocker fences the package (design: "watcher …
// never imports Docker"): no file of it imports github.com/moby/… or
// github.com/docker/…, and nothing it links may talk to the engine. The
// one Docker module allowed in its dependencies is the Docker CLI's
// config-file reader that go-containerregistry's authn.DefaultKeychain
// uses to read ~/.docker/config.json and run credential helpers.
func TestWatcherNeverImportsDocker(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		checked++
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if strings.HasPrefix(path, "github.com/moby/") || strings.HasPrefix(path, "github.com/docker/") {
				t.Errorf("%s imports %s; the watcher must not import Docker", name, path)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no source files checked")
	}

	goTool := filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	if _, err := os.Stat(goTool); err != nil {
		goTool = "go"
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	allowed := []string{"github.com/docker/cli/cli/config", "github.com/docker/docker-credential-helpers/"}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps listed %d packages, want the whole dependency graph", len(deps))
	}
	for _, dep := range deps {
		if !strings.HasPrefix(dep, "github.com/moby/") && !strings.HasPrefix(dep, "github.com/docker/") &&
			!strings.HasPrefix(dep, "github.com/sigstore/") {
			continue
		}
		ok := false
		for _, a := range allowed {
			if strings.HasPrefix(dep, a) {
				ok = true
			}
		}
		if !ok {
			t.Errorf("the watcher links %s; it must not depend on the Docker engine, Compose or sigstore", dep)
		}
	}
}
