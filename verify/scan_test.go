package verify_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shipwatch/shipwatch/internal/testenv"
	"github.com/shipwatch/shipwatch/verify"
	"github.com/shipwatch/shipwatch/verify/sigtest"
)

// clock is a settable Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestScanPolicy(t *testing.T) {
	release := sigtest.MustKey(t, "")
	trivy := sigtest.MustKey(t, "")
	untrusted := sigtest.MustKey(t, "")
	now := time.Now()
	clean := sigtest.Scan{FinishedAt: now.Add(-time.Hour)}
	critical := sigtest.Scan{FinishedAt: now.Add(-time.Hour), Vulns: []sigtest.Vuln{
		{ID: "CVE-2024-0001", Severity: "CRITICAL"}, {ID: "CVE-2024-0002", Severity: "HIGH"}, {ID: "CVE-2024-0002", Severity: "HIGH"},
	}}
	type attest struct {
		by     sigtest.Signer
		scan   sigtest.Scan
		intoto bool // in-toto vulns v0.2 instead of the cosign predicate
	}
	tests := []struct {
		name    string
		scans   []attest
		spec    verify.ScanSpec
		want    verify.Decision
		frag    string
		counts  map[string]int // when set, the verdict's scan counts
		ignored []string
	}{
		{"clean scan", []attest{{by: trivy, scan: clean}}, verify.ScanSpec{}, verify.Allowed, "no vulnerabilities (maxSeverity none)", map[string]int{"critical": 0, "high": 0}, nil},
		{"critical above maxSeverity high", []attest{{by: trivy, scan: critical}}, verify.ScanSpec{MaxSeverity: "high"}, verify.Blocked, "1 critical, 1 high; worst critical exceeds maxSeverity high", map[string]int{"critical": 1, "high": 1}, nil},
		{"critical allowed by maxSeverity critical", []attest{{by: trivy, scan: critical}}, verify.ScanSpec{MaxSeverity: "critical"}, verify.Allowed, "1 critical, 1 high", nil, nil},
		{"ignored CVE", []attest{{by: trivy, scan: critical}}, verify.ScanSpec{MaxSeverity: "high", IgnoreCVEs: []string{"cve-2024-0001"}}, verify.Allowed, "ignored CVE-2024-0001", map[string]int{"critical": 0, "high": 1}, []string{"CVE-2024-0001"}},
		{"in-toto vulns v0.2", []attest{{by: trivy, scan: critical, intoto: true}}, verify.ScanSpec{MaxSeverity: "medium"}, verify.Blocked, "worst critical exceeds maxSeverity medium", nil, nil},
		{"scan too old", []attest{{by: trivy, scan: sigtest.Scan{FinishedAt: now.Add(-8 * 24 * time.Hour)}}}, verify.ScanSpec{}, verify.Blocked, "older than maxAge 168h0m0s", nil, nil},
		{"scan too old, missing wait", []attest{{by: trivy, scan: sigtest.Scan{FinishedAt: now.Add(-3 * time.Hour)}}}, verify.ScanSpec{MaxAge: 2 * time.Hour, Missing: "wait"}, verify.Undecided, "older than maxAge 2h0m0s", nil, nil},
		{"no scan", nil, verify.ScanSpec{}, verify.Blocked, "no vulnerability scan", nil, nil},
		{"no scan, missing wait", nil, verify.ScanSpec{Missing: "wait"}, verify.Undecided, "waiting for one", nil, nil},
		{"scan signed by an untrusted key", []attest{{by: untrusted, scan: clean}}, verify.ScanSpec{}, verify.Blocked, "rejected", nil, nil},
		{"scan signed by the release key, not the scanner", []attest{{by: release, scan: clean}}, verify.ScanSpec{}, verify.Blocked, "rejected", nil, nil},
		{"newest scan wins (clean after critical)", []attest{
			{by: trivy, scan: sigtest.Scan{FinishedAt: now.Add(-48 * time.Hour), Vulns: critical.Vulns}},
			{by: trivy, scan: clean},
		}, verify.ScanSpec{}, verify.Allowed, "no vulnerabilities", nil, nil},
		{"newest scan wins (critical after clean)", []attest{
			{by: trivy, scan: sigtest.Scan{FinishedAt: now.Add(-48 * time.Hour)}},
			{by: trivy, scan: critical},
		}, verify.ScanSpec{}, verify.Blocked, "worst critical", nil, nil},
	}
	for _, tc := range tests {
		for _, format := range []sigtest.Format{sigtest.Bundle, sigtest.Legacy} {
			t.Run(tc.name+"/"+string(format), func(t *testing.T) {
				reg := testenv.NewRegistry(t, testenv.WithReferrersAPI())
				img := pushRandom(t, reg, "demo/app:1.0")
				sigtest.MustSign(t, reg, digestRef(img), release, format)
				for _, a := range tc.scans {
					pt, pred := sigtest.PredicateVulnCosign, sigtest.VulnPredicate(a.scan)
					if a.intoto {
						pt, pred = sigtest.PredicateVulnsInToto, sigtest.VulnsV02Predicate(a.scan)
					}
					sigtest.MustAttest(t, reg, digestRef(img), a.by, format, pt, pred)
				}
				spec := tc.spec
				spec.Authorities = []verify.AuthoritySpec{keyAuthority("trivy", trivy)}
				p := imagePolicy(reg, keyAuthority("release", release))
				p.Scan = &spec
				v := newVerifierOpts(t, reg, verify.Options{Policies: []verify.PolicySpec{p}, Now: func() time.Time { return now }})
				vd := v.Verify(ctx(t), img)
				wantDecision(t, vd, tc.want, tc.frag)
				for sev, n := range tc.counts {
					if vd.Scan == nil || vd.Scan.Counts[sev] != n {
						t.Errorf("scan counts[%s]: got %+v, want %d", sev, vd.Scan, n)
					}
				}
				if tc.ignored != nil && (vd.Scan == nil || len(vd.Scan.Ignored) != len(tc.ignored) || vd.Scan.Ignored[0] != tc.ignored[0]) {
					t.Errorf("ignored: got %+v, want %v", vd.Scan, tc.ignored)
				}
			})
		}
	}
}

