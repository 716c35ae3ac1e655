package verify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/shipwatch/shipwatch/imageref"
)

// Severity levels, in increasing order. Unknown (a scanner could not rate
// the vulnerability) ranks as medium for maxSeverity: it may be anything
// above low.
const (
	SeverityNone     = "none"
	SeverityLow      = "low"
	SeverityMedium   = "medium"
	SeverityHigh     = "high"
	SeverityCritical = "critical"
	SeverityUnknown  = "unknown"
)

var severityRank = map[string]int{
	SeverityNone:     0,
	SeverityLow:      1,
	SeverityUnknown:  2,
	SeverityMedium:   2,
	SeverityHigh:     3,
	SeverityCritical: 4,
}

// countedSeverities are the keys of ScanSummary.Counts, worst first.
var countedSeverities = []string{SeverityCritical, SeverityHigh, SeverityMedium, SeverityLow, SeverityUnknown}

// normalizeSeverity maps a scanner's severity word or CVSS score onto the
// levels above ("CRITICAL", "Negligible", "7.5").
func normalizeSeverity(s string) string {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "critical":
		return SeverityCritical
	case "high", "important":
		return SeverityHigh
	case "medium", "moderate":
		return SeverityMedium
	case "low", "negligible", "minor":
		return SeverityLow
	case "none", "informational", "info":
		return SeverityNone
	}
	if f, err := strconv.ParseFloat(strings.TrimSpace(s), 64); err == nil {
		switch {
		case f >= 9:
			return SeverityCritical
		case f >= 7:
			return SeverityHigh
		case f >= 4:
			return SeverityMedium
		case f > 0:
			return SeverityLow
		case f == 0:
			return SeverityNone
		}
	}
	return SeverityUnknown
}

// worseSeverity returns the worse of two levels (unknown beats medium in a
// tie, so that it is reported).
func worseSeverity(a, b string) string {
	ra, rb := severityRank[a], severityRank[b]
	if rb > ra || (rb == ra && b == SeverityUnknown) {
		return b
	}
	return a
}

// Vulnerability is one finding of a scan.
type Vulnerability struct {
	ID       string
	Severity string // normalized: critical, high, medium, low, none, unknown
}

// ScanReport is one vulnerability scan of an image digest, from a signed
// attestation or a registry-side source.
type ScanReport struct {
	Scanner    string
	FinishedAt time.Time
	// Vulnerabilities lists findings by id. A source that only knows counts
	// leaves it empty and fills Counts.
	Vulnerabilities []Vulnerability
	// Counts by normalized severity, for sources without ids (used only
	// when Vulnerabilities is empty).
	Counts map[string]int
}

// ScanSource finds the newest vulnerability scan of an image digest outside
// the registry's attestations, such as Harbor's scan overview. A nil report
// with a nil error means no finished scan exists yet; an error means the
// source could not answer (the verdict is undecided).
type ScanSource interface {
	LatestScan(ctx context.Context, image imageref.Ref) (*ScanReport, error)
}

