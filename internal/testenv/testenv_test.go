package testenv

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"
)

func TestImagesAreDeterministicAndDistinct(t *testing.T) {
	a1 := App{Version: "1.0.0"}.MustImage(t)
	a2 := App{Version: "1.0.0"}.MustImage(t)
	b := App{Version: "1.0.1"}.MustImage(t)
	d1, _ := a1.Digest()
	d2, _ := a2.Digest()
	d3, _ := b.Digest()
	if d1 != d2 {
		t.Errorf("same App gave digests %s and %s, want equal", d1, d2)
	}
	if d1 == d3 {
		t.Errorf("different versions gave the same digest %s", d1)
	}
}

func TestRegistryTokenAuthAndCounting(t *testing.T) {
	reg := NewRegistry(t, WithTokenAuth("alice", "s3cret"))
	dig := reg.MustPush(t, "demo/app:1.0.0", App{Version: "1.0.0"}.MustImage(t))
	reg.Reset()

	ref, err := name.ParseReference(reg.Ref("demo/app:1.0.0"), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Head(ref, remote.WithAuth(reg.Auth()))
	if err != nil {
		t.Fatalf("HEAD with credentials: %v", err)
	}
	if desc.Digest.String() != dig {
		t.Errorf("HEAD digest = %s, want %s", desc.Digest, dig)
	}
	if got := reg.Count(http.MethodHead, "manifest"); got != 1 {
		t.Errorf("manifest HEADs = %d, want 1", got)
	}
	if got := reg.Count("", "token"); got != 1 {
		t.Errorf("token requests = %d, want 1", got)
	}
	if _, err := remote.Head(ref); err == nil {
		t.Errorf("anonymous HEAD succeeded on a registry that requires auth")
	}
}

func TestRegistryTagPagination(t *testing.T) {
	reg := NewRegistry(t, WithTagPageSize(2))
	img := App{Version: "x"}.MustImage(t)
	for _, tag := range []string{"a", "b", "c", "d", "e"} {
		reg.MustPush(t, "demo/app:"+tag, img)
	}
	reg.Reset()
	var all []string
	next := reg.URL() + "/v2/demo/app/tags/list"
	for pages := 0; next != ""; pages++ {
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		resp, err := http.Get(next)
		if err != nil {
			t.Fatal(err)
		}
		var body struct{ Tags []string }
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		all = append(all, body.Tags...)
		next = ""
		if link := resp.Header.Get("Link"); link != "" {
			next = reg.URL() + strings.TrimSuffix(strings.TrimPrefix(strings.Split(link, ";")[0], "<"), ">")
		}
	}
	if got := strings.Join(all, ","); got != "a,b,c,d,e" {
		t.Errorf("tags over pages = %s, want a,b,c,d,e", got)
	}
	if got := reg.Count(http.MethodGet, "tags"); got != 3 {
		t.Errorf("tag pages = %d, want 3", got)
	}
}

func TestComposeProjectRunsHealthyApp(t *testing.T) {
	cli := Engine(t)
	reg := NewRegistry(t)
	RemoveImagesOf(t, cli, reg.Host)
	reg.MustPush(t, "demo/app:1.0.0", App{Version: "1.0.0", Health: FastHealth}.MustImage(t))

	p := NewComposeProject(t, map[string]string{
		"compose.yaml": "services:\n  web:\n    image: " + reg.Ref("demo/app:1.0.0") + "\n",
	})
	p.MustUp(t)
	ctx := Context(t, time.Minute)
	Eventually(t, 30*time.Second, 200*time.Millisecond, func() (bool, string) {
		cs, err := p.Containers(ctx)
		if err != nil || len(cs) != 1 {
			return false, "containers: " + err.Error()
		}
		return cs[0].Health == "healthy", "health = " + string(cs[0].Health)
	})
}

func TestSwarmServiceRuns(t *testing.T) {
	cli := Engine(t)
	Swarm(t, cli)
	reg := NewRegistry(t)
	RemoveImagesOf(t, cli, reg.Host)
	reg.MustPush(t, "demo/app:1.0.0", App{Version: "1.0.0"}.MustImage(t))

	ctx := Context(t, 2*time.Minute)
	one := uint64(1)
	svcName := Name("svc")
	created, err := cli.ServiceCreate(ctx, client.ServiceCreateOptions{Spec: swarm.ServiceSpec{
		Annotations:  swarm.Annotations{Name: svcName, Labels: map[string]string{LabelKey: "1"}},
		TaskTemplate: swarm.TaskSpec{ContainerSpec: &swarm.ContainerSpec{Image: reg.Ref("demo/app:1.0.0")}},
		Mode:         swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &one}},
	}})
	if err != nil {
		t.Fatalf("service create: %v", err)
	}
	t.Cleanup(func() { RemoveService(t, cli, created.ID) })
	Eventually(t, time.Minute, 250*time.Millisecond, func() (bool, string) {
		tasks, err := cli.TaskList(ctx, client.TaskListOptions{Filters: make(client.Filters).Add("service", created.ID)})
		if err != nil {
			return false, err.Error()
		}
		for _, tk := range tasks.Items {
			if tk.Status.State == swarm.TaskStateRunning {
				return true, ""
			}
		}
		return false, "no running task"
	})
	insp, err := cli.ServiceInspect(ctx, created.ID, client.ServiceInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Through the API the engine keeps the reference as given; only the
	// docker CLI pins tags to digests before it calls the API.
	if img, want := insp.Service.Spec.TaskTemplate.ContainerSpec.Image, reg.Ref("demo/app:1.0.0"); img != want {
		t.Errorf("service image = %s, want %s", img, want)
	}
}
