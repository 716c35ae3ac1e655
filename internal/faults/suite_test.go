package faults_test

import (
	"flag"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shipwatch/shipwatch/internal/faults"
	"github.com/shipwatch/shipwatch/internal/testenv"
)

// The short form (go test, CI) runs every class 3 times; the long form is
// the same test with more runs:
//
//	go test ./internal/faults -run TestFaultSuite -timeout 8h -faults.runs 25 -faults.report docs/faults-long.md
var (
	runs     = flag.Int("faults.runs", 3, "runs per fault class")
	baseSeed = flag.Int64("faults.seed", 1, "base seed: run i of class C uses faults.SeedFor(seed, C, i)")
	seeds    = flag.String("faults.seeds", "", "comma-separated seeds to run instead (repeat failed runs)")
	only     = flag.String("faults.class", "", "regular expression: run only the matching classes")
	parallel = flag.Int("faults.parallel", 3, "runs at once (each has its own registry, workload and agent)")
	report   = flag.String("faults.report", "", "write the report table (Markdown) to this file")
	logs     = flag.Int("faults.log", 60, "agent log lines shown for a failed run")
	verbose  = flag.Bool("faults.verbose", false, "show logs and history of every run, not only failed ones")
)

// TestFaultSuite runs the seeded fault scenarios against the real engine
// with the real agent binary and checks the invariants after each.
func TestFaultSuite(t *testing.T) {
	if testing.Short() && !testenv.InCI() {
		t.Skip("the fault suite drives the Docker engine (skipped with -short outside CI)")
	}
	cli := testenv.Engine(t) // fails under CI=true without an engine
	// One swarm for the whole suite: each Swarm run holds it too, but
	// between runs it would otherwise be left and initialised again.
	testenv.Swarm(t, cli)
	faults.SetLogLines(*logs)
	faults.SetVerbose(*verbose)
	bin, err := testenv.BuildShipwatch("")
	if err != nil {
		t.Fatal(err)
	}
	var classes []faults.Class
	re, err := regexp.Compile(*only)
	if err != nil {
		t.Fatalf("-faults.class: %v", err)
	}
	for _, c := range faults.AllClasses() {
		if re.MatchString(c.Name) {
			classes = append(classes, c)
		}
	}
	type job struct {
		class faults.Class
		seed  int64
	}
	var jobs []job
	if *seeds != "" {
		for _, s := range strings.Split(*seeds, ",") {
			n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
			if err != nil {
				t.Fatalf("-faults.seeds: %v", err)
			}
			for _, c := range classes {
				jobs = append(jobs, job{c, n})
			}
		}
	} else {
		// Interleave the classes so that slow ones spread over the workers.
		for i := 0; i < *runs; i++ {
			for _, c := range classes {
				jobs = append(jobs, job{c, faults.SeedFor(*baseSeed, c.Name, i)})
			}
		}
	}
	start := time.Now()
	var mu sync.Mutex
	var results []faults.Result
	queue := make(chan job)
	var wg sync.WaitGroup
	for w := 0; w < max(1, *parallel); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range queue {
				name := fmt.Sprintf("%s/seed=%d", j.class.Name, j.seed)
				t.Run(name, func(t *testing.T) {
					r := faults.RunOne(t, j.class, j.seed, bin)
					mu.Lock()
					results = append(results, r)
					mu.Unlock()
				})
			}
		}()
	}
	for _, j := range jobs {
		queue <- j
	}
	close(queue)
	wg.Wait()

	var b strings.Builder
	faults.WriteTable(&b, faults.Summarize(classes, results))
	t.Logf("fault suite: %d runs in %s\n%s", len(results), time.Since(start).Round(time.Second), b.String())
	if *report != "" {
		head := fmt.Sprintf("<!-- written by TestFaultSuite on %s: %d runs in %s -->\n\n", time.Now().UTC().Format(time.RFC3339), len(results), time.Since(start).Round(time.Second))
		if err := os.WriteFile(*report, []byte(head+b.String()), 0o644); err != nil {
			t.Errorf("write report: %v", err)
		}
	}
}
