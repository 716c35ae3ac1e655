package agentbench

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/shipwatch/shipwatch/discovery"
	"github.com/shipwatch/shipwatch/engine"
	"github.com/shipwatch/shipwatch/internal/testenv"
)

func TestParseStatus(t *testing.T) {
	const full = "Name:\tshipwatch\nVmPeak:\t 1300000 kB\nVmHWM:\t   69000 kB\nVmRSS:\t   59696 kB\nRssAnon:\t   29568 kB\nRssFile:\t   30128 kB\nRssShmem:\t       0 kB\nThreads:\t8\n"
	tests := []struct {
		name                 string
		in                   string
		rss, hwm, anon, file int64
		wantErr              bool
	}{
		{name: "all lines", in: full, rss: 59696 << 10, hwm: 69000 << 10, anon: 29568 << 10, file: 30128 << 10},
		{name: "zombie without memory lines", in: "Name:\tshipwatch\nState:\tZ (zombie)\n", wantErr: true},
		{name: "unit other than kB", in: strings.Replace(full, "59696 kB", "59696 MB", 1), wantErr: true},
		{name: "not a number", in: strings.Replace(full, "59696 kB", "lots kB", 1), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rss, hwm, anon, file, err := parseStatus([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("got error %v, want error %v", err, tt.wantErr)
			}
			if rss != tt.rss || hwm != tt.hwm || anon != tt.anon || file != tt.file {
				t.Errorf("got rss %d hwm %d anon %d file %d, want %d %d %d %d", rss, hwm, anon, file, tt.rss, tt.hwm, tt.anon, tt.file)
			}
		})
	}
}

