package compose

import (
	"context"
	"errors"
	"io"
	"strings"
	"syscall"
	"time"

	"github.com/moby/moby/client"
)

// engineUnreachable reports whether err says the engine could not be
// reached or dropped the connection (dockerd restarting, a socket proxy
// reconnecting) rather than answering: the same call can succeed a moment
// later. The Compose SDK's own client wraps such errors as text, hence the
// message checks.
func engineUnreachable(err error) bool {
	if err == nil {
		return false
	}
	if client.IsErrConnectionFailed(err) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ENOENT) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "error during connect") || strings.Contains(msg, "Cannot connect to the Docker daemon")
}

// retryUnreachable runs op until it succeeds, fails for another reason
// than an unreachable engine, or ctx ends. A restore uses it so that an
// engine that restarts while the previous version is being put back does
// not leave the service half-restored: that is waiting for the engine to
// answer, not retrying a rollout.
func retryUnreachable(ctx context.Context, op func() error) error {
	wait := 250 * time.Millisecond
	for {
		err := op()
		if !engineUnreachable(err) {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		wait = min(2*wait, 5*time.Second)
	}
}
