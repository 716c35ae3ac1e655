package sigtest

import (
	"context"
	"strings"
	"time"
)

// Vuln is one finding of a test scan.
type Vuln struct {
	ID       string
	Severity string // as the scanner writes it: "CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN"
}

// Scan is a vulnerability scan to attest.
type Scan struct {
	// Scanner is the scanner's URI (default "pkg:github/aquasecurity/trivy@v0.58.0").
	Scanner    string
	FinishedAt time.Time
	Vulns      []Vuln
}

func (s Scan) scanner() string {
	if s.Scanner == "" {
		return "pkg:github/aquasecurity/trivy@v0.58.0"
	}
	return s.Scanner
}

// VulnPredicate is the cosign vulnerability predicate
// (https://cosign.sigstore.dev/attestation/vuln/v1) that
// "trivy --format cosign-vuln" writes: scanner.result is Trivy JSON.
func VulnPredicate(s Scan) map[string]any {
	vulns := make([]any, 0, len(s.Vulns))
	for _, v := range s.Vulns {
		vulns = append(vulns, map[string]any{
			"VulnerabilityID":  v.ID,
			"PkgName":          "libtest",
			"InstalledVersion": "1.0.0",
			"Severity":         v.Severity,
		})
	}
	started := s.FinishedAt.Add(-30 * time.Second)
	return map[string]any{
		"invocation": map[string]any{"parameters": nil, "uri": "", "event_id": "", "builder.id": ""},
		"scanner": map[string]any{
			"uri":     s.scanner(),
			"version": "0.58.0",
			"db":      map[string]any{"uri": "", "version": ""},
			"result": map[string]any{
				"SchemaVersion": 2,
				"ArtifactName":  "test",
				"ArtifactType":  "container_image",
				"Results": []any{map[string]any{
					"Target":          "test (alpine 3.20)",
					"Class":           "os-pkgs",
					"Type":            "alpine",
					"Vulnerabilities": vulns,
				}},
			},
		},
		"metadata": map[string]any{
			"scanStartedOn":  started.UTC().Format(time.RFC3339),
			"scanFinishedOn": s.FinishedAt.UTC().Format(time.RFC3339),
		},
	}
}

// VulnsV02Predicate is the in-toto vulnerabilities predicate v0.2
// (https://in-toto.io/attestation/vulns/v0.2).
func VulnsV02Predicate(s Scan) map[string]any {
	result := make([]any, 0, len(s.Vulns))
	for _, v := range s.Vulns {
		result = append(result, map[string]any{
			"id":       v.ID,
			"severity": []any{map[string]string{"method": "nvd", "score": strings.ToLower(v.Severity)}},
		})
	}
	return map[string]any{
		"scanner": map[string]any{
			"uri":     s.scanner(),
			"version": "0.58.0",
			"db":      map[string]any{"uri": "", "version": "", "lastUpdate": s.FinishedAt.UTC().Format(time.RFC3339)},
			"result":  result,
		},
		"metadata": map[string]any{
			"scanStartedOn":  s.FinishedAt.Add(-30 * time.Second).UTC().Format(time.RFC3339),
			"scanFinishedOn": s.FinishedAt.UTC().Format(time.RFC3339),
		},
	}
}

// ProvenancePredicate is a minimal SLSA v1 provenance predicate naming the
// builder.
func ProvenancePredicate(builderID string) map[string]any {
	return map[string]any{
		"buildDefinition": map[string]any{
			"buildType":          "https://actions.github.io/buildtypes/workflow/v1",
			"externalParameters": map[string]any{"workflow": map[string]string{"ref": "refs/tags/v1.0.0"}},
		},
		"runDetails": map[string]any{
			"builder":  map[string]any{"id": builderID},
			"metadata": map[string]any{"invocationId": "1"},
		},
	}
}

// AttestVuln attests a cosign vulnerability scan record of ref.
func AttestVuln(ctx context.Context, reg Registry, ref string, s Signer, f Format, scan Scan) error {
	return Attest(ctx, reg, ref, s, f, PredicateVulnCosign, VulnPredicate(scan))
}
