package faults

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// Row is the report line of one fault class.
type Row struct {
	Class      string
	Runs       int
	Platforms  map[Platform]int
	Violations int // invariant violations (all runs)
	Misses     int // missed expectations (all runs)
	FailedRuns []int64
	Rollbacks  int
	ToRollback []time.Duration
	Outages    []time.Duration
	Took       time.Duration
}

// Summarize groups results by class, in the order of classes.
func Summarize(classes []Class, results []Result) []Row {
	rows := map[string]*Row{}
	var order []string
	for _, c := range classes {
		rows[c.Name] = &Row{Class: c.Name, Platforms: map[Platform]int{}}
		order = append(order, c.Name)
	}
	for _, r := range results {
		row, ok := rows[r.Class]
		if !ok {
			row = &Row{Class: r.Class, Platforms: map[Platform]int{}}
			rows[r.Class] = row
			order = append(order, r.Class)
		}
		row.Runs++
		row.Platforms[r.Platform]++
		row.Violations += len(r.Violations)
		row.Misses += len(r.Misses)
		if r.Failed() {
			row.FailedRuns = append(row.FailedRuns, r.Seed)
		}
		row.Rollbacks += r.Rollbacks
		row.ToRollback = append(row.ToRollback, r.ToRollback...)
		if r.Probed {
			row.Outages = append(row.Outages, r.Outage)
		}
		row.Took += r.Took
	}
	out := make([]Row, 0, len(order))
	for _, name := range order {
		if rows[name].Runs > 0 {
			out = append(out, *rows[name])
		}
	}
	return out
}

// Percentile returns the p-th percentile (nearest rank) of ds; 0 for none.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	rank := int(p/100*float64(len(s))+0.999999) - 1
	return s[min(max(rank, 0), len(s)-1)]
}

func dur(ds []time.Duration, p float64) string {
	if len(ds) == 0 {
		return "–"
	}
	d := Percentile(ds, p)
	if d < 10*time.Second {
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
	return fmt.Sprintf("%.1fs", d.Seconds())
}

// WriteTable writes the report as a Markdown table, with a totals line.
func WriteTable(w io.Writer, rows []Row) {
	fmt.Fprintln(w, "| class | runs (compose/swarm) | invariant violations | missed expectations | rollbacks | time to rollback p50 / p99 | outage per 1-replica update p50 / p99 |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	var tot Row
	for _, r := range rows {
		fmt.Fprintf(w, "| %s | %d (%d/%d) | %d | %d | %d | %s / %s | %s / %s |\n", r.Class, r.Runs, r.Platforms[Compose], r.Platforms[Swarm],
			r.Violations, r.Misses, r.Rollbacks, dur(r.ToRollback, 50), dur(r.ToRollback, 99), dur(r.Outages, 50), dur(r.Outages, 99))
		tot.Runs += r.Runs
		tot.Violations += r.Violations
		tot.Misses += r.Misses
		tot.Rollbacks += r.Rollbacks
		tot.ToRollback = append(tot.ToRollback, r.ToRollback...)
		tot.Outages = append(tot.Outages, r.Outages...)
	}
	fmt.Fprintf(w, "| **all** | **%d** | **%d** | **%d** | **%d** | %s / %s | %s / %s |\n", tot.Runs, tot.Violations, tot.Misses, tot.Rollbacks,
		dur(tot.ToRollback, 50), dur(tot.ToRollback, 99), dur(tot.Outages, 50), dur(tot.Outages, 99))
	var failed []string
	for _, r := range rows {
		for _, s := range r.FailedRuns {
			failed = append(failed, fmt.Sprintf("%s seed %d", r.Class, s))
		}
	}
	if len(failed) > 0 {
		fmt.Fprintf(w, "\nFailed runs (repeat one with `-faults.class <class> -faults.seeds <seed>`): %s\n", strings.Join(failed, ", "))
	}
}
