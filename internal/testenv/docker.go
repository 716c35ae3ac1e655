package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"
)

// LabelKey marks every object the test environment creates on the engine.
const LabelKey = "shipwatch.test"

// InCI reports whether the tests run under CI (CI=true), where a missing
// Docker engine is a failure instead of a skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// Engine returns a client for the local Docker engine (API version
// negotiated). Without an engine the test fails under CI and is skipped
// otherwise.
func Engine(tb testing.TB) *client.Client {
	tb.Helper()
	cli, err := client.New(client.FromEnv, client.WithAPIVersionNegotiation())
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err = cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true})
	}
	if err != nil {
		if InCI() {
			tb.Fatalf("Docker engine required under CI=true but not reachable: %v", err)
		}
		tb.Skipf("no Docker engine: %v", err)
	}
	tb.Cleanup(func() { _ = cli.Close() })
	return cli
}

// Name returns a name unique to this test run, valid as a container, service,
// network and Compose project name: "swt" + random hex + "-" + suffix.
func Name(suffix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	s := "swt" + hex.EncodeToString(b)
	if suffix != "" {
		s += "-" + strings.ToLower(suffix)
	}
	return s
}

// Context returns a context bounded by d that ends with the test.
func Context(tb testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	tb.Cleanup(cancel)
	return ctx
}

// Eventually polls cond every interval until it returns true or the deadline
// passes, then fails tb with the last message cond returned.
func Eventually(tb testing.TB, timeout, interval time.Duration, cond func() (bool, string)) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, msg := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("condition not met within %s: %s", timeout, msg)
		}
		time.Sleep(interval)
	}
}

// PullImage pulls ref into the engine and waits until the pull is done.
func PullImage(ctx context.Context, cli *client.Client, ref string) error {
	resp, err := cli.ImagePull(ctx, ref, client.ImagePullOptions{})
	if err != nil {
		return fmt.Errorf("pull %s: %w", ref, err)
	}
	defer resp.Close()
	if err := resp.Wait(ctx); err != nil {
		return fmt.Errorf("pull %s: %w", ref, err)
	}
	return nil
}

// RemoveImagesOf registers a cleanup that removes every engine image whose
// repository starts with prefix (usually a test Registry's Host), so that
// tests leave no images behind.
func RemoveImagesOf(tb testing.TB, cli *client.Client, prefix string) {
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := removeImagesOf(ctx, cli, prefix); err != nil {
			tb.Errorf("cleanup images of %s: %v", prefix, err)
		}
	})
}

func removeImagesOf(ctx context.Context, cli *client.Client, prefix string) error {
	list, err := cli.ImageList(ctx, client.ImageListOptions{All: true})
	if err != nil {
		return err
	}
	// Remove by reference, not by image ID: two tests that build the same
	// App share an image ID, and removing it by ID would take the other
	// test's tags with it. The image goes when its last reference does.
	for _, img := range list.Items {
		for _, ref := range append(append([]string{}, img.RepoTags...), img.RepoDigests...) {
			if !strings.HasPrefix(ref, prefix+"/") {
				continue
			}
			if _, err := cli.ImageRemove(ctx, ref, client.ImageRemoveOptions{Force: true, PruneChildren: true}); err != nil && !isNotFound(err) {
				return fmt.Errorf("remove image %s: %w", ref, err)
			}
		}
	}
	return nil
}

func isNotFound(err error) bool { return cerrdefs.IsNotFound(err) }
