package agentbench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"strings"
	"time"
)

// Targets of issue 6 ("Performance"). 30 MB is read as 30·10⁶ bytes, the
// stricter reading.
const (
	TargetRSS          = 30_000_000
	TargetCPUPerMinute = 0.05 // CPU seconds per minute
	TargetWebhookP99   = time.Second
)

// Machine describes where a benchmark ran.
type Machine struct {
	GoVersion   string
	CPUs        int
	CPUModel    string
	Kernel      string
	LoadBefore  string
	LoadAfter   string
	BinaryBytes int64
}

// ReadMachine describes this machine and the binary.
func ReadMachine(binary string) Machine {
	m := Machine{GoVersion: runtime.Version(), CPUs: runtime.NumCPU(), Kernel: firstLine("/proc/sys/kernel/osrelease"), LoadBefore: firstLine("/proc/loadavg")}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if fi, err := os.Stat(binary); err == nil {
		m.BinaryBytes = fi.Size()
	}
	return m
}

func firstLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSpace(line)
}

// Report is a whole benchmark run.
type Report struct {
	Command  string
	Started  time.Time
	Machine  Machine
	Services int
	Digest   int
	Semver   int
	Tags     int
	Setup    time.Duration
	Idle     []IdleResult
	Webhook  *LatencyResult
	Polling  *LatencyResult
	// PollInterval is the polling run's schedule interval.
	PollInterval time.Duration
}

// Load records the load average at the end.
func (r *Report) Load() { r.Machine.LoadAfter = firstLine("/proc/loadavg") }

// WriteJSON writes the report with every sample.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond)) }

// WriteMarkdown writes the figures as the tables of docs/benchmarks/agent.md.
func (r *Report) WriteMarkdown(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	m := r.Machine
	p("Recorded %s with `%s`.", r.Started.UTC().Format("2006-01-02 15:04 MST"), r.Command)
	p("")
	p("Machine: %d CPUs (%s), Linux %s, %s; agent binary %.1f MiB (static, -trimpath, -s -w); load average before %s, after %s.",
		m.CPUs, m.CPUModel, m.Kernel, m.GoVersion, float64(m.BinaryBytes)/(1<<20), m.LoadBefore, m.LoadAfter)
	p("")
	p("Estate: %d Compose services (%d following the digest of their tag, %d a semver range over %d tags each) in one registry (HTTPS/HTTP2, token auth, 100 tags per page); fixture built in %s.",
		r.Services, r.Digest, r.Semver, r.Tags, r.Setup.Round(time.Second))
	if len(r.Idle) > 0 {
		p("")
		p("### Idle agent")
		p("")
		p("| schedule | env | passes in window | window | CPU in window | **CPU s/min** (target < %.2f) | RSS min / median / max (MiB) | median = anon + file (MiB) | **RSS max** (target < 30 MB) | peak RSS, life (VmHWM) | first pass: took, CPU, RSS | pass took (median) | engine calls / pass | registry requests / pass |", TargetCPUPerMinute)
		p("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
		for _, i := range r.Idle {
			env := strings.Join(i.Env, " ")
			if env == "" {
				env = "—"
			}
			if i.API {
				env += " (API on)"
			}
			calls := 0.0
			for _, v := range i.EngineCallsPerPass {
				calls += v
			}
			p("| `%s` | %s | %d | %s | %.2f s | **%.3f** (%s) | %s / %s / %s | %s + %s | **%s MiB** (%s) | %s MiB | %s, %.2f s, %s MiB | %s | %.0f | %.0f |",
				i.Schedule, env, len(i.Passes), i.Window.Round(time.Second), i.CPU.Seconds(), i.CPUPerMinute(), verdict(i.CPUPerMinute() < TargetCPUPerMinute),
				MiB(i.RSSMin), MiB(i.RSSMedian), MiB(i.RSSMax), MiB(i.AnonMedian), MiB(i.FileMedian), MiB(i.RSSMax), verdict(i.RSSMax < TargetRSS), MiB(i.HWM),
				i.First.Took, i.CPUAtReady.Seconds(), MiB(i.RSSAtReady), medianTook(i.Passes), calls, i.RegistryPerPass)
		}
		for _, i := range r.Idle {
			p("")
			reused := 0
			for _, ps := range i.Passes {
				if ps.Reused {
					reused++
				}
			}
			p("`%s` engine calls per pass: %s; %d of %d passes reused the previous discovery (no engine event since); %.1f new registry connections per pass; a helper process ran in %d of %d samples (max RSS %s MiB).",
				i.Schedule, formatCalls(i.EngineCallsPerPass), reused, len(i.Passes), i.ConnsPerPass, i.HelperSamples, i.Samples, MiB(i.HelperRSSMax))
			if len(i.Errors) > 0 {
				p("Agent errors: %s.", strings.Join(i.Errors, "; "))
			}
		}
	}
	for _, l := range []*LatencyResult{r.Webhook, r.Polling} {
		if l == nil {
			continue
		}
		lat, passes := l.Latencies(), l.Passes()
		p("")
		switch l.Mode {
		case "webhook":
			hints := l.Hints()
			p("### Detection latency: webhook (registry notification → rollout start)")
			p("")
			p("| samples | p50 | p90 | **p99** | max | mean | notification → hint handed to the agent (p50 / max) | webhook pass took (p50 / max) |")
			p("|---|---|---|---|---|---|---|---|")
			p("| %d | %s | %s | **%s** | %s | %s | %s / %s | %s / %s |", len(lat), ms(Percentile(lat, 50)), ms(Percentile(lat, 90)), ms(Percentile(lat, 99)),
				ms(Percentile(lat, 100)), ms(Mean(lat)), ms(Percentile(hints, 50)), ms(Percentile(hints, 100)), ms(Percentile(passes, 50)), ms(Percentile(passes, 100)))
		case "polling":
			p("### Detection latency: polling (push → rollout start), schedule `%s`", l.Schedule)
			p("")
			p("| samples | **mean** | interval/2 | p50 | p90 | max | min | pass took (p50 / max) |")
			p("|---|---|---|---|---|---|---|---|")
			p("| %d | **%s** | %s | %s | %s | %s | %s | %s / %s |", len(lat), ms(Mean(lat)), ms(r.PollInterval/2), ms(Percentile(lat, 50)), ms(Percentile(lat, 90)),
				ms(Percentile(lat, 100)), ms(lat[0]), ms(Percentile(passes, 50)), ms(Percentile(passes, 100)))
		}
		if len(l.Errors) > 0 {
			p("")
			p("Agent errors (%d; the rollouts fail on the fake engine by design): %s", len(l.Errors), firstErrors(l.Errors, 2))
		}
	}
}

func medianTook(ps []PassCounts) time.Duration {
	if len(ps) == 0 {
		return 0
	}
	ds := make([]time.Duration, len(ps))
	for i, x := range ps {
		ds[i] = x.Took
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[len(ds)/2]
}

func formatCalls(c map[string]float64) string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("`%s` %.0f", k, c[k]))
	}
	return strings.Join(parts, ", ")
}

func firstErrors(errs []string, n int) string {
	if len(errs) > n {
		return strings.Join(errs[:n], "; ") + "; …"
	}
	return strings.Join(errs, "; ")
}
