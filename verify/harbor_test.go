package verify_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/shipwatch/shipwatch/imageref"
	"github.com/shipwatch/shipwatch/internal/testenv"
	"github.com/shipwatch/shipwatch/verify"
	"github.com/shipwatch/shipwatch/verify/sigtest"
)

// fakeHarbor speaks the part of Harbor's v2.0 API that scan verification
// uses: GET /api/v2.0/projects/{p}/repositories/{r}/artifacts/{ref}
// ?with_scan_overview=true and .../additions/vulnerabilities, with basic
// auth. Repository names with slashes arrive URL-encoded twice.
type fakeHarbor struct {
	harborState
	mu       sync.Mutex
	requests []string
}

// harborState is what the fake Harbor knows.
type harborState struct {
	user   string
	pass   string
	status string // scan_status
	end    time.Time
	vulns  []map[string]string
	fail   int // HTTP status to answer with, 0 for normal
}

func (h *fakeHarbor) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.requests = append(h.requests, r.URL.EscapedPath())
	if h.fail != 0 {
		w.WriteHeader(h.fail)
		return
	}
	if u, p, ok := r.BasicAuth(); !ok || u != h.user || p != h.pass {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"errors":[{"code":"UNAUTHORIZED","message":"unauthorized: ` + p + `"}]}`))
		return
	}
	if r.Header.Get("X-Accept-Vulnerabilities") == "" {
		http.Error(w, "missing X-Accept-Vulnerabilities", http.StatusBadRequest)
		return
	}
	const prefix = "/api/v2.0/projects/library/repositories/team%252Fapp/artifacts/"
	path := r.URL.EscapedPath()
	if !strings.HasPrefix(path, prefix) {
		http.NotFound(w, r)
		return
	}
	rest := strings.TrimPrefix(path, prefix)
	digest, addition, _ := strings.Cut(rest, "/")
	const mime = "application/vnd.security.vulnerability.report; version=1.1"
	w.Header().Set("Content-Type", "application/json")
	switch {
	case addition == "" && r.URL.Query().Get("with_scan_overview") == "true":
		counts := map[string]int{}
		severity := "None"
		for _, v := range h.vulns {
			counts[v["severity"]]++
			severity = v["severity"]
		}
		_ = json.NewEncoder(w).Encode(map[string]any{
			"digest": digest,
			"scan_overview": map[string]any{mime: map[string]any{
				"report_id":        "r1",
				"scan_status":      h.status,
				"severity":         severity,
				"duration":         12,
				"summary":          map[string]any{"total": len(h.vulns), "fixable": 0, "summary": counts},
				"start_time":       h.end.Add(-12 * time.Second).Format(time.RFC3339),
				"end_time":         h.end.Format(time.RFC3339),
				"complete_percent": 100,
				"scanner":          map[string]string{"name": "Trivy", "vendor": "Aqua Security", "version": "v0.58.0"},
			}},
		})
	case addition == "additions/vulnerabilities":
		_ = json.NewEncoder(w).Encode(map[string]any{mime: map[string]any{
			"generated_at":    h.end.Format(time.RFC3339),
			"severity":        "High",
			"vulnerabilities": h.vulns,
		}})
	default:
		http.NotFound(w, r)
	}
}

// hostKeychain answers the Harbor host with basic credentials and the
// registry with its own.
type hostKeychain struct {
	harborHost string
	harbor     authn.Authenticator
	registry   authn.Authenticator
}

func (k hostKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if r.RegistryStr() == k.harborHost {
		return k.harbor, nil
	}
	return k.registry, nil
}

func TestHarborScanSource(t *testing.T) {
	key := sigtest.MustKey(t, "")
	now := time.Now()
	tests := []struct {
		name    string
		harbor  harborState
		creds   string // password the agent has
		spec    verify.ScanSpec
		want    verify.Decision
		frag    string
		worst   string
		fetches int // Harbor requests expected
	}{
		{"clean scan", harborState{status: "Success", end: now.Add(-time.Hour)}, "pw", verify.ScanSpec{}, verify.Allowed, "scanned by Trivy v0.58.0", "none", 1},
		{"critical", harborState{status: "Success", end: now.Add(-time.Hour), vulns: []map[string]string{{"id": "CVE-1", "severity": "Critical"}, {"id": "CVE-2", "severity": "High"}}}, "pw", verify.ScanSpec{MaxSeverity: "high"}, verify.Blocked, "1 critical, 1 high; worst critical exceeds maxSeverity high", "critical", 1},
		{"critical ignored", harborState{status: "Success", end: now.Add(-time.Hour), vulns: []map[string]string{{"id": "CVE-1", "severity": "Critical"}, {"id": "CVE-2", "severity": "High"}}}, "pw", verify.ScanSpec{MaxSeverity: "high", IgnoreCVEs: []string{"CVE-1"}}, verify.Allowed, "ignored CVE-1", "high", 2},
		{"scan still running, wait", harborState{status: "Running", end: now}, "pw", verify.ScanSpec{Missing: "wait"}, verify.Undecided, "Harbor has no finished vulnerability scan", "", 1},
		{"scan too old", harborState{status: "Success", end: now.Add(-10 * 24 * time.Hour)}, "pw", verify.ScanSpec{}, verify.Blocked, "older than maxAge", "none", 1},
		{"wrong credentials", harborState{status: "Success", end: now}, "wrong-password", verify.ScanSpec{}, verify.Undecided, "check the credentials for Harbor", "", 1},
		{"harbor down", harborState{fail: http.StatusBadGateway}, "pw", verify.ScanSpec{}, verify.Undecided, "status 502", "", 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := &fakeHarbor{harborState: tc.harbor}
			h.user, h.pass = "robot$shipwatch", "pw"
			srv := httptest.NewServer(h)
			t.Cleanup(srv.Close)
			reg := testenv.NewRegistry(t, testenv.WithReferrersAPI())
			img := pushRandom(t, reg, "library/team/app:1.0")
			sigtest.MustSign(t, reg, digestRef(img), key, sigtest.Bundle)
			spec := tc.spec
			spec.Source, spec.HarborURL = "harbor", srv.URL
			p := imagePolicy(reg, keyAuthority("release", key))
			p.Scan = &spec
			kc := hostKeychain{
				harborHost: strings.TrimPrefix(srv.URL, "http://"),
				harbor:     &authn.Basic{Username: "robot$shipwatch", Password: tc.creds},
				registry:   reg.Auth(),
			}
			v := newVerifierOpts(t, reg, verify.Options{Policies: []verify.PolicySpec{p}, Keychain: kc, Now: func() time.Time { return now }})
			vd := v.Verify(ctx(t), img)
			wantDecision(t, vd, tc.want, tc.frag)
			if strings.Contains(vd.Summary(), tc.creds) || strings.Contains(vd.Summary(), "robot$") {
				t.Errorf("verdict leaks credentials: %s", vd.Summary())
			}
			if tc.worst != "" && (vd.Scan == nil || vd.Scan.Worst != tc.worst || vd.Scan.Source != "harbor") {
				t.Errorf("scan summary: got %+v, want source harbor, worst %s", vd.Scan, tc.worst)
			}
			h.mu.Lock()
			defer h.mu.Unlock()
			if len(h.requests) != tc.fetches {
				t.Errorf("harbor requests: got %v, want %d", h.requests, tc.fetches)
			}
		})
	}
}

// TestHarborScansSource uses the exported ScanSource directly.
func TestHarborScansSource(t *testing.T) {
	h := &fakeHarbor{harborState: harborState{user: "u", pass: "p", status: "Success", end: time.Now().Add(-time.Minute), vulns: []map[string]string{{"id": "CVE-9", "severity": "Medium"}}}}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	var src verify.ScanSource = verify.NewHarborScans(srv.URL, staticKeychain{&authn.Basic{Username: "u", Password: "p"}}, nil)
	img := imageref.MustParse("harbor.example/library/team/app@sha256:" + strings.Repeat("a", 64))
	rep, err := src.LatestScan(ctx(t), img)
	if err != nil {
		t.Fatal(err)
	}
	if rep == nil || rep.Counts["medium"] != 1 || rep.Scanner != "Trivy v0.58.0" {
		t.Fatalf("report: got %+v, want 1 medium from Trivy v0.58.0", rep)
	}
	rep, err = src.LatestScan(ctx(t), imageref.MustParse("harbor.example/library/other@sha256:"+strings.Repeat("a", 64)))
	if err != nil || rep != nil {
		t.Fatalf("unknown artifact: got %+v, %v, want no report and no error", rep, err)
	}
}
