package verify

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/shipwatch/shipwatch/imageref"
)

// Harbor's API (https://goharbor.io, api/v2.0/swagger.yaml) reports the
// vulnerability scans Harbor ran for an artifact.
const (
	harborAcceptReports = "application/vnd.security.vulnerability.report; version=1.1, application/vnd.scanner.adapter.vuln.report.harbor+json; version=1.0"
	maxHarborResponse   = 16 << 20
)

// HarborScans reads scans from a Harbor registry's API: the artifact's scan
// overview, and the vulnerability list when CVEs must be ignored. Credentials
// come from the keychain for Harbor's host, as for pulls.
type HarborScans struct {
	// BaseURL is Harbor's URL ("https://harbor.example.com"); empty means
	// https://<registry host of the image>.
	BaseURL string
	// IgnoreIDs makes LatestScan fetch the per-vulnerability list (needed to
	// drop ignored CVEs); without it the overview's counts are used.
	IgnoreIDs bool
	client    *harborClient
}

var _ ScanSource = (*HarborScans)(nil)

// NewHarborScans returns a Harbor scan source.
func NewHarborScans(baseURL string, kc authn.Keychain, rt http.RoundTripper) *HarborScans {
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	if rt == nil {
		rt = http.DefaultTransport
	}
	return &HarborScans{BaseURL: baseURL, client: &harborClient{keychain: kc, transport: rt}}
}

// LatestScan implements ScanSource.
func (h *HarborScans) LatestScan(ctx context.Context, image imageref.Ref) (*ScanReport, error) {
	return h.client.latest(ctx, h.BaseURL, image, h.IgnoreIDs)
}

type harborClient struct {
	keychain  authn.Keychain
	transport http.RoundTripper
}

// LatestScanAt is LatestScan against baseURL; withIDs also fetches the
// per-vulnerability list.
func (c *harborClient) LatestScanAt(ctx context.Context, baseURL string, image imageref.Ref, withIDs bool) (*ScanReport, error) {
	return c.latest(ctx, baseURL, image, withIDs)
}

// harborSummary is Harbor's NativeReportSummary.
type harborSummary struct {
	ReportID  string    `json:"report_id"`
	Status    string    `json:"scan_status"`
	Severity  string    `json:"severity"`
	StartTime time.Time `json:"start_time"`
	EndTime   time.Time `json:"end_time"`
	Summary   *struct {
		Total   int            `json:"total"`
		Fixable int            `json:"fixable"`
		Summary map[string]int `json:"summary"`
	} `json:"summary"`
	Scanner *struct {
		Name    string `json:"name"`
		Vendor  string `json:"vendor"`
		Version string `json:"version"`
	} `json:"scanner"`
}

func (c *harborClient) latest(ctx context.Context, baseURL string, image imageref.Ref, withIDs bool) (*ScanReport, error) {
	if baseURL == "" {
		baseURL = "https://" + image.Host()
	}
	project, repo, ok := strings.Cut(image.Path, "/")
	if !ok {
		return nil, &invalidError{fmt.Sprintf("harbor: repository %s has no project (want <project>/<repository>)", image.Path)}
	}
	// Harbor wants a repository name with slashes URL-encoded twice.
	artifact := fmt.Sprintf("%s/api/v2.0/projects/%s/repositories/%s/artifacts/%s",
		baseURL, url.PathEscape(project), url.PathEscape(url.PathEscape(repo)), image.Digest)
	var art struct {
		Digest       string                   `json:"digest"`
		ScanOverview map[string]harborSummary `json:"scan_overview"`
	}
	found, err := c.getJSON(ctx, artifact+"?with_scan_overview=true", &art)
	if err != nil || !found {
		return nil, err
	}
	var best *harborSummary
	for _, s := range art.ScanOverview {
		if !strings.EqualFold(s.Status, "Success") {
			continue
		}
		if best == nil || s.EndTime.After(best.EndTime) {
			s := s
			best = &s
		}
	}
	if best == nil {
		return nil, nil
	}
	rep := &ScanReport{Scanner: "harbor", FinishedAt: best.EndTime, Counts: map[string]int{}}
	if best.Scanner != nil {
		rep.Scanner = strings.TrimSpace(best.Scanner.Name + " " + best.Scanner.Version)
	}
	if rep.FinishedAt.IsZero() {
		return nil, &invalidError{"harbor: the scan of " + image.Digest + " has no end_time; its age cannot be checked"}
	}
	if best.Summary != nil {
		for sev, n := range best.Summary.Summary {
			rep.Counts[normalizeSeverity(sev)] += n
		}
	} else if sev := normalizeSeverity(best.Severity); sev != SeverityNone {
		rep.Counts[sev] = 1
	}
	if !withIDs {
		return rep, nil
	}
	var reports map[string]struct {
		Vulnerabilities []struct {
			ID       string `json:"id"`
			Package  string `json:"package"`
			Severity string `json:"severity"`
		} `json:"vulnerabilities"`
	}
	found, err = c.getJSON(ctx, artifact+"/additions/vulnerabilities", &reports)
	if err != nil {
		return nil, err
	}
	if !found {
		return rep, nil
	}
	for _, r := range reports {
		for _, v := range r.Vulnerabilities {
			rep.Vulnerabilities = append(rep.Vulnerabilities, Vulnerability{ID: v.ID, Severity: normalizeSeverity(v.Severity)})
		}
	}
	// A scan with findings by count but none listed stays on the counts.
	if len(rep.Vulnerabilities) == 0 {
		return rep, nil
	}
	rep.Counts = nil
	return rep, nil
}

// getJSON GETs u with the keychain's credentials for its host. found is
// false on 404.
func (c *harborClient) getJSON(ctx context.Context, u string, into any) (found bool, err error) {
	parsed, err := url.Parse(u)
	if err != nil {
		return false, &invalidError{"harbor URL: " + err.Error()}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return false, &invalidError{"harbor URL: " + err.Error()}
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("X-Accept-Vulnerabilities", harborAcceptReports)
	if reg, err := name.NewRegistry(parsed.Host); err == nil {
		auth, err := authn.Resolve(ctx, c.keychain, reg)
		if err != nil {
			return false, &UnreachableError{What: "harbor credentials for " + parsed.Host, Err: err}
		}
		cfg, err := auth.Authorization()
		if err != nil {
			return false, &UnreachableError{What: "harbor credentials for " + parsed.Host, Err: err}
		}
		if cfg.Username != "" || cfg.Password != "" {
			req.SetBasicAuth(cfg.Username, cfg.Password)
		}
	}
	what := "GET " + parsed.Host + parsed.Path
	resp, err := (&http.Client{Transport: c.transport, Timeout: time.Minute}).Do(req)
	if err != nil {
		return false, &UnreachableError{What: "harbor " + what, Err: err}
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return false, nil
	case resp.StatusCode != http.StatusOK:
		hint := ""
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
			hint = "; check the credentials for Harbor (docker login)"
		}
		return false, &UnreachableError{What: "harbor " + what, Err: fmt.Errorf("status %d %s%s", resp.StatusCode, http.StatusText(resp.StatusCode), hint)}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxHarborResponse+1))
	if err != nil {
		return false, &UnreachableError{What: "harbor " + what, Err: err}
	}
	if len(b) > maxHarborResponse {
		return false, &invalidError{fmt.Sprintf("harbor %s: response exceeds %d bytes", what, maxHarborResponse)}
	}
	if err := json.Unmarshal(b, into); err != nil {
		return false, &invalidError{fmt.Sprintf("harbor %s: %v", what, err)}
	}
	return true, nil
}
