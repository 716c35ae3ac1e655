package pass

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/api/types/system"
	"github.com/moby/moby/client"
	"github.com/rs/zerolog"

	"github.com/shipwatch/shipwatch/config"
	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/state"
)

// updatingSwarm is a manager with one service whose update (started by an
// agent that was killed) goes on for a few discoveries, then completes.
type updatingSwarm struct {
	mu     sync.Mutex
	states []swarm.UpdateState
	lists  int
}

func (e *updatingSwarm) Info(context.Context, client.InfoOptions) (client.SystemInfoResult, error) {
	return client.SystemInfoResult{Info: system.Info{Swarm: swarm.Info{LocalNodeState: swarm.LocalNodeStateActive, ControlAvailable: true}}}, nil
}

func (e *updatingSwarm) ServiceList(context.Context, client.ServiceListOptions) (client.ServiceListResult, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := e.states[min(e.lists, len(e.states)-1)]
	e.lists++
	one := uint64(1)
	svc := swarm.Service{ID: "svc1", Spec: swarm.ServiceSpec{
		Annotations:  swarm.Annotations{Name: "api", Labels: map[string]string{"shipwatch.enable": "true"}},
		TaskTemplate: swarm.TaskSpec{ContainerSpec: &swarm.ContainerSpec{Image: "registry.example.com/api:1.1@" + dNew}},
		Mode:         swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &one}},
	}, UpdateStatus: &swarm.UpdateStatus{State: st}}
	return client.ServiceListResult{Items: []swarm.Service{svc}}, nil
}

func (e *updatingSwarm) ContainerList(context.Context, client.ContainerListOptions) (client.ContainerListResult, error) {
	return client.ContainerListResult{}, nil
}

func (e *updatingSwarm) ContainerInspect(context.Context, string, client.ContainerInspectOptions) (client.ContainerInspectResult, error) {
	return client.ContainerInspectResult{}, errors.New("no containers")
}

func (e *updatingSwarm) ImageList(context.Context, client.ImageListOptions) (client.ImageListResult, error) {
	return client.ImageListResult{}, nil
}

func (e *updatingSwarm) ImageInspect(context.Context, string, ...client.ImageInspectOption) (client.ImageInspectResult, error) {
	return client.ImageInspectResult{}, errors.New("no images")
}

func (e *updatingSwarm) TaskList(context.Context, client.TaskListOptions) (client.TaskListResult, error) {
	return client.TaskListResult{}, nil
}

// refusingDeployer refuses, like the Swarm deployer, to roll back a service
// in the middle of an update.
type refusingDeployer struct {
	mu        sync.Mutex
	rollbacks []string // update state seen by each Rollback
}

func (d *refusingDeployer) Deploy(context.Context, deployer.Plan, deployer.Progress) deployer.Result {
	return deployer.Result{Outcome: deployer.Failed}
}

func (d *refusingDeployer) Rollback(_ context.Context, t deployer.Target, to string, _ deployer.Progress) deployer.Result {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.rollbacks = append(d.rollbacks, t.Swarm.UpdateState)
	if t.Swarm.UpdateState == "updating" {
		return deployer.Result{Outcome: deployer.Failed, Cause: deployer.ErrConflict}
	}
	return deployer.Result{Outcome: deployer.RolledBack, Running: to, To: to}
}

// An agent killed right after its Swarm ServiceUpdate leaves Swarm carrying
// the update on alone. Recovery waits for that update to end before it
// restores the previous version, instead of failing against the update in
// progress (which then completed unrecorded: the target ran the new digest
// with no history entry and no high-water mark). Found by the fault suite
// (internal/faults, class kill-swarm).
func TestRecoverWaitsForTheSwarmUpdateInProgress(t *testing.T) {
	cfg, err := config.Parse([]byte(""), "test.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := state.Open(filepath.Join(t.TempDir(), "state.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	eng := &updatingSwarm{states: []swarm.UpdateState{"updating", "updating", "completed"}}
	dep := &refusingDeployer{}
	deps := Deps{Config: cfg, Engine: eng, Logger: zerolog.Nop(), Store: st, Locks: &Locks{},
		Deployers: map[deployer.Kind]deployer.Deployer{deployer.KindSwarm: dep}}
	j := state.Journal{Target: "swarm/api", Kind: "swarm", From: dOld, FromImage: "registry.example.com/api:1.0", To: "registry.example.com/api:1.1@" + dNew, Step: "update"}

	res := Recover(context.Background(), deps, []state.Journal{j})

	if len(res) != 1 || res[0].Outcome != deployer.RolledBack {
		t.Fatalf("recovery = %+v, want the previous version restored (rolled-back)", res)
	}
	if len(dep.rollbacks) != 1 || dep.rollbacks[0] != "completed" {
		t.Errorf("rollbacks attempted in update states %v, want one, after the update completed", dep.rollbacks)
	}
}
