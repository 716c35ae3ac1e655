package watcher

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors: every registry failure wraps exactly one of them, so
// callers can branch with errors.Is. None of them is ever an update.
var (
	// ErrNotFound: the tag, manifest or repository does not exist (404).
	ErrNotFound = errors.New("not found")
	// ErrUnauthorized: the registry refused the credentials (401), or the
	// token endpoint did.
	ErrUnauthorized = errors.New("authentication failed")
	// ErrDenied: the credentials are valid but may not pull (403).
	ErrDenied = errors.New("access denied")
	// ErrRateLimited: 429 from the registry, and waiting as asked would
	// outlast the context or the attempts.
	ErrRateLimited = errors.New("rate limited")
	// ErrUnavailable: 5xx, timeouts or network errors after the retries.
	ErrUnavailable = errors.New("registry unavailable")
	// ErrTooLarge: a manifest, tag list or token response over the size cap.
	ErrTooLarge = errors.New("response too large")
	// ErrInvalidResponse: a truncated or malformed body, a digest that does
	// not match the content, an unsupported media type, or an answer no
	// registry should give.
	ErrInvalidResponse = errors.New("invalid registry response")
	// ErrNoPlatform: the candidate is a multi-platform index without an
	// image for the watcher's platform.
	ErrNoPlatform = errors.New("no image for this platform")
)

// Error is a registry failure: which registry and reference, what went
// wrong and what to do. It never contains credentials or tokens.
type Error struct {
	Registry string // registry host: "ghcr.io"
	Subject  string // what was asked for: "ghcr.io/o/a:1.4", "ghcr.io/o/a (tag list)", "registry ghcr.io"
	Status   int    // HTTP status of the last answer, 0 when there was none
	Kind     error  // one of the sentinel errors above
	Detail   string // what happened: "HTTP 503 after 4 attempts"
	Hint     string // what to do: "check credentials for ghcr.io"
	Cause    error  // underlying error (network, context, JSON), may be nil
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Subject)
	b.WriteString(": ")
	b.WriteString(e.Kind.Error())
	if e.Detail != "" {
		b.WriteString(" (")
		b.WriteString(e.Detail)
		b.WriteString(")")
	}
	if e.Cause != nil {
		b.WriteString(": ")
		b.WriteString(oneLine(e.Cause.Error()))
	}
	if e.Hint != "" {
		b.WriteString(" — ")
		b.WriteString(e.Hint)
	}
	return b.String()
}

// Unwrap lets errors.Is match both the sentinel kind and the cause
// (context.DeadlineExceeded, a JSON syntax error …).
func (e *Error) Unwrap() []error {
	if e.Cause == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Cause}
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	const max = 300
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}

// hintFor is the default advice for a kind of failure.
func hintFor(kind error, host, repo string) string {
	switch kind {
	case ErrUnauthorized:
		return "check credentials for " + host
	case ErrDenied:
		return fmt.Sprintf("check that the credentials for %s may pull %s", host, repo)
	case ErrRateLimited:
		return fmt.Sprintf("lower concurrency or rateLimit for %s, or check less often", host)
	case ErrUnavailable:
		return fmt.Sprintf("%s is failing or unreachable; try again later or check the network", host)
	case ErrTooLarge, ErrInvalidResponse:
		return fmt.Sprintf("%s sent a response no registry should send; check the registry or the proxy in front of it", host)
	}
	return ""
}

// shortDigest prints "sha256:0123456789ab" for humans.
func shortDigest(d string) string {
	algo, hex, ok := strings.Cut(d, ":")
	if !ok || len(hex) <= 12 {
		return d
	}
	return algo + ":" + hex[:12]
}
