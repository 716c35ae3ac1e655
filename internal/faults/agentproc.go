package faults

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Agent is a shipwatch agent run as a separate process (the real binary, so
// that SIGKILL is a real SIGKILL), with its log captured line by line.
type Agent struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // exit error, valid after done

	mu      sync.Mutex
	lines   []string
	parsed  []map[string]any
	changed chan struct{}
}

// StartAgent runs `bin --config cfg --log-format json --log-level debug
// agent` with env added to the environment.
func StartAgent(bin, cfg string, env ...string) (*Agent, error) {
	a := &Agent{
		cmd:     exec.Command(bin, "--config", cfg, "--log-format", "json", "--log-level", "debug", "agent"),
		done:    make(chan struct{}),
		changed: make(chan struct{}),
	}
	a.cmd.Env = append(os.Environ(), env...)
	// One pipe for both streams: stdout is empty for the agent, and
	// anything written there must be swept for secrets too.
	pr, pw := io.Pipe()
	a.cmd.Stdout, a.cmd.Stderr = pw, pw
	if err := a.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start agent: %w", err)
	}
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 8<<20)
		for sc.Scan() {
			a.add(sc.Text())
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	go func() {
		a.err = a.cmd.Wait()
		_ = pw.Close()
		<-read
		close(a.done)
		a.mu.Lock()
		close(a.changed)
		a.changed = make(chan struct{})
		a.mu.Unlock()
	}()
	return a, nil
}

func (a *Agent) add(line string) {
	var m map[string]any
	if json.Unmarshal([]byte(line), &m) != nil {
		m = map[string]any{"message": line, "unparsed": true}
	}
	a.mu.Lock()
	a.lines = append(a.lines, line)
	a.parsed = append(a.parsed, m)
	close(a.changed)
	a.changed = make(chan struct{})
	a.mu.Unlock()
}

// Mark is a position in the log: WaitFrom looks at the lines after it.
func (a *Agent) Mark() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.lines)
}

// WaitFrom waits until a log line after mark satisfies match and returns
// it with the mark after it, or nil when the timeout passes or the process
// exits first.
func (a *Agent) WaitFrom(mark int, timeout time.Duration, match func(map[string]any) bool) (map[string]any, int) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		a.mu.Lock()
		for ; mark < len(a.parsed); mark++ {
			if match(a.parsed[mark]) {
				m := a.parsed[mark]
				a.mu.Unlock()
				return m, mark + 1
			}
		}
		changed := a.changed
		a.mu.Unlock()
		select {
		case <-changed:
			if a.Exited() {
				// Look at what was written before the exit once more.
				a.mu.Lock()
				for ; mark < len(a.parsed); mark++ {
					if match(a.parsed[mark]) {
						m := a.parsed[mark]
						a.mu.Unlock()
						return m, mark + 1
					}
				}
				a.mu.Unlock()
				return nil, mark
			}
		case <-deadline.C:
			return nil, mark
		}
	}
}

// Wait is WaitFrom the start of the log.
func (a *Agent) Wait(timeout time.Duration, match func(map[string]any) bool) map[string]any {
	m, _ := a.WaitFrom(0, timeout, match)
	return m
}

// Log returns every line the process wrote.
func (a *Agent) Log() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return strings.Join(a.lines, "\n")
}

// Exited reports whether the process has ended.
func (a *Agent) Exited() bool {
	select {
	case <-a.done:
		return true
	default:
		return false
	}
}

// ExitErr waits up to timeout for the process to end and returns its exit
// error (nil for exit 0); ok is false if it is still running.
func (a *Agent) ExitErr(timeout time.Duration) (err error, ok bool) {
	if a.Exited() {
		return a.err, true
	}
	select {
	case <-a.done:
		return a.err, true
	case <-time.After(timeout):
		return nil, false
	}
}

// Kill sends SIGKILL and waits for the process to end.
func (a *Agent) Kill() {
	_ = a.cmd.Process.Signal(syscall.SIGKILL)
	<-a.done
}

// Stop sends SIGTERM and waits up to timeout for a graceful exit; then it
// kills the process and says so.
func (a *Agent) Stop(timeout time.Duration) error {
	if a.Exited() {
		return a.err
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	if err, ok := a.ExitErr(timeout); ok {
		return err
	}
	_ = a.cmd.Process.Signal(syscall.SIGQUIT) // goroutine dump into the log
	if _, ok := a.ExitErr(5 * time.Second); !ok {
		a.Kill()
	}
	return fmt.Errorf("agent did not stop within %s of SIGTERM", timeout)
}

// Str returns m[key] as a string ("" when missing).
func Str(m map[string]any, key string) string {
	s, _ := m[key].(string)
	return s
}
