package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/compose/v5/pkg/api"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/moby/moby/client"

	"github.com/shipwatch/shipwatch/config"
	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/deployer/compose"
	"github.com/shipwatch/shipwatch/discovery"
	"github.com/shipwatch/shipwatch/imageref"
	"github.com/shipwatch/shipwatch/internal/testenv"
)

// TestExampleFilesLoad loads every file of the example as its tool does:
// the project with the Compose SDK, the configuration with shipwatch's
// config package.
func TestExampleFilesLoad(t *testing.T) {
	entries, err := os.ReadDir("..")
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{"compose.yaml": true, ".env": true, "shipwatch.yaml": true, "README.md": true, "registry": true}
	for _, e := range entries {
		if !known[e.Name()] {
			t.Errorf("examples/compose/%s is not loaded by this test", e.Name())
		}
	}
	svc, err := testenv.ComposeService(&bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	dir, _ := filepath.Abs("..")
	p, err := svc.LoadProject(context.Background(), api.ProjectLoadOptions{WorkingDir: dir, ConfigPaths: []string{filepath.Join(dir, "compose.yaml")}})
	if err != nil {
		t.Fatalf("load compose.yaml: %v", err)
	}
	if p.Name != "shipwatch-example" {
		t.Errorf("project name = %q, want shipwatch-example", p.Name)
	}
	if got, want := p.Services["web"].Image, "127.0.0.1:5000/example/web:1.0.0"; got != want && os.Getenv("REGISTRY") == "" {
		t.Errorf("web image = %q, want %q (from .env)", got, want)
	}
	if _, err := config.Load(filepath.Join(dir, "shipwatch.yaml"), os.LookupEnv); err != nil {
		t.Errorf("load shipwatch.yaml: %v", err)
	}
}

// TestExampleByHand walks the README against the real engine, through the
// deployer the CLI uses: roll out 1.1.0 (the .env tag is rewritten), try
// the crashing 1.2.0 (rolled back), roll back to 1.0.0.
func TestExampleByHand(t *testing.T) {
	cli := testenv.Engine(t)
	ctx := testenv.Context(t, 5*time.Minute)
	l, err := netListen()
	if err != nil {
		t.Fatal(err)
	}
	host := l.Addr().String()
	testenv.RemoveImagesOf(t, cli, host)
	var out syncBuffer
	srvCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- serve(srvCtx, l, &out) }()
	t.Cleanup(func() { stop(); <-done })
	testenv.Eventually(t, time.Minute, 100*time.Millisecond, func() (bool, string) {
		return strings.Contains(out.String(), "serving"), out.String()
	})

	composeFile, _ := os.ReadFile("../compose.yaml")
	dotenv, _ := os.ReadFile("../.env")
	// A free host port instead of 8080, so that the test never collides.
	files := map[string]string{
		"compose.yaml": strings.Replace(string(composeFile), `"127.0.0.1:8080:8080"`, `"127.0.0.1::8080"`, 1),
		".env":         "REGISTRY=" + host + "\n" + string(dotenv),
	}
	p := testenv.NewComposeProject(t, files)
	p.MustUp(t)
	dep, err := compose.New(ctx, compose.Options{HealthInterval: 250 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer dep.Close()
	target := func() deployer.Target {
		res, err := discovery.Discover(ctx, cli)
		if err != nil {
			t.Fatal(err)
		}
		for _, tg := range res.Targets {
			if tg.ID == "compose/"+p.Name+"/web" {
				return tg
			}
		}
		t.Fatalf("target not discovered")
		return deployer.Target{}
	}
	pinned := func(tag string) imageref.Ref {
		ref, _ := name.ParseReference(host+"/example/web:"+tag, name.Insecure)
		desc, err := remote.Head(ref)
		if err != nil {
			t.Fatal(err)
		}
		return imageref.MustParse(host + "/example/web:" + tag).WithDigest(desc.Digest.String())
	}
	v10, v11, v12 := pinned("1.0.0"), pinned("1.1.0"), pinned("1.2.0")

	res := dep.Deploy(ctx, deployer.Plan{Target: target(), To: v11}, nil)
	if res.Outcome != deployer.Updated {
		t.Fatalf("rollout 1.1.0: %s (%v)", res.Outcome, res.Cause)
	}
	if b, _ := os.ReadFile(filepath.Join(p.Dir, ".env")); !strings.Contains(string(b), "WEB_TAG=1.1.0\n") {
		t.Errorf(".env after rolling out 1.1.0:\n%s", b)
	}

	res = dep.Deploy(ctx, deployer.Plan{Target: target(), To: v12}, nil)
	if res.Outcome != deployer.RolledBack || res.Running != v11.Digest || res.FailedDigest != v12.Digest {
		t.Fatalf("rollout 1.2.0: %s running %s failed %s (%v), want rolled back to %s", res.Outcome, res.Running, res.FailedDigest, res.Cause, v11.Digest)
	}

	res = dep.Rollback(ctx, target(), "", nil)
	if res.Outcome != deployer.RolledBack || res.Running != v10.Digest {
		t.Fatalf("rollback: %s running %s (%v), want %s", res.Outcome, res.Running, res.Cause, v10.Digest)
	}
	if b, _ := os.ReadFile(filepath.Join(p.Dir, ".env")); !strings.Contains(string(b), "WEB_TAG=1.0.0\n") {
		t.Errorf(".env after the rollback:\n%s", b)
	}
	list, err := cli.ContainerList(ctx, client.ContainerListOptions{Filters: make(client.Filters).Add("label", api.ProjectLabel+"="+p.Name)})
	if err != nil || len(list.Items) != 1 || list.Items[0].State != "running" {
		t.Errorf("containers after the rollback: %+v (%v), want one running", list.Items, err)
	}
}

func netListen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

// syncBuffer is a bytes.Buffer safe for the server goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
