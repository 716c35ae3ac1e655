package agentbench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat:
// 100 on every Linux architecture Go supports (the kernel fixes the ABI
// value whatever CONFIG_HZ is).
const clockTicks = 100

// Sample is one reading of a process's memory and CPU time.
type Sample struct {
	At  time.Time
	RSS int64 // resident set now (VmRSS), bytes
	HWM int64 // peak resident set so far (VmHWM), bytes
	// Anon and File split RSS: anonymous memory (Go heap, stacks, runtime)
	// and pages of files mapped in (the binary's code and data).
	Anon, File int64
	// CPU is user + system time of all the process's threads so far.
	CPU time.Duration
	// Children are the processes the agent runs (shipwatch helper
	// processes, which verify and deploy for shipwatch-agent), and
	// ChildRSS their resident sets added up.
	Children int
	ChildRSS int64
}

// ReadSample reads /proc/<pid>/status and /proc/<pid>/stat.
func ReadSample(pid int) (Sample, error) {
	s := Sample{At: time.Now()}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, fmt.Errorf("read memory of process %d: %w (the benchmark needs Linux /proc)", pid, err)
	}
	if s.RSS, s.HWM, s.Anon, s.File, err = parseStatus(status); err != nil {
		return s, fmt.Errorf("process %d: %w", pid, err)
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, fmt.Errorf("read CPU time of process %d: %w", pid, err)
	}
	if s.CPU, err = parseStat(stat); err != nil {
		return s, fmt.Errorf("process %d: %w", pid, err)
	}
	s.Children, s.ChildRSS = readChildren(pid)
	return s, nil
}

// readChildren counts the children of pid (from every thread's
// /proc/<pid>/task/<tid>/children) and adds up their VmRSS.
func readChildren(pid int) (n int, rss int64) {
	lists, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, l := range lists {
		b, err := os.ReadFile(l)
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			status, err := os.ReadFile("/proc/" + f + "/status")
			if err != nil {
				continue // it just exited
			}
			n++
			if r, _, _, _, err := parseStatus(status); err == nil {
				rss += r
			}
		}
	}
	return n, rss
}

// parseStatus returns VmRSS, VmHWM, RssAnon and RssFile in bytes from
// /proc/<pid>/status.
func parseStatus(b []byte) (rss, hwm, anon, file int64, err error) {
	want := map[string]*int64{"VmRSS": &rss, "VmHWM": &hwm, "RssAnon": &anon, "RssFile": &file}
	found := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		dst, known := want[key]
		if !ok || !known {
			continue
		}
		fields := strings.Fields(val)
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, 0, 0, 0, fmt.Errorf("status: %s is %q, want \"<n> kB\"", key, strings.TrimSpace(val))
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, 0, 0, 0, fmt.Errorf("status: %s: %w", key, err)
		}
		*dst = kb * 1024
		found++
	}
	if found != len(want) {
		return 0, 0, 0, 0, fmt.Errorf("status lacks VmRSS, VmHWM, RssAnon or RssFile (a zombie process?)")
	}
	return rss, hwm, anon, file, nil
}

// parseStat returns utime+stime from /proc/<pid>/stat. The command name,
// field 2, is in parentheses and may hold spaces and ')' itself, so the
// fields are counted from the last ')'.
func parseStat(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("stat: no command name in %q", truncateBytes(b, 80))
	}
	fields := strings.Fields(string(b[i+1:]))
	// After the name: state is field 3, utime field 14, stime field 15.
	const utime, stime = 14 - 3, 15 - 3
	if len(fields) <= stime {
		return 0, fmt.Errorf("stat: %d fields after the name, want more than %d", len(fields), stime)
	}
	u, err := strconv.ParseInt(fields[utime], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stat: utime: %w", err)
	}
	s, err := strconv.ParseInt(fields[stime], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stat: stime: %w", err)
	}
	return time.Duration(u+s) * time.Second / clockTicks, nil
}

func truncateBytes(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}

// MiB formats bytes as mebibytes with one decimal.
func MiB(b int64) string { return strconv.FormatFloat(float64(b)/(1<<20), 'f', 1, 64) }
