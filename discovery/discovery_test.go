package discovery

import (
	"context"
	"errors"
	"strings"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/image"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/api/types/system"
	"github.com/moby/moby/client"

	"github.com/shipwatch/shipwatch/deployer"
)

const (
	digA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	digB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

// fakeEngine answers from fixed data.
type fakeEngine struct {
	info       system.Info
	containers []container.Summary
	configured map[string]string   // container ID → Config.Image
	images     map[string][]string // image ID → RepoDigests, for ImageInspect
	listed     map[string][]string // image ID → RepoDigests, for ImageList
	services   []swarm.Service
	listErr    error
	imagesErr  error

	containerInspects, imageInspects, imageLists int
}

func (f *fakeEngine) Info(context.Context, client.InfoOptions) (client.SystemInfoResult, error) {
	return client.SystemInfoResult{Info: f.info}, nil
}

func (f *fakeEngine) ContainerList(context.Context, client.ContainerListOptions) (client.ContainerListResult, error) {
	return client.ContainerListResult{Items: f.containers}, f.listErr
}

func (f *fakeEngine) ContainerInspect(_ context.Context, id string, _ client.ContainerInspectOptions) (client.ContainerInspectResult, error) {
	f.containerInspects++
	img, ok := f.configured[id]
	if !ok {
		return client.ContainerInspectResult{}, cerrdefs.ErrNotFound
	}
	var r client.ContainerInspectResult
	r.Container.Config = &container.Config{Image: img}
	return r, nil
}

func (f *fakeEngine) ImageList(context.Context, client.ImageListOptions) (client.ImageListResult, error) {
	f.imageLists++
	var r client.ImageListResult
	for id, rd := range f.listed {
		r.Items = append(r.Items, image.Summary{ID: id, RepoDigests: rd})
	}
	return r, f.imagesErr
}

func (f *fakeEngine) ImageInspect(_ context.Context, id string, _ ...client.ImageInspectOption) (client.ImageInspectResult, error) {
	f.imageInspects++
	rd, ok := f.images[id]
	if !ok {
		return client.ImageInspectResult{}, cerrdefs.ErrNotFound
	}
	return client.ImageInspectResult{InspectResponse: image.InspectResponse{ID: id, RepoDigests: rd}}, nil
}

func (f *fakeEngine) ServiceList(context.Context, client.ServiceListOptions) (client.ServiceListResult, error) {
	return client.ServiceListResult{Items: f.services}, nil
}

func (f *fakeEngine) TaskList(context.Context, client.TaskListOptions) (client.TaskListResult, error) {
	return client.TaskListResult{}, nil
}

func composeLabels(project, service string) map[string]string {
	return map[string]string{
		labelProject: project, labelService: service, labelWorkingDir: "/srv/" + project,
		labelConfig:     "/srv/" + project + "/compose.yaml,/srv/" + project + "/compose.override.yaml",
		labelConfigHash: "hash-" + service, labelOneoff: "False",
	}
}

func TestDiscoverCompose(t *testing.T) {
	runOnce := composeLabels("shop", "web")
	runOnce[labelOneoff] = "True"
	one := uint64(2)
	f := &fakeEngine{
		info: system.Info{Swarm: swarm.Info{LocalNodeState: swarm.LocalNodeStateActive, ControlAvailable: true}},
		containers: []container.Summary{
			{ID: "c2", ImageID: "img1", Labels: composeLabels("shop", "web"), State: "running"},
			{ID: "c1", ImageID: "img1", Labels: composeLabels("shop", "web"), State: "running"},
			{ID: "c3", ImageID: "img2", Labels: composeLabels("shop", "db"), State: "exited"},
			{ID: "c4", ImageID: "img1", Labels: runOnce, State: "running"},
			{ID: "c5", Names: []string{"/loner"}, ImageID: "img1", State: "running"},
			{ID: "c6", ImageID: "img1", Labels: map[string]string{labelSwarmTask: "t1"}, State: "running"},
		},
		configured: map[string]string{"c1": "nginx:1.27", "c2": "nginx:1.27", "c3": "postgres:16@" + digB},
		images: map[string][]string{
			"img1": {"docker.io/library/redis@" + digB, "nginx@" + digA},
		},
		services: []swarm.Service{{
			ID: "s1", Meta: swarm.Meta{Version: swarm.Version{Index: 7}},
			Spec: swarm.ServiceSpec{
				Annotations:  swarm.Annotations{Name: "api", Labels: map[string]string{labelStack: "prod", labelStackImage: "ghcr.io/o/api:1.2"}},
				TaskTemplate: swarm.TaskSpec{ContainerSpec: &swarm.ContainerSpec{Image: "ghcr.io/o/api@" + digA}},
				Mode:         swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &one}},
			},
			UpdateStatus: &swarm.UpdateStatus{State: swarm.UpdateStateCompleted},
		}, {
			ID:   "s2",
			Spec: swarm.ServiceSpec{Annotations: swarm.Annotations{Name: "migrate"}, Mode: swarm.ServiceMode{ReplicatedJob: &swarm.ReplicatedJob{}}, TaskTemplate: swarm.TaskSpec{ContainerSpec: &swarm.ContainerSpec{Image: "ghcr.io/o/migrate:1"}}},
		}, {
			ID:   "s3",
			Spec: swarm.ServiceSpec{Annotations: swarm.Annotations{Name: "agent"}, Mode: swarm.ServiceMode{Global: &swarm.GlobalService{}}, TaskTemplate: swarm.TaskSpec{ContainerSpec: &swarm.ContainerSpec{Image: "ghcr.io/o/agent:2@" + digB}}},
		}},
	}
	res, err := Discover(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]deployer.Target{}
	var ids []string
	for _, tg := range res.Targets {
		got[tg.ID] = tg
		ids = append(ids, tg.ID)
	}
	if want := "compose/shop/db,compose/shop/web,container/loner,swarm/agent,swarm/api,swarm/migrate"; strings.Join(ids, ",") != want {
		t.Fatalf("targets = %s, want %s", strings.Join(ids, ","), want)
	}
	web := got["compose/shop/web"]
	if web.Image.String() != "docker.io/library/nginx:1.27" || web.Digest != digA || web.Replicas != 2 {
		t.Errorf("web = %s %s replicas %d, want nginx:1.27 %s replicas 2", web.Image, web.Digest, web.Replicas, digA)
	}
	if c := web.Compose; c.Project != "shop" || c.Service != "web" || len(c.ConfigFiles) != 2 || strings.Join(c.Containers, ",") != "c1,c2" || c.ConfigHash != "hash-web" {
		t.Errorf("web compose info = %+v", c)
	}
	if db := got["compose/shop/db"]; db.Digest != digB || db.Replicas != 0 || db.Image.Tag != "16" {
		t.Errorf("db = %s digest %s replicas %d, want the pinned digest, 0 running", db.Image, db.Digest, db.Replicas)
	}
	if got["container/loner"].Unmanaged == "" {
		t.Errorf("a container outside Compose must be listed as unmanaged with a reason")
	}
	api := got["swarm/api"]
	if api.Image.String() != "ghcr.io/o/api:1.2" || api.Digest != digA || api.Swarm.Stack != "prod" || api.Swarm.Version != 7 || api.Replicas != 2 || api.Swarm.UpdateState != "completed" {
		t.Errorf("api = %s %s %+v replicas %d", api.Image, api.Digest, api.Swarm, api.Replicas)
	}
	if got["swarm/migrate"].Unmanaged == "" {
		t.Errorf("jobs must be unmanaged with a reason")
	}
	if ag := got["swarm/agent"]; ag.Replicas != -1 || ag.Swarm.Mode != "global" || ag.Digest != digB {
		t.Errorf("agent = %+v", ag)
	}
}

