package watcher

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/shipwatch/shipwatch/imageref"
	"github.com/shipwatch/shipwatch/internal/testenv"
)

// The benchmark's shape, from issue 2 ("Performance").
const (
	benchDigestImages = 800 // followed by digest, one repository each
	benchSemverImages = 200 // followed by semver, one repository each
	benchSemverTags   = 250 // tags per semver repository
	benchPageSize     = 100 // tags per page, as Docker Hub and GHCR page
	benchLatency      = 20 * time.Millisecond
)

// benchFixture is the registry and the 1000 requests, built once per
// process: pushing 50,800 tags is setup, not what is measured.
type benchFixture struct {
	reg   *testenv.Registry
	reqs  []Request
	setup time.Duration
	// The physical minimum of registry requests for one pass: one HEAD per
	// unique repo:tag and the tag-list pages of each semver repository;
	// the first pass also pings once and gets one token per repository.
	minLater, minFirst int
}

var (
	benchOnce sync.Once
	benchFx   *benchFixture
	benchErr  error
)

func benchSetup(b *testing.B) *benchFixture {
	b.Helper()
	benchOnce.Do(func() { benchFx, benchErr = newBenchFixture() })
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return benchFx
}

func newBenchFixture() (*benchFixture, error) {
	start := time.Now()
	// Closed when the process exits: the fixture outlives sub-benchmarks.
	reg, err := testenv.StartRegistry(testenv.WithTLS(), testenv.WithTokenAuth(testUser, testPass), testenv.WithTagPageSize(benchPageSize))
	if err != nil {
		return nil, err
	}
	// A few images; many tags point at them.
	var imgs []v1.Image
	for i := range 3 {
		img, err := newTestImage("linux", "amd64", fmt.Sprintf("bench %d", i))
		if err != nil {
			return nil, err
		}
		imgs = append(imgs, img)
	}
	type manifest struct {
		body   []byte
		mt     string
		digest string
	}
	var mfs []manifest
	for i, img := range imgs {
		if _, err := reg.Push(fmt.Sprintf("bench/seed:%d", i), img); err != nil {
			return nil, err
		}
		body, err := img.RawManifest()
		if err != nil {
			return nil, err
		}
		mt, _ := img.MediaType()
		d, _ := img.Digest()
		mfs = append(mfs, manifest{body, string(mt), d.String()})
	}
	type put struct {
		repoTag string
		m       manifest
	}
	fx := &benchFixture{reg: reg}
	var puts []put
	for i := range benchDigestImages {
		repo := fmt.Sprintf("bench/digest%03d", i)
		puts = append(puts, put{repo + ":1.0", mfs[0]})
		fx.reqs = append(fx.reqs, Request{Key: repo, Image: imageref.MustParse(reg.Ref(repo + ":1.0")), Running: mfs[0].digest, Policy: digestPolicy})
	}
	semverPol := MustCompilePolicy(PolicySpec{Mode: ModeSemver, Range: "^1"})
	newest := ""
	for i := range benchSemverImages {
		repo := fmt.Sprintf("bench/semver%03d", i)
		for n := range benchSemverTags {
			tag := fmt.Sprintf("1.%d.%d", n/25, n%25)
			puts = append(puts, put{repo + ":" + tag, mfs[n%len(mfs)]})
			if n == benchSemverTags-1 {
				newest = tag
				// Each target runs the newest tag: an unchanged pass.
				fx.reqs = append(fx.reqs, Request{Key: repo, Image: imageref.MustParse(reg.Ref(repo + ":" + tag)), Running: mfs[n%len(mfs)].digest, Policy: semverPol})
			}
		}
	}
	if newest != "1.9.24" {
		return nil, fmt.Errorf("bench tags end at %s, want 1.9.24", newest)
	}
	if err := putManifests(reg, len(puts), func(i int) (string, string, []byte) {
		return puts[i].repoTag, puts[i].m.mt, puts[i].m.body
	}); err != nil {
		return nil, err
	}
	pages := (benchSemverTags + benchPageSize - 1) / benchPageSize
	fx.minLater = benchDigestImages + benchSemverImages + benchSemverImages*pages
	// The first pass adds the ping and the tokens: the registry grants
	// every scope a request asks for, so one token per maxBatchScopes
	// repositories.
	repos := benchDigestImages + benchSemverImages
	fx.minFirst = fx.minLater + 1 + (repos+maxBatchScopes-1)/maxBatchScopes
	fx.setup = time.Since(start)
	reg.Reset()
	return fx, nil
}

