package faults

import (
	"context"
	"io"
	"net/http"
	"sync"
	"time"
)

// Prober hits the workload's published port every interval and remembers
// which probes failed, to measure the outage an update causes: the longest
// run of consecutive failed probes.
type Prober struct {
	url      string
	interval time.Duration
	client   *http.Client
	cancel   context.CancelFunc
	done     chan struct{}

	mu     sync.Mutex
	probes []probe
}

type probe struct {
	at time.Time
	ok bool
}

// StartProber probes url every interval (a probe waits at most one second).
func StartProber(url string, interval time.Duration) *Prober {
	ctx, cancel := context.WithCancel(context.Background())
	p := &Prober{
		url: url, interval: interval, cancel: cancel, done: make(chan struct{}),
		client: &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
	}
	go p.run(ctx)
	return p
}

func (p *Prober) run(ctx context.Context) {
	defer close(p.done)
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		p.once(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (p *Prober) once(ctx context.Context) {
	at := time.Now()
	ok := false
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err == nil {
		if resp, err := p.client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			ok = resp.StatusCode == http.StatusOK
		}
	}
	if ctx.Err() != nil {
		return
	}
	p.mu.Lock()
	p.probes = append(p.probes, probe{at: at, ok: ok})
	p.mu.Unlock()
}

// Stop ends the probing.
func (p *Prober) Stop() {
	p.cancel()
	<-p.done
}

// Outage is the longest window of failed probes: from the first failed probe
// of a run of failures to the next good probe (or the last probe).
func (p *Prober) Outage() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return longestOutage(p.probes)
}

// Counts returns how many probes were sent and how many failed.
func (p *Prober) Counts() (total, failed int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pr := range p.probes {
		if !pr.ok {
			failed++
		}
	}
	return len(p.probes), failed
}

func longestOutage(probes []probe) time.Duration {
	var longest time.Duration
	var start time.Time
	in := false
	for _, pr := range probes {
		switch {
		case !pr.ok && !in:
			in, start = true, pr.at
		case pr.ok && in:
			in = false
			longest = max(longest, pr.at.Sub(start))
		}
	}
	if in && len(probes) > 0 {
		longest = max(longest, probes[len(probes)-1].at.Sub(start))
	}
	return longest
}