// TestDiscoverComposeFromListings: a container's reference comes from the
// container list and its digest from the image list; an inspect is made
// only when the listings cannot tell (the tag moved on to another image,
// an image that is not listed).
func TestDiscoverComposeFromListings(t *testing.T) {
	const img1 = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	tests := []struct {
		name              string
		listImage         string              // Summary.Image
		configured        string              // Config.Image, for ContainerInspect
		listed, inspected map[string][]string // RepoDigests by image ID
		wantImage         string
		wantDigest        string
		wantInspects      int // container inspects
		wantImageInspects int
	}{
		{name: "both listings tell", listImage: "nginx:1.27", listed: map[string][]string{img1: {"nginx@" + digA}},
			wantImage: "docker.io/library/nginx:1.27", wantDigest: digA},
		{name: "pinned by digest", listImage: "nginx:1.27@" + digB,
			wantImage: "docker.io/library/nginx:1.27", wantDigest: digB},
		{name: "tag moved on: the list shows the image ID", listImage: img1, configured: "nginx:1.27", listed: map[string][]string{img1: {"nginx@" + digA}},
			wantImage: "docker.io/library/nginx:1.27", wantDigest: digA, wantInspects: 1},
		{name: "no image in the list", listImage: "nginx:1.27", inspected: map[string][]string{img1: {"nginx@" + digB}},
			wantImage: "docker.io/library/nginx:1.27", wantDigest: digB, wantImageInspects: 1},
		{name: "listed without a digest of this repository", listImage: "nginx:1.27", listed: map[string][]string{img1: {"redis@" + digA}},
			wantImage: "docker.io/library/nginx:1.27", wantDigest: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeEngine{
				containers: []container.Summary{{ID: "c1", Image: tt.listImage, ImageID: img1, Labels: composeLabels("shop", "web"), State: "running"}},
				configured: map[string]string{"c1": tt.configured},
				listed:     tt.listed,
				images:     tt.inspected,
			}
			res, err := Discover(context.Background(), f)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Targets) != 1 {
				t.Fatalf("got %d targets, want 1", len(res.Targets))
			}
			tg := res.Targets[0]
			if tg.Unmanaged != "" || tg.Image.String() != tt.wantImage || tg.Digest != tt.wantDigest {
				t.Errorf("got %s @ %q (unmanaged %q), want %s @ %q", tg.Image, tg.Digest, tg.Unmanaged, tt.wantImage, tt.wantDigest)
			}
			if f.containerInspects != tt.wantInspects || f.imageInspects != tt.wantImageInspects {
				t.Errorf("got %d container and %d image inspects, want %d and %d", f.containerInspects, f.imageInspects, tt.wantInspects, tt.wantImageInspects)
			}
			if f.imageLists > 1 {
				t.Errorf("got %d image listings, want at most 1 per discovery", f.imageLists)
			}
		})
	}
}