// putManifests writes n manifests with raw PUTs over one HTTP/2 connection
// (the in-process registry does not check blobs on manifest PUT, and the
// blobs exist anyway): far faster than one remote.Write per tag.
func putManifests(reg *testenv.Registry, n int, item func(int) (repoTag, mediaType string, body []byte)) error {
	client := &http.Client{Transport: reg.Transport()}
	token := reg.AdminToken()
	jobs := make(chan int)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				repoTag, mt, body := item(i)
				repo, tag, _ := strings.Cut(repoTag, ":")
				req, _ := http.NewRequest(http.MethodPut, reg.URL()+"/v2/"+repo+"/manifests/"+tag, bytes.NewReader(body))
				req.Header.Set("Content-Type", mt)
				req.Header.Set("Authorization", "Bearer "+token)
				resp, err := client.Do(req)
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode != http.StatusCreated {
						err = fmt.Errorf("PUT %s: HTTP %d", repoTag, resp.StatusCode)
					}
				}
				if err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// passFigures is what one pass cost.
type passFigures struct {
	requests, gets, conns int
	wall                  time.Duration
	stats                 Stats
}

func (fx *benchFixture) pass(b *testing.B, w *Watcher) passFigures {
	b.Helper()
	fx.reg.Reset()
	before := w.Stats()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	results := w.Check(ctx, fx.reqs)
	wall := time.Since(start)
	for _, r := range results {
		if r.Err != nil || r.Change != ChangeNone {
			b.Fatalf("%s: change %s, err %v; the benchmark's images are all unchanged", r.Key, r.Change, r.Err)
		}
	}
	return passFigures{
		requests: len(fx.reg.Requests()),
		gets:     fx.reg.Count(http.MethodGet, "manifest"),
		conns:    int(fx.reg.Conns()),
		wall:     wall,
		stats:    w.Stats().Sub(before),
	}
}

// peakRSS is the process's peak resident set (VmHWM), in MiB; 0 when
// /proc is not there.
func peakRSS() float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

// liveHeap is the live Go heap after a full collection, in bytes.
func liveHeap() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// BenchmarkCheckPass measures one Check pass over 1000 images (800 by
// digest, 200 by semver with 250 tags each) against a counting registry
// with token auth, HTTP/2 over TLS and 100 tags per page. One op is one
// later pass (warm tokens and connections); the first pass is measured
// apart and reported as first-*. Run:
//
//	go test -run '^$' -bench BenchmarkCheckPass -benchtime 3x ./watcher
func BenchmarkCheckPass(b *testing.B) {
	fx := benchSetup(b)
	for _, latency := range []time.Duration{0, benchLatency} {
		b.Run("latency="+latency.String(), func(b *testing.B) {
			if latency > 0 {
				// The same as testenv.WithLatency, switched on after setup so
				// that pushing 50,800 tags does not wait 20 ms each.
				fx.reg.Intercept(func(http.ResponseWriter, *http.Request) bool {
					time.Sleep(latency)
					return false
				})
				defer fx.reg.Intercept(nil)
			}
			heapBefore := liveHeap()
			w, err := New(Options{
				Registries: []Registry{{Host: fx.reg.Host, Username: testUser, Password: testPass}},
				Keychain:   authn.NewMultiKeychain(),
				Transport:  fx.reg.Transport(),
				Platform:   "linux/amd64",
			})
			if err != nil {
				b.Fatal(err)
			}
			conc := cap(w.global)
			first := fx.pass(b, w)
			b.ResetTimer()
			var sum passFigures
			worst := 0.0
			for range b.N {
				p := fx.pass(b, w)
				sum.requests += p.requests
				sum.gets += p.gets
				sum.conns += p.conns
				sum.wall += p.wall
				worst = max(worst, float64(p.requests)/float64(fx.minLater))
			}
			b.StopTimer()
			fx.reg.Reset() // drop the registry's request log before weighing the heap
			retained := liveHeap() - heapBefore
			runtime.KeepAlive(w)
			n := float64(b.N)
			b.ReportMetric(float64(sum.requests)/n, "req/pass")
			b.ReportMetric(float64(sum.requests)/n/float64(fx.minLater), "req/min")
			b.ReportMetric(worst, "worst-req/min")
			b.ReportMetric(float64(sum.gets)/n, "GETs/pass")
			b.ReportMetric(float64(sum.conns)/n, "conns/pass")
			b.ReportMetric(float64(first.requests)/float64(fx.minFirst), "first-req/min")
			b.ReportMetric(float64(first.gets), "first-GETs")
			b.ReportMetric(float64(first.conns), "first-conns")
			b.ReportMetric(float64(first.wall.Milliseconds()), "first-ms")
			b.ReportMetric(peakRSS(), "peak-RSS-MiB")
			b.ReportMetric(float64(retained)/1024, "watcher-heap-KiB")
			ref := time.Duration(benchDigestImages+benchSemverImages) * latency / time.Duration(conc)
			b.Logf("setup %s; concurrency %d; minimum %d requests (first pass %d); first pass %d requests %+v in %s; later passes %.0f requests, %.1f GETs, %.1f new connections, %s each; reference N x latency / concurrency = %s",
				fx.setup.Round(time.Millisecond), conc, fx.minLater, fx.minFirst, first.requests, first.stats, first.wall.Round(time.Millisecond),
				float64(sum.requests)/n, float64(sum.gets)/n, float64(sum.conns)/n, (sum.wall / time.Duration(b.N)).Round(time.Millisecond), ref)
		})
	}
}

