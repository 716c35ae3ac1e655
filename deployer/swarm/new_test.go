package swarm

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/swarm"
)

// A single node can be a manager or have no swarm, but the tests cannot
// turn it into a worker or lock it: those come from the fake engine.
func TestNewRefusesEnginesThatAreNotManagers(t *testing.T) {
	for _, tc := range []struct {
		name string
		info swarm.Info
		want error
		hint string
	}{
		{"inactive", swarm.Info{LocalNodeState: swarm.LocalNodeStateInactive}, ErrNoSwarm, "swarm manager"},
		{"worker", swarm.Info{NodeID: "w1", LocalNodeState: swarm.LocalNodeStateActive}, ErrNotManager, "run shipwatch on a manager"},
		{"locked", swarm.Info{LocalNodeState: swarm.LocalNodeStateLocked}, ErrNoSwarm, "docker swarm unlock"},
		{"error", swarm.Info{LocalNodeState: swarm.LocalNodeStateError, Error: "raft broke"}, ErrNoSwarm, "raft broke"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(ref1.String())
			f.info = tc.info
			d, err := New(context.Background(), Options{Engine: f})
			if !errors.Is(err, tc.want) {
				t.Fatalf("New: got %v, want %v", err, tc.want)
			}
			if d != nil {
				t.Errorf("got a Deployer, want none")
			}
			if !strings.Contains(err.Error(), tc.hint) {
				t.Errorf("error %q does not say %q", err, tc.hint)
			}
		})
	}
}

func TestNewValidatesOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"negative deadline", Options{Deadline: -time.Second}, "Deadline = -1s"},
		{"negative poll", Options{PollInterval: -time.Second}, "PollInterval"},
		{"ratio", Options{Defaults: UpdateDefaults{MaxFailureRatio: 2}}, "MaxFailureRatio = 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(ref1.String())
			tc.opts.Engine = f
			_, err := New(context.Background(), tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: got %v, want an error naming %q", err, tc.want)
			}
			if n := f.count("Info"); n != 0 {
				t.Errorf("invalid options reached the engine (%d Info calls)", n)
			}
		})
	}
}

func TestNewClampsPollInterval(t *testing.T) {
	for _, tc := range []struct{ in, want time.Duration }{
		{0, DefaultPollInterval}, {time.Millisecond, minPollInterval}, {3 * time.Second, 3 * time.Second},
	} {
		d, err := New(context.Background(), Options{Engine: newFake(ref1.String()), PollInterval: tc.in})
		if err != nil {
			t.Fatal(err)
		}
		if d.poll != tc.want {
			t.Errorf("PollInterval %s: got %s, want %s", tc.in, d.poll, tc.want)
		}
	}
}