func TestDiscoverWorkerNode(t *testing.T) {
	f := &fakeEngine{info: system.Info{Swarm: swarm.Info{LocalNodeState: swarm.LocalNodeStateActive, ControlAvailable: false}},
		services: []swarm.Service{{ID: "x", Spec: swarm.ServiceSpec{Annotations: swarm.Annotations{Name: "x"}}}}}
	res, err := Discover(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	if res.Swarm || len(res.Targets) != 0 || len(res.Notes) != 1 || !strings.Contains(res.Notes[0], "manager") {
		t.Errorf("worker node: swarm=%v targets=%d notes=%q, want no services and a note about managers", res.Swarm, len(res.Targets), res.Notes)
	}
}

func TestDiscoverReturnsEngineErrors(t *testing.T) {
	boom := errors.New("connection reset")
	_, err := Discover(context.Background(), &fakeEngine{listErr: boom})
	if !errors.Is(err, boom) {
		t.Errorf("error = %v, want it to wrap the engine error", err)
	}
	_, err = Discover(context.Background(), &fakeEngine{imagesErr: boom,
		containers: []container.Summary{{ID: "c1", Image: "nginx:1.27", ImageID: "img1", Labels: composeLabels("shop", "web"), State: "running"}}})
	if !errors.Is(err, boom) {
		t.Errorf("image list error = %v, want it to wrap the engine error", err)
	}
}
