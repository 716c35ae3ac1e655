package verify

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/shipwatch/shipwatch/imageref"
)

// fixedAnswers answers Harbor's artifact and vulnerability endpoints with
// fuzz bytes, without any network.
type fixedAnswers struct{ artifact, additions []byte }

func (f fixedAnswers) RoundTrip(r *http.Request) (*http.Response, error) {
	body := f.artifact
	if strings.HasSuffix(r.URL.Path, "/additions/vulnerabilities") {
		body = f.additions
	}
	return &http.Response{StatusCode: http.StatusOK, Body: io.NopCloser(bytes.NewReader(body)), Header: http.Header{}, Request: r}, nil
}

type anonymous struct{}

func (anonymous) Resolve(authn.Resource) (authn.Authenticator, error) { return authn.Anonymous, nil }

// FuzzHarborScan: Harbor's scan overview and vulnerability answers are
// outside input. Whatever they hold, the client must not panic, and a scan
// it reports must have an end time (its age is checked) and only known
// severities.
func FuzzHarborScan(f *testing.F) {
	f.Add([]byte(`{"digest":"sha256:1","scan_overview":{"application/vnd.security.vulnerability.report; version=1.1":{"scan_status":"Success","severity":"High","end_time":"2026-11-01T00:00:00Z","summary":{"total":2,"summary":{"High":1,"Low":1}},"scanner":{"name":"Trivy","version":"0.58"}}}}`),
		[]byte(`{"application/vnd.security.vulnerability.report; version=1.1":{"vulnerabilities":[{"id":"CVE-2024-1","package":"libx","severity":"High"}]}}`))
	f.Add([]byte(`{"scan_overview":{"a":{"scan_status":"Success"}}}`), []byte(`{}`))
	f.Add([]byte(`{"scan_overview":{"a":{"scan_status":"Error","end_time":"2026-11-01T00:00:00Z"}}}`), []byte(`null`))
	f.Add([]byte(`{"scan_overview":null}`), []byte(`[]`))
	image := imageref.MustParse("harbor.example/project/app:1.0@sha256:6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3b")
	known := map[string]bool{SeverityNone: true, SeverityLow: true, SeverityMedium: true, SeverityHigh: true, SeverityCritical: true, SeverityUnknown: true}
	f.Fuzz(func(t *testing.T, artifact, additions []byte) {
		h := NewHarborScans("https://harbor.example", anonymous{}, fixedAnswers{artifact, additions})
		rep, err := h.LatestScan(context.Background(), image)
		if err != nil || rep == nil {
			return
		}
		if rep.FinishedAt.IsZero() {
			t.Fatalf("scan without an end time accepted: %+v", rep)
		}
		for sev := range rep.Counts {
			if !known[sev] {
				t.Fatalf("count under unknown severity %q", sev)
			}
		}
		for _, v := range rep.Vulnerabilities {
			if !known[v.Severity] {
				t.Fatalf("vulnerability %s with unknown severity %q", v.ID, v.Severity)
			}
		}
	})
}
