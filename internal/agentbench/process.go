package agentbench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/shipwatch/shipwatch/internal/testenv"
)

// BuildAgent builds the shipwatch and shipwatch-agent binaries of this
// checkout into dir the way the Dockerfile does (static, -trimpath,
// symbols stripped), so that the memory measured is that of the binaries
// operators run: `shipwatch agent` execs shipwatch-agent, which keeps the
// process's PID.
func BuildAgent(ctx context.Context, dir string) (string, error) {
	return testenv.BuildBinaries(ctx, dir, "-trimpath", "-ldflags", "-s -w -X main.version=agentbench")
}

// Line is one JSON log line of the agent, stamped when the benchmark read
// it (the agent's own timestamps have one-second resolution).
type Line struct {
	At     time.Time
	Fields map[string]any
}

// Str returns the string field key ("" when absent or not a string).
func (l Line) Str(key string) string {
	s, _ := l.Fields[key].(string)
	return s
}

// Int returns the numeric field key (0 when absent).
func (l Line) Int(key string) int {
	f, _ := l.Fields[key].(float64)
	return int(f)
}

// Message is the log line's message.
func (l Line) Message() string { return l.Str("message") }

// Agent is a running `shipwatch agent` process whose JSON log the benchmark
// follows line by line.
type Agent struct {
	Pid int

	cmd     *exec.Cmd
	logFile *os.File
	started time.Time

	mu      sync.Mutex
	lines   []Line
	changed chan struct{} // closed and replaced on every new line and at exit
	exited  bool
	waitErr error
	done    chan struct{}
}

// AgentOptions start an agent.
type AgentOptions struct {
	Binary, Config string
	// DockerHost is the engine's address (unix:///…/engine.sock).
	DockerHost string
	// CAFile is trusted for registry TLS (SSL_CERT_FILE).
	CAFile string
	// LogLevel is the agent's --log-level (default info).
	LogLevel string
	// LogPath receives the agent's raw log.
	LogPath string
	// Env adds environment variables (GOGC=…, GOMEMLIMIT=…).
	Env []string
}

// StartAgent starts `shipwatch agent` with a JSON log on stderr.
func StartAgent(opts AgentOptions) (*Agent, error) {
	level := opts.LogLevel
	if level == "" {
		level = "info"
	}
	cmd := exec.Command(opts.Binary, "agent", "--config", opts.Config, "--log-format", "json", "--log-level", level)
	// A clean environment: only what the agent needs, so that nothing of the
	// benchmark's own (GOGC, GODEBUG, DOCKER_*) changes what is measured.
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.TempDir(), "DOCKER_HOST=" + opts.DockerHost, "SSL_CERT_FILE=" + opts.CAFile}, opts.Env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = io.Discard
	a := &Agent{cmd: cmd, changed: make(chan struct{}), done: make(chan struct{})}
	if opts.LogPath != "" {
		if a.logFile, err = os.Create(opts.LogPath); err != nil {
			return nil, err
		}
	}
	if err := cmd.Start(); err != nil {
		if a.logFile != nil {
			a.logFile.Close()
		}
		return nil, fmt.Errorf("start %s agent: %w", opts.Binary, err)
	}
	a.Pid, a.started = cmd.Process.Pid, time.Now()
	go a.follow(stderr)
	return a, nil
}

// follow reads the log until the process closes stderr, then reaps it.
func (a *Agent) follow(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		at := time.Now()
		raw := sc.Bytes()
		if a.logFile != nil {
			_, _ = a.logFile.Write(raw)
			_, _ = a.logFile.Write([]byte{'\n'})
		}
		fields := map[string]any{}
		if err := json.Unmarshal(raw, &fields); err != nil {
			fields = map[string]any{"message": "(not JSON) " + string(raw)}
		}
		a.mu.Lock()
		a.lines = append(a.lines, Line{At: at, Fields: fields})
		close(a.changed)
		a.changed = make(chan struct{})
		a.mu.Unlock()
	}
	_, _ = io.Copy(io.Discard, r)
	err := a.cmd.Wait()
	if a.logFile != nil {
		a.logFile.Close()
	}
	a.mu.Lock()
	a.exited, a.waitErr = true, err
	close(a.changed)
	a.changed = make(chan struct{})
	a.mu.Unlock()
	close(a.done)
}

// Len is how many log lines were read so far (a cursor for WaitLine).
func (a *Agent) Len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.lines)
}

// Lines returns the log lines from index from on.
func (a *Agent) Lines(from int) []Line {
	a.mu.Lock()
	defer a.mu.Unlock()
	if from >= len(a.lines) {
		return nil
	}
	return append([]Line(nil), a.lines[from:]...)
}

// ErrExited is returned when the agent exits while a line is awaited.
var ErrExited = errors.New("the agent exited")

// WaitLine waits until a line at index ≥ from satisfies match, and returns
// it with its index. It fails when ctx ends or the agent exits first.
func (a *Agent) WaitLine(ctx context.Context, from int, match func(Line) bool) (Line, int, error) {
	for {
		a.mu.Lock()
		for i := from; i < len(a.lines); i++ {
			if match(a.lines[i]) {
				l := a.lines[i]
				a.mu.Unlock()
				return l, i, nil
			}
		}
		from = len(a.lines)
		exited, waitErr, changed := a.exited, a.waitErr, a.changed
		a.mu.Unlock()
		if exited {
			return Line{}, -1, fmt.Errorf("%w (%v); its last lines:\n%s", ErrExited, waitErr, a.tail(10))
		}
		select {
		case <-ctx.Done():
			return Line{}, -1, ctx.Err()
		case <-changed:
		}
	}
}

// tail formats the last n log lines for an error message.
func (a *Agent) tail(n int) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	lines := a.lines[max(0, len(a.lines)-n):]
	var out []byte
	for _, l := range lines {
		b, _ := json.Marshal(l.Fields)
		out = append(out, "  "...)
		out = append(out, b...)
		out = append(out, '\n')
	}
	return string(out)
}

// Errors returns the messages of error-level log lines from index from on.
func (a *Agent) Errors(from int) []string {
	var out []string
	for _, l := range a.Lines(from) {
		if l.Str("level") == "error" {
			out = append(out, l.Message()+": "+l.Str("error"))
		}
	}
	return out
}

// Sample reads the agent's memory and CPU time now.
func (a *Agent) Sample() (Sample, error) { return ReadSample(a.Pid) }

// Usage is what the kernel accounted for the whole life of an exited agent.
// (Its ru_maxrss is left out: os/exec starts the child with vfork, so the
// kernel's peak includes the benchmark's own memory before the exec.)
type Usage struct {
	CPU time.Duration // user + system
}

// Stop sends SIGTERM and waits up to grace for a graceful exit, then kills
// the agent. It returns the kernel's account of the process's life.
func (a *Agent) Stop(grace time.Duration) (Usage, error) {
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-a.done:
	case <-t.C:
		_ = a.cmd.Process.Kill()
		<-a.done
		return Usage{}, fmt.Errorf("the agent did not stop within %s of SIGTERM: killed", grace)
	}
	var u Usage
	if ru, ok := a.cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		u.CPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	a.mu.Lock()
	err := a.waitErr
	a.mu.Unlock()
	if err != nil {
		return u, fmt.Errorf("the agent exited with %v after SIGTERM; its last lines:\n%s", err, a.tail(10))
	}
	return u, nil
}

// Uptime is the time since the agent started.
func (a *Agent) Uptime() time.Duration { return time.Since(a.started) }
