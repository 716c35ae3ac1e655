package verify

import "github.com/shipwatch/shipwatch/verify/verdict"

// The verdict types live in verify/verdict so that code which only reads
// verdicts (the pass, the agent) does not link sigstore-go; these names keep
// the verifier's API whole.
type (
	Decision    = verdict.Decision
	Verdict     = verdict.Verdict
	Reason      = verdict.Reason
	ScanSummary = verdict.ScanSummary
)

// Decisions, modes and rule names; see package verdict.
const (
	Allowed   = verdict.Allowed
	Blocked   = verdict.Blocked
	Undecided = verdict.Undecided

	ModeEnforce = verdict.ModeEnforce
	ModeWarn    = verdict.ModeWarn

	RuleImage             = verdict.RuleImage
	RulePolicy            = verdict.RulePolicy
	RuleSignature         = verdict.RuleSignature
	RuleScan              = verdict.RuleScan
	RuleProvenance        = verdict.RuleProvenance
	RuleAttestationPrefix = verdict.RuleAttestationPrefix
)
