package agentbench

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"
)

// RolloutStartMessage is the agent's log line when a rollout of a verified
// candidate begins (pass.deployOne, right before the deployer is called).
const RolloutStartMessage = "rollout starting"

// LatencySample is one push → rollout measurement.
type LatencySample struct {
	Target string
	Digest string
	// Latency is from the notification (webhook) or the end of the push
	// (polling) to the agent's rollout start line.
	Latency time.Duration
	// Hint is from the notification to the agent's line saying the
	// webhook's coalesced hint was handed to the agent (webhook only).
	Hint time.Duration
	// Pass is how long the pass that rolled out took in all (its "took").
	Pass time.Duration
}

// LatencyResult is a series of samples.
type LatencyResult struct {
	Mode     string // "webhook" or "polling"
	Schedule string
	Samples  []LatencySample
	Exit     Usage
	Errors   []string
}

// Latencies returns the samples' Latency values, sorted.
func (r LatencyResult) Latencies() []time.Duration {
	return sortedOf(r.Samples, func(s LatencySample) time.Duration { return s.Latency })
}

// Hints returns the samples' Hint values, sorted.
func (r LatencyResult) Hints() []time.Duration {
	return sortedOf(r.Samples, func(s LatencySample) time.Duration { return s.Hint })
}

// Passes returns the samples' Pass values, sorted.
func (r LatencyResult) Passes() []time.Duration {
	return sortedOf(r.Samples, func(s LatencySample) time.Duration { return s.Pass })
}

