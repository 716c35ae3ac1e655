package pass

import (
	"context"
	"testing"

	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/discovery"
	"github.com/shipwatch/shipwatch/verify/verdict"
)

// keptSource hands out a discovery made earlier as reused, the way the
// agent's cache does, and lists the fake engine afresh on Refresh.
type keptSource struct {
	kept      discovery.Result
	eng       discovery.Engine
	refreshes int
}

func (s *keptSource) Discover(context.Context) (discovery.Result, bool, error) {
	return s.kept, true, nil
}

func (s *keptSource) Refresh(ctx context.Context) (discovery.Result, error) {
	s.refreshes++
	return discovery.Discover(ctx, s.eng)
}

func keep(t *testing.T, f *fixture) *keptSource {
	t.Helper()
	res, err := discovery.Discover(context.Background(), f.eng)
	if err != nil {
		t.Fatal(err)
	}
	src := &keptSource{kept: res, eng: f.eng}
	f.deps.Targets = src
	return src
}

// offered is a fixture whose one service the registry offers a verified
// new digest for.
func offered(t *testing.T) *fixture {
	f := newFixture(t, "")
	f.service("web", "1.4", nil)
	f.offer("web", "1.4", dNew)
	f.v.decisions[dNew] = verdict.Allowed
	return f
}

func TestReusedDiscoveryIsListedAgainBeforeActing(t *testing.T) {
	t.Run("nothing to act on", func(t *testing.T) {
		f := newFixture(t, "")
		f.service("web", "1.4", nil)
		src := keep(t, f)
		rep, err := Run(context.Background(), f.deps, Options{Mode: Agent})
		if err != nil {
			t.Fatal(err)
		}
		if !rep.ReusedDiscovery || src.refreshes != 0 || rep.Targets[0].Outcome != deployer.UpToDate {
			t.Errorf("idle pass: cached=%v, %d fresh listings, outcome %s; want the kept discovery used alone",
				rep.ReusedDiscovery, src.refreshes, rep.Targets[0].Outcome)
		}
	})
	t.Run("the engine still agrees", func(t *testing.T) {
		f := offered(t)
		src := keep(t, f)
		rep, err := Run(context.Background(), f.deps, Options{Mode: Agent})
		if err != nil {
			t.Fatal(err)
		}
		if rep.ReusedDiscovery || src.refreshes != 1 || rep.Targets[0].Outcome != deployer.Updated || len(f.d.order) != 1 {
			t.Errorf("cached=%v, %d fresh listings, outcome %s, %d deploys; want one fresh listing, then the update",
				rep.ReusedDiscovery, src.refreshes, rep.Targets[0].Outcome, len(f.d.order))
		}
	})
	t.Run("the engine changed unseen", func(t *testing.T) {
		f := offered(t)
		src := keep(t, f)
		s := f.eng.services["web"] // updated by hand since the kept listing
		s.digest = dNew
		f.eng.services["web"] = s
		rep, err := Run(context.Background(), f.deps, Options{Mode: Agent})
		if err != nil {
			t.Fatal(err)
		}
		r := rep.Targets[0]
		if src.refreshes != 1 || r.Outcome != deployer.UpToDate || r.Target.Digest != dNew || len(f.d.order) != 0 || f.v.calls != 0 {
			t.Errorf("%d fresh listings, outcome %s at %s, %d deploys, %d verifications; want the pass redone from the fresh listing: up to date, nothing verified or deployed",
				src.refreshes, r.Outcome, r.Target.Digest, len(f.d.order), f.v.calls)
		}
	})
}
