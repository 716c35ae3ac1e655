package swarm

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/imageref"
)

func TestRollbackByHand(t *testing.T) {
	t.Run("no previous spec", func(t *testing.T) {
		f := newFake(ref2.String())
		res := newFakeDeployer(t, f, Options{}).Rollback(context.Background(), fakeTarget(f), "", nil)
		if res.Outcome != deployer.Failed || !errors.Is(res.Cause, deployer.ErrNoPrevious) || res.Running != testDigest2 {
			t.Errorf("outcome %s, cause %v, running %s; want failed, ErrNoPrevious, %s", res.Outcome, res.Cause, res.Running, testDigest2)
		}
		if n := f.count("ServiceUpdate"); n != 0 {
			t.Errorf("%d updates, want none", n)
		}
	})
	t.Run("previous spec runs the same digest", func(t *testing.T) {
		f := newFake(ref2.String())
		prev := f.svc.Spec
		prev.Labels = map[string]string{"changed": "by a stack deploy"}
		f.svc.PreviousSpec = &prev
		res := newFakeDeployer(t, f, Options{}).Rollback(context.Background(), fakeTarget(f), "", nil)
		if res.Outcome != deployer.Failed || !errors.Is(res.Cause, deployer.ErrNoPrevious) {
			t.Errorf("outcome %s, cause %v; want failed, ErrNoPrevious", res.Outcome, res.Cause)
		}
		if n := f.count("ServiceUpdate"); n != 0 {
			t.Errorf("%d updates, want none", n)
		}
	})
	t.Run("previous spec holds the digest asked for", func(t *testing.T) {
		f := newFake(ref2.String())
		prev := f.svc.Spec
		prev.TaskTemplate.ContainerSpec = &swarm.ContainerSpec{Image: ref1.String()}
		f.svc.PreviousSpec = &prev
		f.tasks = tasksOfSpec
		f.tick = func(f *fakeEngine, n int) {
			if n == 1 {
				f.status(swarm.UpdateStateRollbackCompleted, "rollback completed")
			}
		}
		res := newFakeDeployer(t, f, Options{}).Rollback(context.Background(), fakeTarget(f), testDigest1, nil)
		if res.Outcome != deployer.RolledBack || res.Cause != nil || res.Running != testDigest1 || res.To != testDigest1 {
			t.Errorf("outcome %s, cause %v, running %s, to %s; want rolled-back to %s", res.Outcome, res.Cause, res.Running, res.To, testDigest1)
		}
		if len(f.updates) != 1 || f.updates[0].Rollback != "previous" {
			t.Errorf("updates %+v, want one Rollback: previous", f.updates)
		}
	})
	t.Run("a bare digest gets the stack file's tag back", func(t *testing.T) {
		f := newFake(ref2.String())
		f.svc.Spec.Labels[LabelStackImage] = "registry.example/team/web:1.0.0"
		f.tasks = tasksOfSpec
		f.dist = func(ref, _ string) (client.DistributionInspectResult, error) {
			var res client.DistributionInspectResult
			r := imageref.MustParse(ref)
			switch {
			case r.Digest != "":
				res.Descriptor = ocispec.Descriptor{Digest: digest.Digest(r.Digest)}
			case r.Tag == "1.0.0":
				res.Descriptor = ocispec.Descriptor{Digest: digest.Digest(testDigest1)}
			default:
				return res, notFound("manifest", ref)
			}
			return res, nil
		}
		f.tick = func(f *fakeEngine, n int) {
			if n == 1 {
				f.status(swarm.UpdateStateCompleted, "update completed")
			}
		}
		res := newFakeDeployer(t, f, Options{}).Rollback(context.Background(), fakeTarget(f), testDigest1, nil)
		if res.Outcome != deployer.RolledBack {
			t.Fatalf("outcome %s (%v), want rolled-back", res.Outcome, res.Cause)
		}
		if got := f.updates[0].Spec.TaskTemplate.ContainerSpec.Image; got != ref1.Familiar() {
			t.Errorf("image = %s, want %s (the tag that names the digest)", got, ref1.Familiar())
		}
	})
	for _, tc := range []struct {
		to, wantImage, err string
	}{
		{to: testDigest1, wantImage: "registry.example/team/web@" + testDigest1},
		{to: ref1.String(), wantImage: ref1.Familiar()},
		{to: "registry.example/team/web:1.0.0", err: "pinned by digest"},
		{to: "registry.example/team/other@" + testDigest1, err: "another repository"},
		{to: "not a reference", err: "want sha256:"},
	} {
		t.Run("to "+tc.to, func(t *testing.T) {
			f := newFake(ref2.String())
			f.tasks = tasksOfSpec
			f.tick = func(f *fakeEngine, n int) {
				if n == 1 {
					f.status(swarm.UpdateStateCompleted, "update completed")
				}
			}
			res := newFakeDeployer(t, f, Options{}).Rollback(context.Background(), fakeTarget(f), tc.to, nil)
			if tc.err != "" {
				if res.Outcome != deployer.Failed || res.Cause == nil || !strings.Contains(res.Cause.Error(), tc.err) || len(f.updates) != 0 {
					t.Errorf("outcome %s, cause %v, %d updates; want failed saying %q, no update", res.Outcome, res.Cause, len(f.updates), tc.err)
				}
				return
			}
			if res.Outcome != deployer.RolledBack || res.Running != testDigest1 {
				t.Errorf("outcome %s (%v), running %s; want rolled-back, %s", res.Outcome, res.Cause, res.Running, testDigest1)
			}
			if len(f.updates) != 1 || f.updates[0].Spec.TaskTemplate.ContainerSpec.Image != tc.wantImage {
				t.Errorf("updates %d, image %s; want 1 to %s", len(f.updates), f.updates[0].Spec.TaskTemplate.ContainerSpec.Image, tc.wantImage)
			}
		})
	}
}
