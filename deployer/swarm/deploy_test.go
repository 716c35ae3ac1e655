package swarm

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/moby/moby/api/pkg/authconfig"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/imageref"
)

// Everything that must be refused before the service is touched.
func TestDeployRefusesBadInput(t *testing.T) {
	unauthorized := fmt.Errorf("Error response from daemon: Get \"https://registry.example/v2/team/web/manifests/x\": unauthorized: authentication required")
	for _, tc := range []struct {
		name  string
		setup func(f *fakeEngine, p *deployer.Plan, o *Options)
		want  error
		hint  string
	}{
		{"plan not pinned", func(f *fakeEngine, p *deployer.Plan, _ *Options) { p.To = ref2.Tagged() }, nil, "not pinned to a valid digest"},
		{"compose target", func(f *fakeEngine, p *deployer.Plan, _ *Options) { p.Target.Kind = deployer.KindCompose }, deployer.ErrUnsupported, "not a Swarm service"},
		{"unmanaged target", func(f *fakeEngine, p *deployer.Plan, _ *Options) { p.Target.Unmanaged = "a job" }, deployer.ErrUnsupported, "a job"},
		{"unknown service", func(f *fakeEngine, p *deployer.Plan, _ *Options) { f.svc = nil }, deployer.ErrNotFound, "docker service ls"},
		{"plugin service", func(f *fakeEngine, p *deployer.Plan, _ *Options) {
			f.svc.Spec.TaskTemplate.ContainerSpec = nil
		}, deployer.ErrUnsupported, "not a container service"},
		{"global job", func(f *fakeEngine, p *deployer.Plan, _ *Options) {
			f.svc.Spec.Mode = swarm.ServiceMode{GlobalJob: &swarm.GlobalJob{}}
		}, deployer.ErrUnsupported, "global-job"},
		{"update in progress", func(f *fakeEngine, p *deployer.Plan, _ *Options) {
			f.svc.UpdateStatus = &swarm.UpdateStatus{State: swarm.UpdateStateUpdating, Message: "update in progress"}
		}, deployer.ErrConflict, "in progress"},
		{"paused update", func(f *fakeEngine, p *deployer.Plan, _ *Options) {
			f.svc.UpdateStatus = &swarm.UpdateStatus{State: swarm.UpdateStatePaused, Message: "update paused"}
		}, deployer.ErrConflict, "docker service rollback"},
		{"another repository", func(f *fakeEngine, p *deployer.Plan, _ *Options) {
			p.To = imageref.MustParse("registry.example/team/other:1.1.0@" + testDigest2)
		}, deployer.ErrConflict, "refusing to switch repositories"},
		{"changed since planned", func(f *fakeEngine, p *deployer.Plan, _ *Options) {
			f.svc.Spec.TaskTemplate.ContainerSpec.Image = ref3.String()
		}, deployer.ErrConflict, "re-run the pass"},
		{"not a registry image", func(f *fakeEngine, p *deployer.Plan, _ *Options) {
			f.svc.Spec.TaskTemplate.ContainerSpec.Image = "Local_Build:dev"
		}, ErrNotInRegistry, "locally built"},
		{"registry wants credentials", func(f *fakeEngine, p *deployer.Plan, _ *Options) {
			f.dist = func(string, string) (client.DistributionInspectResult, error) {
				return client.DistributionInspectResult{}, unauthorized
			}
		}, ErrCredentials, "docker login registry.example"},
		{"registry refuses our credentials", func(f *fakeEngine, p *deployer.Plan, o *Options) {
			o.Keychain = staticKeychain{"registry.example": &authn.Basic{Username: "u", Password: "hunter2"}}
			f.dist = func(_, auth string) (client.DistributionInspectResult, error) {
				if auth == "" {
					return client.DistributionInspectResult{}, errors.New("test: the credentials were not passed")
				}
				return client.DistributionInspectResult{}, unauthorized
			}
		}, ErrCredentials, "refused the credentials"},
		{"image not in registry", func(f *fakeEngine, p *deployer.Plan, _ *Options) {
			f.dist = func(string, string) (client.DistributionInspectResult, error) {
				return client.DistributionInspectResult{}, errors.New("Error response from daemon: manifest unknown: manifest unknown")
			}
		}, ErrNotInRegistry, "push it to a registry"},
		{"registry unreachable", func(f *fakeEngine, p *deployer.Plan, _ *Options) {
			f.dist = func(string, string) (client.DistributionInspectResult, error) {
				return client.DistributionInspectResult{}, fmt.Errorf("dial tcp 10.0.0.1:443: %w", syscall.ECONNREFUSED)
			}
		}, ErrRegistry, "try again later"},
		{"registry serves another digest", func(f *fakeEngine, p *deployer.Plan, _ *Options) {
			f.dist = func(string, string) (client.DistributionInspectResult, error) {
				var res client.DistributionInspectResult
				res.Descriptor = ocispec.Descriptor{Digest: digest.Digest(testDigest3)}
				return res, nil
			}
		}, deployer.ErrDigestMismatch, testDigest3},
		{"engine became a worker", func(f *fakeEngine, p *deployer.Plan, _ *Options) {
			f.svc = nil
			p.Target.Swarm.ID = "worker"
		}, deployer.ErrNotFound, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(ref1.String())
			plan := deployer.Plan{Target: fakeTarget(f), To: ref2}
			var opts Options
			tc.setup(f, &plan, &opts)
			res := newFakeDeployer(t, f, opts).Deploy(context.Background(), plan, nil)
			if res.Outcome != deployer.Failed {
				t.Errorf("outcome = %s, want failed", res.Outcome)
			}
			if tc.want != nil && !errors.Is(res.Cause, tc.want) {
				t.Errorf("cause = %v, want %v", res.Cause, tc.want)
			}
			if res.Cause == nil || !strings.Contains(res.Cause.Error(), tc.hint) {
				t.Errorf("cause %v does not say %q", res.Cause, tc.hint)
			}
			if res.Cause != nil && strings.Contains(res.Cause.Error(), "hunter2") {
				t.Errorf("cause %q shows the password", res.Cause)
			}
			if n := f.count("ServiceUpdate"); n != 0 {
				t.Errorf("%d ServiceUpdate calls, want none: the service must stay untouched", n)
			}
		})
	}
}

