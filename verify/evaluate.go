package verify

import (
	"fmt"
	"strings"
	"time"
)

// ruleResult is the outcome of one rule: ok, or failed; a failure with wait
// set means "not yet" (undecided) rather than "no" (blocked).
type ruleResult struct {
	ok     bool
	wait   bool
	msg    string
	signer string
	scan   *ScanSummary
}

// verdict evaluates the policy's rules on the evidence. It is pure: the
// clock is now, nothing is fetched (so cached evidence gets the same
// evaluation, scan age included).
func (v *Verifier) verdict(base Verdict, p *compiledPolicy, set *evidenceSet, now time.Time) Verdict {
	vd := base
	vd.Reasons = append([]Reason(nil), base.Reasons...)
	if p.allowUnsigned {
		vd.Reasons = append(vd.Reasons, Reason{Rule: RuleSignature, OK: true, Message: "not required: policy " + p.name + " allows unsigned images"})
	}
	allOK, anyBlock := true, false
	for i, r := range p.rules {
		res := evalRule(p, r, i, set, now)
		if res.ok && r.kind == kindScan && !r.scan.harbor && set.unreachable != nil {
			// A newer scan may sit where the registry did not answer: the
			// newest scan is unknown, so the scan rule cannot pass.
			res.ok, res.wait = false, true
			res.msg += "; a newer scan may exist where the registry did not answer"
		}
		if !res.ok && len(set.platforms) > 0 {
			res = evalPlatforms(p, r, i, set, res, now)
		} else if !res.ok && set.platformsNote != "" {
			res.msg += "; per-platform evidence not used: " + set.platformsNote
		}
		if !res.ok {
			allOK = false
			if !res.wait {
				anyBlock = true
			}
			if set.unreachable != nil {
				res.msg += fmt.Sprintf(" (could not decide: %v; retry later)", set.unreachable)
			}
		}
		if res.signer != "" && vd.Signer == "" {
			vd.Signer = res.signer
		}
		if res.scan != nil {
			vd.Scan = res.scan
		}
		vd.Reasons = append(vd.Reasons, Reason{Rule: r.name, OK: res.ok, Message: res.msg})
	}
	switch {
	case allOK:
		vd.Decision = Allowed
	case set.unreachable != nil:
		vd.Decision = Undecided
	case anyBlock:
		vd.Decision = Blocked
	default:
		vd.Decision = Undecided
	}
	return vd
}

func evalRule(p *compiledPolicy, r *rule, i int, set *evidenceSet, now time.Time) ruleResult {
	switch r.kind {
	case kindScan:
		return evalScan(r, i, set, now)
	case kindProvenance:
		for _, e := range set.byRule[i] {
			if e.builderID == r.builderID {
				return ruleResult{ok: true, msg: fmt.Sprintf("built by %s, attested by %s (%s), %s", e.builderID, e.authority, e.identity, e.source)}
			}
		}
		if len(set.byRule[i]) > 0 {
			e := set.byRule[i][0]
			return ruleResult{msg: fmt.Sprintf("provenance attested by %s names builder %s, want %s", e.authority, printable(e.builderID), r.builderID)}
		}
		return ruleResult{msg: missing(fmt.Sprintf("no SLSA v1 provenance of %s from a trusted authority (%s)", set.digest, r.authorityNames()), r, i, set)}
	}
	if ev := set.byRule[i]; len(ev) > 0 {
		e := ev[0]
		what := "signed"
		if r.kind == kindAttestation {
			what = "attested"
		}
		res := ruleResult{ok: true, msg: fmt.Sprintf("%s by %s (%s), %s", what, e.authority, e.identity, e.source)}
		if r.kind == kindSignature {
			res.signer = fmt.Sprintf("%s (%s)", e.authority, e.identity)
		}
		return res
	}
	what := "signature"
	if r.kind == kindAttestation {
		what = fmt.Sprintf("%q attestation", r.types[0])
	}
	return ruleResult{msg: missing(fmt.Sprintf("no %s of %s from a trusted authority (%s)", what, set.digest, r.authorityNames()), r, i, set)}
}

