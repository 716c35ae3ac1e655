// Package verdict holds what a verification decides, as plain data: the
// agent reads verdicts without linking the verifier (sigstore-go).
package verdict

import (
	"strings"
	"time"
)

// Decision is the outcome of verifying one digest.
type Decision string

// The three outcomes of a verification (design rule 2). Blocked and
// Undecided both keep the image from running; they differ in what happens
// next.
const (
	// Allowed: every rule of the policy passed.
	Allowed Decision = "allowed"
	// Blocked: decided no. The digest stays blocked until it or the policy
	// changes.
	Blocked Decision = "blocked"
	// Undecided: could not decide (registry or trust material unreachable,
	// scan not there yet with missing: wait). Retry later; never deploy.
	Undecided Decision = "undecided"
)

// Policy modes.
const (
	ModeEnforce = "enforce"
	ModeWarn    = "warn"
)

// Rule names used in Reason.Rule.
const (
	RuleImage      = "image"
	RulePolicy     = "policy"
	RuleSignature  = "signature"
	RuleScan       = "scan"
	RuleProvenance = "provenance"
	// RuleAttestationPrefix is followed by the predicate type:
	// "attestation https://example.com/test/v1".
	RuleAttestationPrefix = "attestation "
)

// Verdict is the result of verifying one image digest. Its JSON shape is
// stable: shipwatch verify --output json prints it.
type Verdict struct {
	// Image is the repo@digest that was verified.
	Image    string   `json:"image"`
	Decision Decision `json:"decision"`
	// Policy is the name of the policy that matched ("" when none did).
	Policy string `json:"policy"`
	// Mode is the policy's mode ("enforce" or "warn").
	Mode string `json:"mode"`
	// Reasons has one entry per rule: signature, attestation <type>, scan,
	// provenance (or image/policy when verification could not start).
	Reasons []Reason `json:"reasons"`
	// Signer is the authority that signed the image and its identity
	// ("release-key (key sha256:…)", "ci (subject … issuer …)").
	Signer string `json:"signer,omitempty"`
	// Scan summarizes the scan that was evaluated.
	Scan *ScanSummary `json:"scan,omitempty"`
	// Cached is true when the cryptographic evidence came from the cache
	// (zero registry requests).
	Cached bool `json:"cached"`
}

// Reason is the outcome of one rule.
type Reason struct {
	Rule    string `json:"rule"`
	OK      bool   `json:"ok"`
	Message string `json:"message"`
}

// ScanSummary describes the vulnerability scan a verdict used.
type ScanSummary struct {
	// Source is "attestation" or "harbor".
	Source string `json:"source"`
	// Scanner is the scanner's URI or name ("pkg:github/aquasecurity/trivy@v0.50.0").
	Scanner string `json:"scanner"`
	// Authority is the trusted scanner authority that signed the scan.
	Authority string `json:"authority,omitempty"`
	// FinishedAt is when the scan finished.
	FinishedAt time.Time `json:"finishedAt"`
	// Counts are the vulnerabilities by severity ("critical", "high",
	// "medium", "low", "unknown"), ignored CVEs excluded.
	Counts map[string]int `json:"counts"`
	// Worst is the highest severity counted ("none" when clean).
	Worst string `json:"worst"`
	// Ignored lists ignored CVE ids that the scan reported.
	Ignored []string `json:"ignored,omitempty"`
}

// Deployable reports whether the verdict lets the image run: an allowed
// verdict, or a blocked one of a policy in warn mode (which reports but never
// blocks). Undecided is never deployable, not even in warn mode: nothing was
// checked.
func (v Verdict) Deployable() bool {
	return v.Decision == Allowed || (v.Decision == Blocked && v.Mode == ModeWarn)
}

// Summary is a one-line description for logs and plans: the decision and
// the messages of the rules that failed (or all of them when allowed).
func (v Verdict) Summary() string {
	var msgs []string
	for _, r := range v.Reasons {
		if !r.OK || v.Decision == Allowed {
			msgs = append(msgs, r.Rule+": "+r.Message)
		}
	}
	s := string(v.Decision)
	if v.Mode == ModeWarn && v.Decision == Blocked {
		s += " (warn mode: not enforced)"
	}
	if len(msgs) > 0 {
		s += ": " + strings.Join(msgs, "; ")
	}
	return s
}
