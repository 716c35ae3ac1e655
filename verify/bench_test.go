package verify_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/shipwatch/shipwatch/imageref"
	"github.com/shipwatch/shipwatch/internal/testenv"
	"github.com/shipwatch/shipwatch/verify"
	"github.com/shipwatch/shipwatch/verify/sigtest"
)

const benchImages = 200

// BenchmarkVerify measures verifications per second over loopback for 200
// signed images and the registry requests each costs, for a new digest
// (cache of one entry: every verification misses, the transport and token
// stay warm) and for a cached digest. Recorded in docs/benchmarks/verify.md.
func BenchmarkVerify(b *testing.B) {
	key := sigtest.MustKey(b, "")
	scanner := sigtest.MustKey(b, "")
	for _, sc := range []struct {
		name      string
		referrers bool
		format    sigtest.Format
		scan      bool
		latency   time.Duration
	}{
		{"bundle,referrers-API", true, sigtest.Bundle, false, 0},
		{"bundle,fallback-tag", false, sigtest.Bundle, false, 0},
		{"legacy-sig", false, sigtest.Legacy, false, 0},
		{"bundle+vuln-scan,referrers-API", true, sigtest.Bundle, true, 0},
		{"bundle,referrers-API,2ms-latency", true, sigtest.Bundle, false, 2 * time.Millisecond},
	} {
		opts := []testenv.RegistryOption{testenv.WithTokenAuth("bench", "bench")}
		if sc.referrers {
			opts = append(opts, testenv.WithReferrersAPI())
		}
		if sc.latency > 0 {
			opts = append(opts, testenv.WithLatency(sc.latency))
		}
		reg := testenv.NewRegistry(b, opts...)
		images := make([]imageref.Ref, benchImages)
		for i := range images {
			images[i] = pushRandom(b, reg, fmt.Sprintf("bench/app:%d", i))
			sigtest.MustSign(b, reg, digestRef(images[i]), key, sc.format)
			if sc.scan {
				if err := sigtest.AttestVuln(context.Background(), reg, digestRef(images[i]), scanner, sc.format, sigtest.Scan{FinishedAt: time.Now()}); err != nil {
					b.Fatal(err)
				}
			}
		}
		policy := imagePolicy(reg, keyAuthority("release", key))
		if sc.scan {
			policy.Scan = &verify.ScanSpec{Authorities: []verify.AuthoritySpec{keyAuthority("scanner", scanner)}, MaxSeverity: "high"}
		}
		for _, cached := range []bool{false, true} {
			name := sc.name + "/new-digest"
			cache := verify.NewCache(1)
			if cached {
				name = sc.name + "/cached-digest"
				cache = verify.NewCache(benchImages)
			}
			b.Run(name, func(b *testing.B) {
				v := newVerifierOpts(b, reg, verify.Options{Policies: []verify.PolicySpec{policy}, Cache: cache})
				c := context.Background()
				// Warm up: transport, token, referrers support (and the
				// cache, for the cached case).
				for _, img := range images {
					if vd := v.Verify(c, img); vd.Decision != verify.Allowed {
						b.Fatalf("warm-up: %s", vd.Summary())
					}
				}
				reg.Reset()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if vd := v.Verify(c, images[i%benchImages]); vd.Decision != verify.Allowed || vd.Cached != cached {
						b.Fatalf("verify: cached=%v %s", vd.Cached, vd.Summary())
					}
				}
				b.StopTimer()
				b.ReportMetric(float64(reg.Count("", ""))/float64(b.N), "requests/op")
				b.ReportMetric(float64(reg.Count("", "token")+reg.Count("", "ping"))/float64(b.N), "token+ping/op")
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "verifications/s")
			})
		}
	}
}