// missing adds to a "no evidence" message why what was found did not count.
func missing(msg string, r *rule, i int, set *evidenceSet) string {
	var details []string
	details = append(details, set.rejected[i]...)
	details = append(details, set.invalid...)
	if len(details) == 0 {
		return msg + ": none found"
	}
	if len(details) > 3 {
		details = append(details[:3], fmt.Sprintf("%d more", len(details)-3))
	}
	return msg + ": " + strings.Join(details, "; ")
}

func evalScan(r *rule, i int, set *evidenceSet, now time.Time) ruleResult {
	sp := r.scan
	var rep *ScanReport
	var summary *ScanSummary
	if sp.harbor {
		if set.harbor != nil {
			rep = set.harbor
			summary = sp.summarize(rep, "harbor", "")
		}
	} else {
		var best *evidence
		for k := range set.byRule[i] {
			e := &set.byRule[i][k]
			if best == nil || e.scan.FinishedAt.After(best.scan.FinishedAt) {
				best = e
			}
		}
		if best != nil {
			rep = best.scan
			summary = sp.summarize(rep, "attestation", best.authority)
		}
	}
	if rep == nil {
		msg := fmt.Sprintf("no vulnerability scan of %s from a trusted scanner (%s)", set.digest, r.authorityNames())
		if sp.harbor {
			msg = fmt.Sprintf("Harbor has no finished vulnerability scan of %s", set.digest)
		}
		if sp.wait {
			return ruleResult{wait: true, msg: missing(msg, r, i, set) + "; waiting for one (missing: wait)"}
		}
		return ruleResult{msg: missing(msg, r, i, set)}
	}
	age := now.Sub(rep.FinishedAt)
	head := fmt.Sprintf("scanned by %s at %s", summary.Scanner, summary.FinishedAt.Format(time.RFC3339))
	if age > sp.maxAge {
		msg := fmt.Sprintf("%s, %s ago: older than maxAge %s", head, age.Round(time.Minute), sp.maxAge)
		return ruleResult{wait: sp.wait, msg: msg, scan: summary}
	}
	if severityRank[summary.Worst] > severityRank[sp.maxSeverity] {
		return ruleResult{msg: fmt.Sprintf("%s: %s; worst %s exceeds maxSeverity %s", head, countsText(summary.Counts), summary.Worst, sp.maxSeverity), scan: summary}
	}
	msg := fmt.Sprintf("%s: %s (maxSeverity %s)", head, countsText(summary.Counts), sp.maxSeverity)
	if len(summary.Ignored) > 0 {
		msg += fmt.Sprintf("; ignored %s", strings.Join(summary.Ignored, ", "))
	}
	return ruleResult{ok: true, msg: msg, scan: summary}
}

// evalPlatforms accepts a rule unmet on the index when every platform that
// runs meets it on its own manifest.
func evalPlatforms(p *compiledPolicy, r *rule, i int, set *evidenceSet, onIndex ruleResult, now time.Time) ruleResult {
	var oks, fails []string
	res := ruleResult{ok: true}
	for _, pe := range set.platforms {
		if pe.set == nil {
			res.ok = false
			fails = append(fails, pe.platform+": the index has no manifest for it")
			continue
		}
		pr := evalRule(p, r, i, pe.set, now)
		if !pr.ok {
			res.ok = false
			res.wait = res.wait || pr.wait
			fails = append(fails, pe.platform+": "+pr.msg)
			continue
		}
		oks = append(oks, pe.platform+" ("+pe.digest+"): "+pr.msg)
		if res.signer == "" {
			res.signer = pr.signer
		}
		if pr.scan != nil && (res.scan == nil || severityRank[pr.scan.Worst] > severityRank[res.scan.Worst]) {
			res.scan = pr.scan
		}
	}
	if res.ok {
		res.msg = "index has none; every platform that runs does: " + strings.Join(oks, "; ")
		return res
	}
	onIndex.wait = onIndex.wait && res.wait
	onIndex.msg += "; per platform: " + strings.Join(fails, "; ")
	return onIndex
}