func TestParseStat(t *testing.T) {
	// Fields after the name: state ppid pgrp session tty tpgid flags minflt
	// cminflt majflt cmajflt utime stime …
	tail := " S 1 2 3 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 8 0 12345 1000000 2000"
	tests := []struct {
		name    string
		in      string
		want    time.Duration
		wantErr bool
	}{
		{name: "plain name", in: "4242 (shipwatch)" + tail, want: 3250 * time.Millisecond},
		{name: "name with spaces and a parenthesis", in: "4242 (ship) watch x)" + tail, want: 3250 * time.Millisecond},
		{name: "truncated", in: "4242 (shipwatch) S 1 2 3", wantErr: true},
		{name: "no name", in: "4242 shipwatch S", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStat([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("got error %v, want error %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

func TestPercentile(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		var out []time.Duration
		for _, n := range ns {
			out = append(out, time.Duration(n)*time.Millisecond)
		}
		return out
	}
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{name: "empty", sorted: nil, p: 99, want: 0},
		{name: "median of five", sorted: ms(1, 2, 3, 4, 5), p: 50, want: 3 * time.Millisecond},
		{name: "p99 of fifty is the maximum", sorted: hundred[:50], p: 99, want: 50 * time.Millisecond},
		{name: "p99 of a hundred", sorted: hundred, p: 99, want: 99 * time.Millisecond},
		{name: "p100 is the maximum", sorted: hundred, p: 100, want: 100 * time.Millisecond},
		{name: "tiny p is the minimum", sorted: hundred, p: 0.001, want: time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
	if got, want := Mean(ms(1, 2, 6)), 3*time.Millisecond; got != want {
		t.Errorf("mean: got %s, want %s", got, want)
	}
}

// TestEngineAnswersDiscovery runs shipwatch's own engine client and
// discovery against the fake engine: every service is found with the
// digest it runs, through the calls a real engine would get.
func TestEngineAnswersDiscovery(t *testing.T) {
	const d1 = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	const d2 = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
	svcs := []Service{
		{Project: "app000", Name: "svc0000", Image: "127.0.0.1:5000/bench/digest0000:1.0", Digest: d1, Labels: map[string]string{"shipwatch.enable": "true"}},
		{Project: "app000", Name: "svc0001", Image: "127.0.0.1:5000/bench/semver0000:1.9.24", Digest: d2, Labels: map[string]string{"shipwatch.policy": "semver"}},
	}
	eng := NewEngine(svcs)
	sock := filepath.Join(t.TempDir(), "engine.sock")
	if err := eng.Serve(sock); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cli, err := engine.Connect(ctx, "unix://"+sock)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if v := cli.ClientVersion(); v != EngineAPIVersion {
		t.Errorf("negotiated API %s, want %s", v, EngineAPIVersion)
	}

	discover := func() map[string]string {
		t.Helper()
		res, err := discovery.Discover(ctx, cli)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, tg := range res.Targets {
			if tg.Unmanaged != "" {
				t.Errorf("%s: unmanaged: %s", tg.ID, tg.Unmanaged)
			}
			got[tg.ID+" "+tg.Image.String()] = tg.Digest
		}
		return got
	}
	got := discover()
	for _, s := range svcs {
		if d := got[s.ID()+" "+s.Image]; d != s.Digest {
			t.Errorf("%s %s: got digest %q, want %s (discovered: %v)", s.ID(), s.Image, d, s.Digest, got)
		}
	}
	if len(got) != len(svcs) {
		t.Errorf("got %d targets, want %d: %v", len(got), len(svcs), got)
	}
	calls := eng.Calls()
	if calls["unknown"] != 0 || calls["GET /containers/json"] != 1 {
		t.Errorf("got calls %s, want one container list and no unknown call", CallSummary(calls))
	}

	// A rollout the benchmark simulates shows on the next discovery, and
	// as a container event to whoever follows the engine's events.
	stream := cli.Events(ctx, client.EventsListOptions{})
	if !eng.SetDigest(svcs[0].ID(), d2) {
		t.Fatalf("SetDigest(%s) = false, want true", svcs[0].ID())
	}
	select {
	case m := <-stream.Messages:
		if m.Type != "container" || m.Action != "start" {
			t.Errorf("got event %s %s, want container start", m.Type, m.Action)
		}
	case err := <-stream.Err:
		t.Errorf("event stream: %v", err)
	case <-ctx.Done():
		t.Errorf("no event after SetDigest")
	}
	if d := discover()[svcs[0].ID()+" "+svcs[0].Image]; d != d2 {
		t.Errorf("after SetDigest: got digest %s, want %s", d, d2)
	}
	if eng.SetDigest("compose/none/none", d2) {
		t.Errorf("SetDigest of an unknown service = true, want false")
	}

	// What the fake does not model is refused and counted.
	eng.ResetCalls()
	if _, err := cli.ContainerLogs(ctx, "whatever", client.ContainerLogsOptions{ShowStdout: true}); err == nil {
		t.Errorf("container logs: got no error from the fake engine, want 404")
	}
	if n := eng.Calls()["unknown"]; n != 1 {
		t.Errorf("got %d unknown calls, want 1", n)
	}
}

// TestBenchMachinery runs every phase of the benchmark briefly against a
// small estate with the real binary, so that the machinery cannot rot. It
// asserts what the phases observed, never how fast anything was: timings
// on a shared test machine are no verdict.
func TestBenchMachinery(t *testing.T) {
	if testing.Short() && !testenv.InCI() {
		t.Skip("builds and runs the shipwatch binary (about a minute; skipped with -short outside CI)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	b, err := New(ctx, Options{Fixture: FixtureOptions{DigestImages: 6, SemverImages: 2, TagsPerRepo: 30, ServicesPerApp: 3}, Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	defer func() {
		if t.Failed() {
			t.Logf("benchmark progress:\n%s", progress.String())
		}
	}()

	idle, err := b.Idle(ctx, IdleOptions{Interval: 2 * time.Second, Passes: 2, SampleEvery: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if idle.First.Targets != 8 || len(idle.Passes) != 2 {
		t.Errorf("got first pass over %d targets and %d scheduled passes, want 8 and 2", idle.First.Targets, len(idle.Passes))
	}
	for _, p := range idle.Passes {
		if p.Trigger != "schedule" || p.Targets != 8 {
			t.Errorf("got pass %+v, want a scheduled pass over 8 targets", p)
		}
	}
	if idle.Samples == 0 || idle.RSSMin <= 0 || idle.RSSMax < idle.RSSMin || idle.HWM < idle.RSSMax || idle.AnonMedian <= 0 || idle.FileMedian <= 0 {
		t.Errorf("got %d samples, RSS %d..%d, HWM %d, anon %d, file %d: want positive, ordered readings",
			idle.Samples, idle.RSSMin, idle.RSSMax, idle.HWM, idle.AnonMedian, idle.FileMedian)
	}
	if idle.Window < 4*time.Second || idle.CPU < 0 || idle.Exit.CPU < idle.CPU {
		t.Errorf("got window %s, CPU %s, exit %+v: want a window of two intervals and the kernel's account covering it", idle.Window, idle.CPU, idle.Exit)
	}
	if idle.EngineCallsPerPass["GET /info"] <= 0 || idle.EngineCallsPerPass["unknown"] != 0 {
		t.Errorf("got engine calls %v, want engine info and no unknown call", idle.EngineCallsPerPass)
	}
	// The fake engine's event stream stays open and reports nothing: after
	// the pass that follows its opening, passes reuse their discovery.
	if p := idle.Passes[len(idle.Passes)-1]; !p.Reused || idle.EngineCallsPerPass["GET /containers/json"] >= 1 {
		t.Errorf("got last pass %+v and engine calls %v, want the idle agent to reuse its discovery", p, idle.EngineCallsPerPass)
	}
	if idle.ConnsPerPass != 0 {
		t.Errorf("got %.1f new registry connections per pass, want the first pass's connection reused", idle.ConnsPerPass)
	}
	if idle.RegistryPerPass < 8 {
		t.Errorf("got %.1f registry requests per pass, want at least one per image (8)", idle.RegistryPerPass)
	}
	if len(idle.Errors) != 0 {
		t.Errorf("the idle agent logged errors: %q", idle.Errors)
	}

	hook, err := b.Webhook(ctx, LatencyOptions{Samples: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(hook.Samples) != 2 {
		t.Fatalf("got %d webhook samples, want 2", len(hook.Samples))
	}
	for i, s := range hook.Samples {
		if want := b.DigestServices()[i].ID(); s.Target != want || !strings.HasPrefix(s.Digest, "sha256:") {
			t.Errorf("webhook sample %d: got %s %s, want %s and a new digest", i, s.Target, s.Digest, want)
		}
		if s.Hint <= 0 || s.Latency < s.Hint {
			t.Errorf("webhook sample %d: got hint after %s and rollout after %s, want 0 < hint ≤ rollout", i, s.Hint, s.Latency)
		}
	}

	poll, err := b.Polling(ctx, LatencyOptions{Samples: 1, Interval: 2 * time.Second, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(poll.Samples) != 1 || poll.Samples[0].Latency <= 0 || poll.Samples[0].Target != b.DigestServices()[5].ID() {
		t.Errorf("got polling samples %+v, want one positive sample of %s", poll.Samples, b.DigestServices()[5].ID())
	}

	rep := Report{Services: 8, Idle: []IdleResult{idle}, Webhook: &hook, Polling: &poll, PollInterval: 2 * time.Second}
	var md bytes.Buffer
	rep.WriteMarkdown(&md)
	for _, want := range []string{"### Idle agent", "`@every 2s`", "### Detection latency: webhook", "### Detection latency: polling"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("the report lacks %q:\n%s", want, md.String())
		}
	}
}
