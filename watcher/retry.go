package watcher

import (
	"context"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// retryPolicy bounds how often and how long a request is retried after a
// 5xx, a timeout, a network error or a 429.
type retryPolicy struct {
	attempts      int           // total attempts per request, the first included
	base          time.Duration // backoff before the second attempt (doubles after)
	max           time.Duration // cap of one backoff
	maxRetryAfter time.Duration // longest Retry-After obeyed by waiting; longer fails at once
}

var defaultRetry = retryPolicy{attempts: 4, base: 250 * time.Millisecond, max: 4 * time.Second, maxRetryAfter: 2 * time.Minute}

// backoff returns the wait before attempt n+1 after n failed attempts:
// capped exponential with "equal jitter" (half fixed, half random), so
// that many clients that failed together do not retry together.
func (p retryPolicy) backoff(n int) time.Duration {
	d := p.base
	for i := 1; i < n && d < p.max; i++ {
		d *= 2
	}
	d = min(d, p.max)
	if d <= 0 {
		return 0
	}
	half := d / 2
	return half + rand.N(half+1)
}

// retryAfter reads a Retry-After header (delay in seconds or an HTTP date,
// RFC 9110 §10.2.3); ok is false when it is missing or unreadable.
func retryAfter(h http.Header, now time.Time) (time.Duration, bool) {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		if secs > int64(24*time.Hour/time.Second) {
			secs = int64(24 * time.Hour / time.Second)
		}
		return time.Duration(secs) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// fitsDeadline reports whether waiting d still leaves ctx time to act.
func fitsDeadline(ctx context.Context, d time.Duration) bool {
	dl, ok := ctx.Deadline()
	return !ok || time.Until(dl) > d
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func retryableStatus(code int) bool {
	switch code {
	case http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}