func TestDeployMapsManagerErrors(t *testing.T) {
	f := newFake(ref1.String())
	d := newFakeDeployer(t, f, Options{})
	f.svc = nil
	worker := errors.New(`Error response from daemon: This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. Please run this command on a manager node or promote the current node to a manager.`)
	inactive := errors.New(`Error response from daemon: This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to connect this node to swarm and try again.`)
	for _, tc := range []struct {
		err  error
		want error
	}{{worker, ErrNotManager}, {inactive, ErrNoSwarm}} {
		if got := engineError("inspect service web", tc.err); !errors.Is(got, tc.want) {
			t.Errorf("engineError(%q) = %v, want %v", tc.err, got, tc.want)
		}
	}
	res := d.Deploy(context.Background(), deployer.Plan{Target: deployer.Target{Kind: deployer.KindSwarm}, To: ref2}, nil)
	if !errors.Is(res.Cause, deployer.ErrNotFound) {
		t.Errorf("target without a name: cause %v, want ErrNotFound", res.Cause)
	}
}

type staticKeychain map[string]authn.Authenticator

func (k staticKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if a, ok := k[r.RegistryStr()]; ok {
		return a, nil
	}
	return authn.Anonymous, nil
}

func TestDeployUpToDateAndDryRunDoNotUpdate(t *testing.T) {
	f := newFake(ref2.String())
	res := newFakeDeployer(t, f, Options{}).Deploy(context.Background(), deployer.Plan{Target: fakeTarget(f), To: ref2}, nil)
	if res.Outcome != deployer.UpToDate || res.Running != testDigest2 {
		t.Errorf("same digest: outcome %s, running %s; want up-to-date, %s", res.Outcome, res.Running, testDigest2)
	}
	if n := f.count("DistributionInspect") + f.count("ServiceUpdate"); n != 0 {
		t.Errorf("same digest: %d registry/update calls, want none", n)
	}

	f = newFake(ref1.String())
	f.svc.Spec.EndpointSpec = &swarm.EndpointSpec{Ports: []swarm.PortConfig{{TargetPort: 80, PublishedPort: 8080, PublishMode: swarm.PortConfigPublishModeHost}}}
	res = newFakeDeployer(t, f, Options{}).Deploy(context.Background(), deployer.Plan{Target: fakeTarget(f), To: ref2, DryRun: true}, nil)
	if res.Outcome != deployer.Available || res.Running != testDigest1 {
		t.Errorf("dry run: outcome %s, running %s; want available, %s", res.Outcome, res.Running, testDigest1)
	}
	if n := f.count("ServiceUpdate"); n != 0 {
		t.Errorf("dry run: %d ServiceUpdate calls, want none", n)
	}
	last := res.Steps[len(res.Steps)-1]
	if last.Name != "plan" || !strings.Contains(last.Detail, "stop-first because port 8080 is published in host mode") || !strings.Contains(last.Detail, ref2.Familiar()) {
		t.Errorf("dry run step %q: %q, want the image and the defaults it would apply", last.Name, last.Detail)
	}
}

