// Package engine connects shipwatch to the Docker Engine: one client, the API
// version negotiated (engines from API 1.40 on work), and errors that say what
// to check when the engine cannot be reached.
package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/moby/moby/client"
)

// ErrUnreachable wraps every failure to reach the engine.
var ErrUnreachable = errors.New("cannot reach the Docker engine")

// Connect returns a client for the engine at host ("" means DOCKER_HOST or
// the default socket) after a successful ping, with the API version
// negotiated. The caller closes it.
func Connect(ctx context.Context, host string) (*client.Client, error) {
	opts := []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation(), client.WithUserAgent("shipwatch")}
	if host != "" {
		opts = append(opts, client.WithHost(host))
	}
	cli, err := client.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnreachable, err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := cli.Ping(pctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		_ = cli.Close()
		return nil, fmt.Errorf("%w at %s: %v (is the daemon running, and is its socket mounted and readable by this user? set DOCKER_HOST or engine.host to point elsewhere)",
			ErrUnreachable, describeHost(host), err)
	}
	return cli, nil
}

func describeHost(host string) string {
	if host != "" {
		return host
	}
	if h := os.Getenv("DOCKER_HOST"); h != "" {
		return h
	}
	return client.DefaultDockerHost
}