// parseVulnPredicate reads a vulnerability attestation predicate:
// https://cosign.sigstore.dev/attestation/vuln/v1 (with a Trivy or Grype JSON
// result, as trivy --format cosign-vuln writes) or
// https://in-toto.io/attestation/vulns/v0.2.
func parseVulnPredicate(predicateType string, raw json.RawMessage) (*ScanReport, error) {
	type scanner struct {
		URI     string          `json:"uri"`
		Version string          `json:"version"`
		Result  json.RawMessage `json:"result"`
	}
	var p struct {
		Scanner  *scanner  `json:"scanner"`
		Scanners []scanner `json:"scanners"` // the spec's spelling; tools write "scanner"
		Metadata struct {
			ScanStartedOn  string `json:"scanStartedOn"`
			ScanFinishedOn string `json:"scanFinishedOn"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, fmt.Errorf("vulnerability predicate: %w", err)
	}
	sc := p.Scanner
	if sc == nil && len(p.Scanners) == 1 {
		sc = &p.Scanners[0]
	}
	if sc == nil {
		return nil, errors.New("vulnerability predicate: no scanner")
	}
	finished := p.Metadata.ScanFinishedOn
	if finished == "" {
		return nil, errors.New("vulnerability predicate: no metadata.scanFinishedOn; the scan's age cannot be checked")
	}
	t, err := time.Parse(time.RFC3339Nano, finished)
	if err != nil {
		return nil, fmt.Errorf("vulnerability predicate: scanFinishedOn %q: %w", printable(finished), err)
	}
	if t.Before(time.Unix(0, 0)) {
		// Year 1 (a zero value written out) and the like: no scan ran
		// then, and a report without a real time has no age to check.
		return nil, fmt.Errorf("vulnerability predicate: scanFinishedOn %q is before 1970: not a time a scan finished", printable(finished))
	}
	rep := &ScanReport{Scanner: sc.URI, FinishedAt: t}
	if rep.Scanner == "" {
		rep.Scanner = "unnamed scanner"
	}
	if len(sc.Result) == 0 || string(sc.Result) == "null" {
		return nil, errors.New("vulnerability predicate: no scanner.result")
	}
	switch predicateType {
	case PredicateVulnsInToto:
		rep.Vulnerabilities, err = parseInTotoVulns(sc.Result)
	default:
		rep.Vulnerabilities, err = parseScannerResult(sc.Result)
	}
	if err != nil {
		return nil, fmt.Errorf("vulnerability predicate: %w", err)
	}
	return rep, nil
}

// parseInTotoVulns reads scanner.result of vulns v0.2: a list of
// {id, severity: [{method, score}]}. The worst rating counts.
func parseInTotoVulns(raw json.RawMessage) ([]Vulnerability, error) {
	var list []struct {
		ID       string `json:"id"`
		Severity []struct {
			Method string `json:"method"`
			Score  string `json:"score"`
		} `json:"severity"`
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("scanner.result: %w", err)
	}
	out := make([]Vulnerability, 0, len(list))
	for _, v := range list {
		sev := ""
		for _, s := range v.Severity {
			n := normalizeSeverity(s.Score)
			if sev == "" {
				sev = n
			} else {
				sev = worseSeverity(sev, n)
			}
		}
		if sev == "" {
			sev = SeverityUnknown
		}
		out = append(out, Vulnerability{ID: v.ID, Severity: sev})
	}
	return out, nil
}

// parseScannerResult reads the result object of a cosign vuln predicate:
// Trivy JSON (Results[].Vulnerabilities[]) or Grype JSON (matches[]). An
// empty object, or a result with neither, is rejected: a scan shipwatch
// cannot read must not pass as clean.
func parseScannerResult(raw json.RawMessage) ([]Vulnerability, error) {
	var r struct {
		SchemaVersion *int `json:"SchemaVersion"`
		Results       *[]struct {
			Vulnerabilities []struct {
				VulnerabilityID string `json:"VulnerabilityID"`
				Severity        string `json:"Severity"`
			} `json:"Vulnerabilities"`
		} `json:"Results"`
		Matches *[]struct {
			Vulnerability struct {
				ID       string `json:"id"`
				Severity string `json:"severity"`
			} `json:"vulnerability"`
		} `json:"matches"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("scanner.result: %w", err)
	}
	var out []Vulnerability
	switch {
	case r.Results != nil || r.SchemaVersion != nil:
		if r.Results != nil {
			for _, res := range *r.Results {
				for _, v := range res.Vulnerabilities {
					out = append(out, Vulnerability{ID: v.VulnerabilityID, Severity: normalizeSeverity(v.Severity)})
				}
			}
		}
	case r.Matches != nil:
		for _, m := range *r.Matches {
			out = append(out, Vulnerability{ID: m.Vulnerability.ID, Severity: normalizeSeverity(m.Vulnerability.Severity)})
		}
	default:
		return nil, errors.New("scanner.result is neither Trivy JSON (Results) nor Grype JSON (matches)")
	}
	return out, nil
}

// scanPolicy is a compiled ScanSpec.
type scanPolicy struct {
	maxSeverity string
	maxAge      time.Duration
	ignore      map[string]bool
	wait        bool
	harbor      bool
	harborURL   string
}

// summarize applies the ignore list and counts by severity.
func (sp *scanPolicy) summarize(rep *ScanReport, source, authority string) *ScanSummary {
	s := &ScanSummary{
		Source:     source,
		Scanner:    rep.Scanner,
		Authority:  authority,
		FinishedAt: rep.FinishedAt.UTC(),
		Counts:     map[string]int{},
		Worst:      SeverityNone,
	}
	for _, k := range countedSeverities {
		s.Counts[k] = 0
	}
	if len(rep.Vulnerabilities) == 0 && len(rep.Counts) > 0 {
		for sev, n := range rep.Counts {
			sev = normalizeSeverity(sev)
			if sev == SeverityNone || n <= 0 {
				continue
			}
			s.Counts[sev] += n
			s.Worst = worseSeverity(s.Worst, sev)
		}
		return s
	}
	ignored := map[string]bool{}
	// A CVE found in several packages is one vulnerability (its worst
	// rating counts); findings without an id count one each.
	byID := map[string]string{}
	for _, v := range rep.Vulnerabilities {
		if sp.ignore[strings.ToUpper(v.ID)] {
			ignored[v.ID] = true
			continue
		}
		if v.ID == "" {
			if v.Severity != SeverityNone {
				s.Counts[v.Severity]++
				s.Worst = worseSeverity(s.Worst, v.Severity)
			}
			continue
		}
		if prev, ok := byID[v.ID]; ok {
			byID[v.ID] = worseSeverity(prev, v.Severity)
		} else {
			byID[v.ID] = v.Severity
		}
	}
	for _, sev := range byID {
		if sev == SeverityNone {
			continue
		}
		s.Counts[sev]++
		s.Worst = worseSeverity(s.Worst, sev)
	}
	for id := range ignored {
		s.Ignored = append(s.Ignored, id)
	}
	sort.Strings(s.Ignored)
	return s
}

// countsText is "2 critical, 1 high" (or "no vulnerabilities").
func countsText(c map[string]int) string {
	var parts []string
	for _, k := range countedSeverities {
		if c[k] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", c[k], k))
		}
	}
	if len(parts) == 0 {
		return "no vulnerabilities"
	}
	return strings.Join(parts, ", ")
}