func TestDeployPassesRegistryAuth(t *testing.T) {
	for _, tc := range []struct {
		name     string
		keychain authn.Keychain
		to       imageref.Ref
		wantUser string
		server   string
	}{
		{"no keychain keeps the stored auth", nil, ref2, "", ""},
		{"anonymous keeps the stored auth", staticKeychain{}, ref2, "", ""},
		{"known credentials", staticKeychain{"registry.example": &authn.Basic{Username: "deploy", Password: "pw"}}, ref2, "deploy", "registry.example"},
		{"docker hub", staticKeychain{"index.docker.io": &authn.Basic{Username: "hub", Password: "pw"}},
			imageref.MustParse("nginx:1.27@" + testDigest2), "hub", "https://index.docker.io/v1/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			from := tc.to.WithDigest(testDigest1)
			f := newFake(from.String())
			f.tasks = tasksOfSpec
			f.tick = func(f *fakeEngine, n int) {
				if n == 1 {
					f.status(swarm.UpdateStateCompleted, "update completed")
				}
			}
			res := newFakeDeployer(t, f, Options{Keychain: tc.keychain}).Deploy(context.Background(), deployer.Plan{Target: fakeTarget(f), To: tc.to}, nil)
			if res.Outcome != deployer.Updated {
				t.Fatalf("outcome %s (%v), want updated", res.Outcome, res.Cause)
			}
			enc := f.updates[0].EncodedRegistryAuth
			if tc.wantUser == "" {
				if enc != "" {
					t.Errorf("X-Registry-Auth = %q, want none (keep the stored auth)", enc)
				}
				return
			}
			cfg, err := authconfig.Decode(enc)
			if err != nil {
				t.Fatalf("decode X-Registry-Auth: %v", err)
			}
			if cfg.Username != tc.wantUser || cfg.Password != "pw" || cfg.ServerAddress != tc.server {
				t.Errorf("auth = %s@%s, want %s@%s", cfg.Username, cfg.ServerAddress, tc.wantUser, tc.server)
			}
			for _, s := range res.Steps {
				if strings.Contains(s.Detail, "pw") || strings.Contains(s.Detail, enc) {
					t.Errorf("step %s shows the credentials: %q", s.Name, s.Detail)
				}
			}
		})
	}
}

func TestDeployRetriesOutOfSequence(t *testing.T) {
	t.Run("retried on the re-read spec", func(t *testing.T) {
		f := newFake(ref1.String())
		f.tasks = tasksOfSpec
		// Swarm wrote a status (version bump) between our read and our
		// update: nothing that matters changed.
		f.onUpdate = func(f *fakeEngine, n int) {
			if n == 1 {
				f.svc.Version.Index++
				f.svc.Spec.Labels["touched"] = "by swarm"
			}
		}
		f.tick = func(f *fakeEngine, n int) {
			if n == 1 {
				f.status(swarm.UpdateStateCompleted, "update completed")
			}
		}
		res := newFakeDeployer(t, f, Options{}).Deploy(context.Background(), deployer.Plan{Target: fakeTarget(f), To: ref2}, nil)
		if res.Outcome != deployer.Updated || res.Running != testDigest2 {
			t.Fatalf("outcome %s, running %s (%v); want updated, %s", res.Outcome, res.Running, res.Cause, testDigest2)
		}
		if calls, applied := f.count("ServiceUpdate"), len(f.updates); calls != 2 || applied != 1 {
			t.Errorf("ServiceUpdate calls %d, applied %d; want 2 and 1", calls, applied)
		}
		if got := f.updates[0].Spec.Labels["touched"]; got != "by swarm" {
			t.Errorf("the retry did not start from the re-read spec (label %q)", got)
		}
	})
	t.Run("image changed by someone else", func(t *testing.T) {
		f := newFake(ref1.String())
		f.onUpdate = func(f *fakeEngine, n int) {
			if n == 1 {
				f.svc.Version.Index++
				f.svc.Spec.TaskTemplate.ContainerSpec.Image = ref3.String()
			}
		}
		res := newFakeDeployer(t, f, Options{}).Deploy(context.Background(), deployer.Plan{Target: fakeTarget(f), To: ref2}, nil)
		if res.Outcome != deployer.Failed || !errors.Is(res.Cause, deployer.ErrConflict) {
			t.Errorf("outcome %s, cause %v; want failed with ErrConflict", res.Outcome, res.Cause)
		}
		if len(f.updates) != 0 {
			t.Errorf("%d updates applied over someone else's change, want none", len(f.updates))
		}
	})
	t.Run("gives up", func(t *testing.T) {
		f := newFake(ref1.String())
		f.onUpdate = func(f *fakeEngine, n int) { f.svc.Version.Index++ }
		res := newFakeDeployer(t, f, Options{}).Deploy(context.Background(), deployer.Plan{Target: fakeTarget(f), To: ref2}, nil)
		if res.Outcome != deployer.Failed || res.Cause == nil || !strings.Contains(res.Cause.Error(), "update out of sequence") {
			t.Errorf("outcome %s, cause %v; want failed with the engine's error", res.Outcome, res.Cause)
		}
		if n := f.count("ServiceUpdate"); n != updateAttempts {
			t.Errorf("%d ServiceUpdate calls, want %d", n, updateAttempts)
		}
	})
}

func TestNotFoundIsRecognised(t *testing.T) {
	if !cerrdefs.IsNotFound(notFound("service", "x")) {
		t.Fatal("the fake's not-found error is not recognised as such")
	}
}