// TestScanAgeIsReevaluatedOnCachedEvidence checks that the cache keeps the
// cryptography, not the verdict: when the clock passes maxAge the cached
// scan no longer allows the image.
func TestScanAgeIsReevaluatedOnCachedEvidence(t *testing.T) {
	release := sigtest.MustKey(t, "")
	trivy := sigtest.MustKey(t, "")
	reg := testenv.NewRegistry(t, testenv.WithReferrersAPI())
	img := pushRandom(t, reg, "demo/app:1.0")
	sigtest.MustSign(t, reg, digestRef(img), release, sigtest.Bundle)
	c := &clock{t: time.Now()}
	if err := sigtest.AttestVuln(context.Background(), reg, digestRef(img), trivy, sigtest.Bundle, sigtest.Scan{FinishedAt: c.Now()}); err != nil {
		t.Fatal(err)
	}
	p := imagePolicy(reg, keyAuthority("release", release))
	p.Scan = &verify.ScanSpec{Authorities: []verify.AuthoritySpec{keyAuthority("trivy", trivy)}, MaxAge: 24 * time.Hour}
	v := newVerifierOpts(t, reg, verify.Options{Policies: []verify.PolicySpec{p}, Now: c.Now})

	wantDecision(t, v.Verify(ctx(t), img), verify.Allowed)
	reg.Reset()
	vd := v.Verify(ctx(t), img)
	wantDecision(t, vd, verify.Allowed)
	if !vd.Cached || reg.Count("", "") != 0 {
		t.Fatalf("second verification: got cached=%v and %d requests, want cached and 0", vd.Cached, reg.Count("", ""))
	}
	c.Add(25 * time.Hour)
	vd = v.Verify(ctx(t), img)
	wantDecision(t, vd, verify.Blocked, "older than maxAge 24h0m0s")
	if vd.Cached {
		t.Errorf("cached: got true for a verdict that looked again, want false")
	}
	// A fresh scan is found on the next pass.
	if err := sigtest.AttestVuln(context.Background(), reg, digestRef(img), trivy, sigtest.Bundle, sigtest.Scan{FinishedAt: c.Now()}); err != nil {
		t.Fatal(err)
	}
	wantDecision(t, v.Verify(ctx(t), img), verify.Allowed)
}

