package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"
)

// Several test binaries (one per package) may need the swarm at the same time,
// so the swarm's lifetime is shared through two files in the temp directory:
// every user holds a shared flock on the users file while it runs, and the
// marker file says the tests (not the machine's owner) created the swarm. The
// last user to finish — the one that can take the lock exclusively — leaves
// the swarm if the marker is there, restoring the machine as it was found.
var (
	swarmUsers  = filepath.Join(os.TempDir(), "shipwatch-testenv-swarm.users")
	swarmMarker = filepath.Join(os.TempDir(), "shipwatch-testenv-swarm.created")
	swarmAdmin  = filepath.Join(os.TempDir(), "shipwatch-testenv-swarm.admin")
)

// Swarm makes sure the engine is a single-node swarm manager for the rest of
// the test (initialising one on 127.0.0.1 when none exists) and, when the
// tests created it, leaves it again once no test process uses it any more.
// If the engine refuses, the test fails with the engine's exact error.
func Swarm(tb testing.TB, cli *client.Client) {
	tb.Helper()
	users, err := os.OpenFile(swarmUsers, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		tb.Fatalf("swarm lock: %v", err)
	}
	if err := syscall.Flock(int(users.Fd()), syscall.LOCK_SH); err != nil {
		tb.Fatalf("swarm lock: %v", err)
	}
	tb.Cleanup(func() { releaseSwarm(tb, cli, users) })

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = withFileLock(swarmAdmin, func() error {
		info, err := cli.Info(ctx, client.InfoOptions{})
		if err != nil {
			return err
		}
		switch info.Info.Swarm.LocalNodeState {
		case swarm.LocalNodeStateActive:
			if !info.Info.Swarm.ControlAvailable {
				return fmt.Errorf("this engine is a swarm worker, not a manager")
			}
			return nil
		case swarm.LocalNodeStateInactive:
		default:
			return fmt.Errorf("swarm is in state %q", info.Info.Swarm.LocalNodeState)
		}
		gw := networkExists(ctx, cli, "docker_gwbridge")
		if _, err := cli.SwarmInit(ctx, client.SwarmInitOptions{ListenAddr: "127.0.0.1:2377", AdvertiseAddr: "127.0.0.1"}); err != nil {
			return fmt.Errorf("docker swarm init --advertise-addr 127.0.0.1: %w", err)
		}
		marker := "created\n"
		if !gw {
			marker = "created+gwbridge\n"
		}
		return os.WriteFile(swarmMarker, []byte(marker), 0o600)
	})
	if err != nil {
		tb.Fatalf("single-node swarm: %v", err)
	}
}

func releaseSwarm(tb testing.TB, cli *client.Client, users *os.File) {
	defer users.Close()
	// Drop our shared lock, then see whether anybody else still holds one.
	_ = syscall.Flock(int(users.Fd()), syscall.LOCK_UN)
	if err := syscall.Flock(int(users.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return // another test process still uses the swarm; it will leave it
	}
	defer syscall.Flock(int(users.Fd()), syscall.LOCK_UN)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := withFileLock(swarmAdmin, func() error {
		marker, err := os.ReadFile(swarmMarker)
		if os.IsNotExist(err) {
			return nil // the swarm was there before the tests: keep it
		}
		if _, err := cli.SwarmLeave(ctx, client.SwarmLeaveOptions{Force: true}); err != nil {
			return fmt.Errorf("leave swarm: %w", err)
		}
		if string(marker) == "created+gwbridge\n" {
			// docker_gwbridge outlives the swarm; it did not exist before.
			_, _ = cli.NetworkRemove(ctx, "docker_gwbridge", client.NetworkRemoveOptions{})
		}
		return os.Remove(swarmMarker)
	})
	if err != nil {
		tb.Errorf("restore swarm state: %v", err)
	}
}

func withFileLock(path string, f func() error) error {
	lf, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer lf.Close()
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	defer syscall.Flock(int(lf.Fd()), syscall.LOCK_UN)
	return f()
}

func networkExists(ctx context.Context, cli *client.Client, name string) bool {
	_, err := cli.NetworkInspect(ctx, name, client.NetworkInspectOptions{})
	return err == nil
}

// RemoveService removes a swarm service and waits until its containers are
// gone, so that networks and images it used can be removed after it.
func RemoveService(tb testing.TB, cli *client.Client, id string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := cli.ServiceRemove(ctx, id, client.ServiceRemoveOptions{}); err != nil && !isNotFound(err) {
		tb.Errorf("remove service %s: %v", id, err)
		return
	}
	filter := make(client.Filters).Add("label", "com.docker.swarm.service.id="+id)
	for {
		list, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: filter})
		if err != nil {
			tb.Errorf("list containers of service %s: %v", id, err)
			return
		}
		if len(list.Items) == 0 {
			return
		}
		select {
		case <-ctx.Done():
			tb.Errorf("containers of service %s still present after removal", id)
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}