// BenchmarkGGCRRemoteHead is the comparison behind the watcher's own thin
// client: the same 800 digest-followed images resolved with
// go-containerregistry's remote.Head, once with fresh options per call (how
// it is usually called) and once through one reused remote.Puller. One
// op is a later pass; the first pass is reported as first-*. Only the
// registry's request and connection counts matter here.
//
//	go test -run '^$' -bench BenchmarkGGCRRemoteHead -benchtime 1x ./watcher
func BenchmarkGGCRRemoteHead(b *testing.B) {
	fx := benchSetup(b)
	var refs []name.Reference
	for _, r := range fx.reqs[:benchDigestImages] {
		nr, err := name.ParseReference(r.Image.String())
		if err != nil {
			b.Fatal(err)
		}
		refs = append(refs, nr)
	}
	auth := remote.WithAuth(&authn.Basic{Username: testUser, Password: testPass})
	for _, mode := range []string{"per-call", "reused-puller"} {
		b.Run(mode, func(b *testing.B) {
			transport := remote.WithTransport(fx.reg.Transport()) // a fresh connection pool
			var puller *remote.Puller
			if mode == "reused-puller" {
				var err error
				if puller, err = remote.NewPuller(auth, transport); err != nil {
					b.Fatal(err)
				}
			}
			onePass := func() (requests, tokens, conns int) {
				fx.reg.Reset()
				sem := make(chan struct{}, DefaultConcurrency)
				var wg sync.WaitGroup
				errs := make(chan error, len(refs))
				for _, r := range refs {
					wg.Add(1)
					sem <- struct{}{}
					go func() {
						defer wg.Done()
						defer func() { <-sem }()
						var err error
						if puller != nil {
							_, err = puller.Head(context.Background(), r)
						} else {
							_, err = remote.Head(r, auth, transport)
						}
						errs <- err
					}()
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					if err != nil {
						b.Fatal(err)
					}
				}
				return len(fx.reg.Requests()), fx.reg.Count("", "token"), int(fx.reg.Conns())
			}
			fr, ft, fc := onePass()
			b.ResetTimer()
			var requests, tokens, conns int
			for range b.N {
				r, t, c := onePass()
				requests, tokens, conns = requests+r, tokens+t, conns+c
			}
			n := float64(b.N * len(refs))
			b.ReportMetric(float64(fr)/float64(len(refs)), "first-req/image")
			b.ReportMetric(float64(ft)/float64(len(refs)), "first-tokens/image")
			b.ReportMetric(float64(fc), "first-conns")
			b.ReportMetric(float64(requests)/n, "req/image")
			b.ReportMetric(float64(tokens)/n, "tokens/image")
			b.ReportMetric(float64(conns)/float64(b.N), "conns/pass")
		})
	}
}