func sortedOf(samples []LatencySample, f func(LatencySample) time.Duration) []time.Duration {
	out := make([]time.Duration, len(samples))
	for i, s := range samples {
		out[i] = f(s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Percentile returns the nearest-rank p-th percentile (0 < p ≤ 100) of
// sorted: the smallest value at least p % of the samples do not exceed.
// With fewer than 100 samples, p99 is the maximum.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// Mean returns the arithmetic mean of ds.
func Mean(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return sum / time.Duration(len(ds))
}

// LatencyOptions configure a latency measurement.
type LatencyOptions struct {
	Samples int
	// Interval is the polling schedule (polling only; webhooks run with
	// a schedule of 1h so that no scheduled pass interferes).
	Interval time.Duration
	// SampleTimeout bounds each sample (default 2m).
	SampleTimeout time.Duration
	// FirstPassTimeout bounds the agent's start and first pass (default 10m).
	FirstPassTimeout time.Duration
	Env              []string
	// Seed makes the polling phases reproducible (0: random).
	Seed uint64
}

func (o LatencyOptions) withDefaults() LatencyOptions {
	if o.SampleTimeout <= 0 {
		o.SampleTimeout = 2 * time.Minute
	}
	if o.FirstPassTimeout <= 0 {
		o.FirstPassTimeout = 10 * time.Minute
	}
	return o
}

// rolloutOf matches the rollout start line of target for digest.
func rolloutOf(target, digest string) func(Line) bool {
	return func(l Line) bool {
		return l.Message() == RolloutStartMessage && l.Str("target") == target && strings.HasSuffix(l.Str("to"), "@"+digest)
	}
}

// Webhook measures, Samples times, the time from a registry's push
// notification (a CNCF distribution event POSTed to the agent's webhook
// receiver) to the start of the rollout it leads to. Each sample publishes
// a new signed digest of a different digest-followed service, so that no
// two samples share a repository (the API spaces hints of one repository
// at least 5 s apart). The rollout itself fails on the fake engine, which
// does not matter: the latency ends when it starts. The engine is then
// told the new digest runs, so later passes see an idle estate again.
func (b *Bench) Webhook(ctx context.Context, opts LatencyOptions) (res LatencyResult, err error) {
	opts = opts.withDefaults()
	svcs := b.DigestServices()
	if opts.Samples <= 0 || opts.Samples > len(svcs) {
		return res, fmt.Errorf("webhook: %d samples need as many digest-followed services (there are %d)", opts.Samples, len(svcs))
	}
	res = LatencyResult{Mode: "webhook", Schedule: "@every 1h"}
	r, err := b.start("webhook", AgentConfig{Schedule: res.Schedule, APIListen: "listen"}, "debug", opts.Env)
	if err != nil {
		return res, err
	}
	defer func() {
		u, stopErr := r.agent.Stop(30 * time.Second)
		res.Exit = u
		if err == nil {
			err = stopErr
		}
	}()
	if _, _, err := waitPass(ctx, r.agent, 0, "start", opts.FirstPassTimeout); err != nil {
		return res, err
	}
	if err := waitAPI(ctx, r.apiURL, 30*time.Second); err != nil {
		return res, err
	}
	hook := r.apiURL + "/v1/webhooks/distribution?token=" + url.QueryEscape(WebhookSecret)
	for i := range opts.Samples {
		svc := svcs[i]
		s, err := b.webhookSample(ctx, r, svc, hook, opts.SampleTimeout)
		if err != nil {
			return res, fmt.Errorf("webhook sample %d (%s): %w", i+1, svc.ID(), err)
		}
		res.Samples = append(res.Samples, s)
		b.logf("webhook %d/%d: %s → rollout start %s (hint %s, pass %s)", i+1, opts.Samples, svc.ID(), s.Latency.Round(time.Millisecond), s.Hint.Round(time.Millisecond), s.Pass)
	}
	res.Errors = r.agent.Errors(0)
	return res, nil
}

func (b *Bench) webhookSample(ctx context.Context, r *run, svc Service, hook string, timeout time.Duration) (LatencySample, error) {
	s := LatencySample{Target: svc.ID()}
	digest, err := b.Fixture.PushSigned(ctx, svc)
	if err != nil {
		return s, err
	}
	s.Digest = digest
	repo, tag := b.repoTagOf(svc)
	mark := r.agent.Len()
	body := distributionEvent(b.Fixture.Registry.Host, repo, tag, digest)
	sent := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, hook, strings.NewReader(body))
	if err != nil {
		return s, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return s, fmt.Errorf("POST the notification: %w", err)
	}
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || !strings.Contains(string(answer), `"queued":1`) {
		return s, fmt.Errorf("the webhook answered HTTP %d %s, want 202 with one hint queued", resp.StatusCode, answer)
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	full := b.Fixture.Registry.Host + "/" + repo
	hint, _, err := r.agent.WaitLine(wctx, mark, func(l Line) bool {
		return l.Message() == "api: webhook hint: check requested" && l.Str("repository") == full
	})
	if err != nil {
		return s, fmt.Errorf("no hint for %s: %w", full, err)
	}
	s.Hint = hint.At.Sub(sent)
	start, at, err := r.agent.WaitLine(wctx, mark, rolloutOf(svc.ID(), digest))
	if err != nil {
		return s, fmt.Errorf("no rollout of %s: %w", digest, err)
	}
	s.Latency = start.At.Sub(sent)
	done, _, err := waitPass(wctx, r.agent, at, "webhook", timeout)
	if err != nil {
		return s, err
	}
	s.Pass = passCounts(done).Took
	if !b.Engine.SetDigest(svc.ID(), digest) {
		return s, fmt.Errorf("the fake engine has no service %s", svc.ID())
	}
	return s, nil
}

// Polling measures, Samples times, the time from a push (the moment the
// tag points at a new signed digest) to the start of the rollout, with the
// agent polling every Interval and no webhook. Pushes happen at a random
// phase of the schedule: each waits a uniformly random time in [0,
// Interval) after the previous sample ended, so the mean wait for the next
// pass tends to Interval/2.
func (b *Bench) Polling(ctx context.Context, opts LatencyOptions) (res LatencyResult, err error) {
	opts = opts.withDefaults()
	svcs := b.DigestServices()
	if opts.Samples <= 0 || opts.Samples > len(svcs) {
		return res, fmt.Errorf("polling: %d samples need as many digest-followed services (there are %d)", opts.Samples, len(svcs))
	}
	if opts.Interval <= 0 {
		return res, fmt.Errorf("polling: the interval must be positive")
	}
	seed := opts.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	res = LatencyResult{Mode: "polling", Schedule: "@every " + opts.Interval.String()}
	r, err := b.start("polling-"+opts.Interval.String(), AgentConfig{Schedule: res.Schedule}, "debug", opts.Env)
	if err != nil {
		return res, err
	}
	defer func() {
		u, stopErr := r.agent.Stop(30 * time.Second)
		res.Exit = u
		if err == nil {
			err = stopErr
		}
	}()
	if _, _, err := waitPass(ctx, r.agent, 0, "start", opts.FirstPassTimeout); err != nil {
		return res, err
	}
	for i := range opts.Samples {
		// From the other end of the list than the webhook samples, so the
		// two phases never touch the same service.
		svc := svcs[len(svcs)-1-i]
		phase := time.Duration(rng.Int64N(int64(opts.Interval)))
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(phase):
		}
		s, err := b.pollingSample(ctx, r, svc, opts.SampleTimeout+opts.Interval)
		if err != nil {
			return res, fmt.Errorf("polling sample %d (%s): %w", i+1, svc.ID(), err)
		}
		res.Samples = append(res.Samples, s)
		b.logf("polling %d/%d: %s → rollout start %s (pass %s)", i+1, opts.Samples, svc.ID(), s.Latency.Round(time.Millisecond), s.Pass)
	}
	res.Errors = r.agent.Errors(0)
	return res, nil
}

func (b *Bench) pollingSample(ctx context.Context, r *run, svc Service, timeout time.Duration) (LatencySample, error) {
	s := LatencySample{Target: svc.ID()}
	mark := r.agent.Len()
	digest, err := b.Fixture.PushSigned(ctx, svc)
	if err != nil {
		return s, err
	}
	pushed := time.Now()
	s.Digest = digest
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start, at, err := r.agent.WaitLine(wctx, mark, rolloutOf(svc.ID(), digest))
	if err != nil {
		return s, fmt.Errorf("no rollout of %s: %w", digest, err)
	}
	s.Latency = start.At.Sub(pushed)
	done, _, err := waitPass(wctx, r.agent, at, "schedule", timeout)
	if err != nil {
		return s, err
	}
	s.Pass = passCounts(done).Took
	if !b.Engine.SetDigest(svc.ID(), digest) {
		return s, fmt.Errorf("the fake engine has no service %s", svc.ID())
	}
	return s, nil
}
