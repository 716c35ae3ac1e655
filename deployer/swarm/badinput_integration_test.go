package swarm_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/moby/moby/api/pkg/authconfig"
	"github.com/moby/moby/api/types/registry"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"github.com/shipwatch/shipwatch/deployer"
	swarmdeployer "github.com/shipwatch/shipwatch/deployer/swarm"
	"github.com/shipwatch/shipwatch/imageref"
	"github.com/shipwatch/shipwatch/internal/testenv"
)

func TestDeployUnknownService(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	v2 := h.push("1.1.0", testenv.App{Version: "1.1.0"})
	target := deployer.Target{ID: "swarm/nope", Kind: deployer.KindSwarm, Name: testenv.Name("no-such-service"), Image: v2.Tagged()}
	d := h.deployer(swarmdeployer.Options{})
	for name, res := range map[string]deployer.Result{
		"deploy":   d.Deploy(h.ctx, deployer.Plan{Target: target, To: v2}, nil),
		"rollback": d.Rollback(h.ctx, target, "", nil),
	} {
		if res.Outcome != deployer.Failed || !errors.Is(res.Cause, deployer.ErrNotFound) {
			t.Errorf("%s: outcome %s, cause %v; want failed with ErrNotFound", name, res.Outcome, res.Cause)
		}
		if res.Running != "" {
			t.Errorf("%s: Result.Running = %s, want nothing", name, res.Running)
		}
		if res.Cause != nil && !strings.Contains(res.Cause.Error(), "docker service ls") {
			t.Errorf("%s: cause %q does not say where to look", name, res.Cause)
		}
	}
}

// An image that exists only on this engine (tagged locally, never pushed):
// the nodes could not pull it, so nothing is changed.
func TestDeployLocalOnlyImageIsRefused(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	v1 := h.push("1.0.0", testenv.App{Version: "1.0.0"})
	if err := testenv.PullImage(h.ctx, h.cli, v1.String()); err != nil {
		t.Fatal(err)
	}
	local := imageref.MustParse(h.reg.Ref("local/only:dev"))
	if _, err := h.cli.ImageTag(h.ctx, client.ImageTagOptions{Source: v1.String(), Target: local.String()}); err != nil {
		t.Fatalf("tag: %v", err)
	}
	svc := h.service(local, nil)
	before := h.inspect(svc.ID)

	res := h.deployer(swarmdeployer.Options{}).Deploy(h.ctx, deployer.Plan{Target: h.target(svc.ID), To: local.WithDigest(v1.Digest)}, nil)
	logSteps(t, res)
	if res.Outcome != deployer.Failed || !errors.Is(res.Cause, swarmdeployer.ErrNotInRegistry) {
		t.Errorf("outcome %s, cause %v; want failed with ErrNotInRegistry", res.Outcome, res.Cause)
	}
	after := h.inspect(svc.ID)
	if after.Version.Index != before.Version.Index {
		t.Errorf("spec version %d → %d: the service was touched", before.Version.Index, after.Version.Index)
	}
	if n := len(h.running(svc.ID)); n != 1 {
		t.Errorf("%d tasks run, want the 1 that ran before", n)
	}
}

// keychain hands out fixed credentials for one registry.
type keychain struct {
	host string
	auth authn.Authenticator
}

func (k keychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if r.RegistryStr() == k.host {
		return k.auth, nil
	}
	return authn.Anonymous, nil
}

// A registry that wants credentials: without any, shipwatch refuses before
// touching the service (the nodes could not pull); with them, it passes
// them to the nodes and the update goes through.
func TestDeployRegistryCredentials(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testenv.WithTokenAuth("ship", "s3cret-pass"))
	v1 := h.push("1.0.0", testenv.App{Version: "1.0.0"})
	v2 := h.push("1.1.0", testenv.App{Version: "1.1.0"})
	auth, err := authconfig.Encode(registry.AuthConfig{Username: "ship", Password: "s3cret-pass", ServerAddress: h.reg.Host})
	if err != nil {
		t.Fatal(err)
	}
	spec := swarm.ServiceSpec{
		Annotations:  swarm.Annotations{Name: testenv.Name("svc"), Labels: map[string]string{testenv.LabelKey: "1"}},
		TaskTemplate: swarm.TaskSpec{ContainerSpec: &swarm.ContainerSpec{Image: v1.Familiar()}},
		Mode:         replicas(1),
		UpdateConfig: fastUpdate(swarm.UpdateOrderStartFirst),
	}
	svc := h.create(spec, auth)

	res := h.deployer(swarmdeployer.Options{}).Deploy(h.ctx, deployer.Plan{Target: h.target(svc.ID), To: v2}, nil)
	h.assertResult(res, svc.ID, deployer.Failed, v1.Digest)
	if !errors.Is(res.Cause, swarmdeployer.ErrCredentials) || !strings.Contains(res.Cause.Error(), "docker login") {
		t.Errorf("cause = %v, want ErrCredentials saying to log in", res.Cause)
	}
	if got := h.inspect(svc.ID).Version.Index; got != svc.Version.Index {
		t.Errorf("spec version %d → %d: the service was touched", svc.Version.Index, got)
	}
	if got := h.running(svc.ID); len(got) != 1 || got[0] != v1.Digest {
		t.Errorf("running %v, want v1 untouched", got)
	}

	wrong := keychain{host: h.reg.Host, auth: &authn.Basic{Username: "ship", Password: "wrong"}}
	res = h.deployer(swarmdeployer.Options{Keychain: wrong}).Deploy(h.ctx, deployer.Plan{Target: h.target(svc.ID), To: v2}, nil)
	if !errors.Is(res.Cause, swarmdeployer.ErrCredentials) || strings.Contains(res.Cause.Error(), "wrong") {
		t.Errorf("cause = %v, want ErrCredentials without the password in it", res.Cause)
	}

	kc := keychain{host: h.reg.Host, auth: h.reg.Auth()}
	res = h.deployer(swarmdeployer.Options{Keychain: kc}).Deploy(h.ctx, deployer.Plan{Target: h.target(svc.ID), To: v2}, nil)
	h.assertResult(res, svc.ID, deployer.Updated, v2.Digest)
	for _, s := range res.Steps {
		if strings.Contains(s.Detail, "s3cret") || (s.Err != nil && strings.Contains(s.Err.Error(), "s3cret")) {
			t.Errorf("step %s shows the registry password", s.Name)
		}
	}
}
