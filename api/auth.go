package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// authenticate checks the bearer token of r and answers 401 or 429 itself
// when it is missing, wrong, or the client has failed too often.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) bool {
	ip := clientIP(r)
	if wait, ok := s.limiter.allowed(ip); !ok {
		tooManyFailures(w, wait)
		return false
	}
	if s.opts.Token == "" {
		// Loopback without a token: refuse browsers tricked into calling
		// us through a name that resolves to 127.0.0.1 (DNS rebinding).
		if !isLoopbackHost(hostOnly(r.Host)) {
			writeError(w, http.StatusForbidden, "without a token the API answers only requests addressed to localhost or 127.0.0.1")
			return false
		}
		return true
	}
	got, ok := bearer(r.Header.Get("Authorization"))
	if !ok || !equalSecret(got, s.opts.Token) {
		s.metrics.APIAuthFailure()
		s.limiter.fail(ip)
		w.Header().Set("WWW-Authenticate", `Bearer realm="shipwatch"`)
		msg := "missing token: send Authorization: Bearer <api token>"
		if ok {
			msg = "wrong token"
		}
		writeError(w, http.StatusUnauthorized, msg)
		return false
	}
	return true
}

func tooManyFailures(w http.ResponseWriter, wait time.Duration) {
	secs := int(wait.Round(time.Second) / time.Second)
	if secs < 1 {
		secs = 1
	}
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	writeError(w, http.StatusTooManyRequests, "too many failed authentications from this address; retry after "+strconv.Itoa(secs)+"s")
}

// bearer extracts the token of an "Authorization: Bearer <token>" header.
func bearer(h string) (string, bool) {
	scheme, token, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// equalSecret compares in constant time. Both sides are hashed first so
// that neither the length nor a common prefix of the secret leaks through
// timing.
func equalSecret(got, want string) bool {
	g := sha256.Sum256([]byte(got))
	x := sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], x[:]) == 1 && want != ""
}

// clientIP is the address of the TCP peer. X-Forwarded-For is not trusted:
// anyone can send it, and it would let a client pick its own rate limit.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// hostOnly strips the port of a Host header.
func hostOnly(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		return host
	}
	return strings.Trim(h, "[]")
}

// limiter is a token bucket of authentication failures per client IP: a
// client may fail burst times in a row, then once per refill. Memory is
// bounded: when the table is full, buckets that have refilled are dropped,
// and if none has, new addresses share one overflow bucket (so an attacker
// with many addresses gets no more guesses than one address).
type limiter struct {
	burst  float64
	refill time.Duration
	now    func() time.Time

	mu       sync.Mutex
	buckets  map[string]*bucket
	overflow bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

const maxLimiterEntries = 4096

func newLimiter(burst int, refill time.Duration, now func() time.Time) *limiter {
	return &limiter{burst: float64(burst), refill: refill, now: now, buckets: map[string]*bucket{},
		overflow: bucket{tokens: float64(burst), at: now()}}
}

// allowed reports whether ip may try to authenticate, and if not how long
// until it may.
func (l *limiter) allowed(ip string) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.lookup(ip, false)
	if b == nil {
		return 0, true
	}
	l.fill(b)
	if b.tokens >= 1 {
		return 0, true
	}
	return time.Duration((1 - b.tokens) * float64(l.refill)), false
}

// fail takes one token from ip's bucket.
func (l *limiter) fail(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.lookup(ip, true)
	l.fill(b)
	if b.tokens > 0 {
		b.tokens--
	}
	if b.tokens < 0 {
		b.tokens = 0
	}
}

func (l *limiter) fill(b *bucket) {
	now := l.now()
	b.tokens += float64(now.Sub(b.at)) / float64(l.refill)
	if b.tokens > l.burst {
		b.tokens = l.burst
	}
	b.at = now
}

// lookup finds ip's bucket, creating it when create is set.
func (l *limiter) lookup(ip string, create bool) *bucket {
	if b, ok := l.buckets[ip]; ok {
		return b
	}
	if len(l.buckets) >= maxLimiterEntries {
		for k, b := range l.buckets {
			l.fill(b)
			if b.tokens >= l.burst {
				delete(l.buckets, k)
			}
		}
	}
	if len(l.buckets) >= maxLimiterEntries {
		return &l.overflow
	}
	if !create {
		return nil
	}
	b := &bucket{tokens: l.burst, at: l.now()}
	l.buckets[ip] = b
	return b
}