func TestAttestationAndProvenanceRules(t *testing.T) {
	release := sigtest.MustKey(t, "")
	qa := sigtest.MustKey(t, "")
	builder := sigtest.MustKey(t, "")
	const testResult = "https://example.com/test-result/v1"
	const wantBuilder = "https://github.com/actions/runner/github-hosted"
	tests := []struct {
		name  string
		setup func(t *testing.T, reg *testenv.Registry, ref string, f sigtest.Format)
		want  verify.Decision
		frag  string
	}{
		{"all present", func(t *testing.T, reg *testenv.Registry, ref string, f sigtest.Format) {
			sigtest.MustAttest(t, reg, ref, qa, f, testResult, map[string]any{"passed": true})
			sigtest.MustAttest(t, reg, ref, builder, f, sigtest.PredicateSLSAv1, sigtest.ProvenancePredicate(wantBuilder))
		}, verify.Allowed, "built by " + wantBuilder},
		{"attestation missing", func(t *testing.T, reg *testenv.Registry, ref string, f sigtest.Format) {
			sigtest.MustAttest(t, reg, ref, builder, f, sigtest.PredicateSLSAv1, sigtest.ProvenancePredicate(wantBuilder))
		}, verify.Blocked, `no "` + testResult + `" attestation`},
		{"attestation by the wrong authority", func(t *testing.T, reg *testenv.Registry, ref string, f sigtest.Format) {
			sigtest.MustAttest(t, reg, ref, release, f, testResult, map[string]any{"passed": true})
			sigtest.MustAttest(t, reg, ref, builder, f, sigtest.PredicateSLSAv1, sigtest.ProvenancePredicate(wantBuilder))
		}, verify.Blocked, "rejected"},
		{"provenance from another builder", func(t *testing.T, reg *testenv.Registry, ref string, f sigtest.Format) {
			sigtest.MustAttest(t, reg, ref, qa, f, testResult, map[string]any{"passed": true})
			sigtest.MustAttest(t, reg, ref, builder, f, sigtest.PredicateSLSAv1, sigtest.ProvenancePredicate("https://evil.example/builder"))
		}, verify.Blocked, "names builder https://evil.example/builder, want " + wantBuilder},
		{"provenance missing", func(t *testing.T, reg *testenv.Registry, ref string, f sigtest.Format) {
			sigtest.MustAttest(t, reg, ref, qa, f, testResult, map[string]any{"passed": true})
		}, verify.Blocked, "no SLSA v1 provenance"},
	}
	for _, tc := range tests {
		for _, format := range []sigtest.Format{sigtest.Bundle, sigtest.Legacy} {
			t.Run(tc.name+"/"+string(format), func(t *testing.T) {
				reg := testenv.NewRegistry(t)
				img := pushRandom(t, reg, "demo/app:1.0")
				sigtest.MustSign(t, reg, digestRef(img), release, format)
				tc.setup(t, reg, digestRef(img), format)
				p := imagePolicy(reg, keyAuthority("release", release))
				p.Attestations = []verify.AttestationSpec{{PredicateType: testResult, Authorities: []verify.AuthoritySpec{keyAuthority("qa", qa)}}}
				p.Provenance = &verify.ProvenanceSpec{BuilderID: wantBuilder, Authorities: []verify.AuthoritySpec{keyAuthority("builder", builder)}}
				vd := newVerifier(t, reg, p).Verify(ctx(t), img)
				wantDecision(t, vd, tc.want, tc.frag)
				if len(vd.Reasons) != 3 {
					t.Errorf("reasons: got %d (%+v), want 3 (signature, attestation, provenance)", len(vd.Reasons), vd.Reasons)
				}
			})
		}
	}
}

// TestScanWithPartialOutageIsUndecided: when part of the registry does not
// answer, the scan found elsewhere may not be the newest: undecided.
func TestScanWithPartialOutageIsUndecided(t *testing.T) {
	release := sigtest.MustKey(t, "")
	trivy := sigtest.MustKey(t, "")
	reg := testenv.NewRegistry(t, testenv.WithReferrersAPI())
	img := pushRandom(t, reg, "demo/app:1.0")
	sigtest.MustSign(t, reg, digestRef(img), release, sigtest.Legacy)
	if err := sigtest.AttestVuln(context.Background(), reg, digestRef(img), trivy, sigtest.Legacy, sigtest.Scan{FinishedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	reg.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.Contains(r.URL.Path, "/referrers/") {
			w.WriteHeader(http.StatusServiceUnavailable)
			return true
		}
		return false
	})
	p := imagePolicy(reg, keyAuthority("release", release))
	p.Scan = &verify.ScanSpec{Authorities: []verify.AuthoritySpec{keyAuthority("trivy", trivy)}}
	vd := newVerifier(t, reg, p).Verify(ctx(t), img)
	wantDecision(t, vd, verify.Undecided, "a newer scan may exist", "status 503")
	// Without a scan rule the verified legacy signature is enough.
	p.Scan = nil
	wantDecision(t, newVerifier(t, reg, p).Verify(ctx(t), img), verify.Allowed, "signed by release")
}
