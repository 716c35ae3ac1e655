package verify

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// defaultScanMaxAge is ScanSpec.MaxAge when unset.
const defaultScanMaxAge = 7 * 24 * time.Hour

type ruleKind int

const (
	kindSignature ruleKind = iota
	kindAttestation
	kindScan
	kindProvenance
)

// rule is one requirement of a policy: which evidence (predicate types)
// from which authorities satisfies it.
type rule struct {
	kind        ruleKind
	name        string // Reason.Rule
	types       []string
	authorities []*authority
	builderID   string      // provenance
	scan        *scanPolicy // scan
}

func (r *rule) accepts(predicateType string) bool {
	for _, t := range r.types {
		if t == predicateType {
			return true
		}
	}
	return false
}

func (r *rule) authorityNames() string {
	names := make([]string, len(r.authorities))
	for i, a := range r.authorities {
		names[i] = a.name
	}
	return strings.Join(names, ", ")
}

// compiledPolicy is a validated PolicySpec with its keys loaded.
type compiledPolicy struct {
	name               string
	mode               string
	patterns           []*regexp.Regexp
	images             []string
	allowUnsigned      bool
	platformSignatures bool
	rules              []*rule
	// hash covers the policy and all trust material: the cache key.
	hash string
}

func (p *compiledPolicy) matches(repo string) bool {
	for _, re := range p.patterns {
		if re.MatchString(repo) {
			return true
		}
	}
	return false
}

// scanRule returns the policy's scan rule, or nil.
func (p *compiledPolicy) scanRule() *rule {
	for _, r := range p.rules {
		if r.kind == kindScan {
			return r
		}
	}
	return nil
}

// needsRegistryEvidence is false when nothing is read from the registry
// (allowUnsigned without other rules, or only a Harbor scan).
func (p *compiledPolicy) needsRegistryEvidence() bool {
	for _, r := range p.rules {
		if r.kind != kindScan || !r.scan.harbor {
			return true
		}
	}
	return false
}

// compilePolicy validates spec. Every error names the policy and the field.
func compilePolicy(i int, spec PolicySpec, platforms []string) (*compiledPolicy, error) {
	name := spec.Name
	if name == "" {
		return nil, fmt.Errorf("policies[%d]: name is required", i)
	}
	where := fmt.Sprintf("policy %q", name)
	p := &compiledPolicy{name: name, allowUnsigned: spec.AllowUnsigned, platformSignatures: spec.PlatformSignatures, images: spec.Images}
	switch spec.Mode {
	case "", ModeEnforce:
		p.mode = ModeEnforce
	case ModeWarn:
		p.mode = ModeWarn
	default:
		return nil, fmt.Errorf("%s: mode %q: want %q or %q", where, spec.Mode, ModeEnforce, ModeWarn)
	}
	if len(spec.Images) == 0 {
		return nil, fmt.Errorf("%s: images: at least one pattern is required", where)
	}
	for j, pat := range spec.Images {
		re, err := compileGlob(pat)
		if err != nil {
			return nil, fmt.Errorf("%s: images[%d]: %w", where, j, err)
		}
		p.patterns = append(p.patterns, re)
	}
	hash := sha256.New()
	specJSON, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	hash.Write(specJSON)
	fmt.Fprintf(hash, "\nplatforms %q\n", platforms)

	authorities := func(field, rule string, specs []AuthoritySpec) ([]*authority, error) {
		if len(specs) == 0 {
			return nil, fmt.Errorf("%s: %s: at least one authority is required", where, field)
		}
		out := make([]*authority, 0, len(specs))
		for j, as := range specs {
			if as.Name == "" {
				as.Name = fmt.Sprintf("%s[%d]", rule, j)
			}
			a, err := compileAuthority(as, fmt.Sprintf("%s: %s[%d] (%q)", where, field, j, as.Name))
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(hash, "%s[%d] %s\n", field, j, a.trust)
			out = append(out, a)
		}
		return out, nil
	}

	switch {
	case spec.AllowUnsigned && len(spec.Authorities) > 0:
		return nil, fmt.Errorf("%s: allowUnsigned and authorities exclude each other: remove one", where)
	case !spec.AllowUnsigned && len(spec.Authorities) == 0:
		return nil, fmt.Errorf("%s: authorities: at least one authority is required (or set allowUnsigned: true to run unsigned images)", where)
	case !spec.AllowUnsigned:
		as, err := authorities("authorities", "signature", spec.Authorities)
		if err != nil {
			return nil, err
		}
		p.rules = append(p.rules, &rule{kind: kindSignature, name: RuleSignature, types: []string{PredicateCosignSign, EvidenceSimpleSigning}, authorities: as})
	}

	seen := map[string]bool{}
	for j, at := range spec.Attestations {
		field := fmt.Sprintf("attestations[%d]", j)
		if err := checkPredicateType(at.PredicateType); err != nil {
			return nil, fmt.Errorf("%s: %s.predicateType: %w", where, field, err)
		}
		if at.PredicateType == PredicateCosignSign {
			return nil, fmt.Errorf("%s: %s.predicateType %q is a signature, not an attestation: list its signers under authorities", where, field, at.PredicateType)
		}
		if seen[at.PredicateType] {
			return nil, fmt.Errorf("%s: %s.predicateType %q is listed twice", where, field, at.PredicateType)
		}
		seen[at.PredicateType] = true
		as, err := authorities(field+".authorities", "attestation", at.Authorities)
		if err != nil {
			return nil, err
		}
		p.rules = append(p.rules, &rule{kind: kindAttestation, name: RuleAttestationPrefix + at.PredicateType, types: []string{at.PredicateType}, authorities: as})
	}

	if s := spec.Scan; s != nil {
		sp := &scanPolicy{maxAge: s.MaxAge, ignore: map[string]bool{}}
		switch sev := strings.ToLower(s.MaxSeverity); sev {
		case "":
			sp.maxSeverity = SeverityNone
		case SeverityNone, SeverityLow, SeverityMedium, SeverityHigh, SeverityCritical:
			sp.maxSeverity = sev
		default:
			return nil, fmt.Errorf("%s: scan.maxSeverity %q: want none, low, medium, high or critical", where, s.MaxSeverity)
		}
		switch {
		case s.MaxAge < 0:
			return nil, fmt.Errorf("%s: scan.maxAge %s is negative", where, s.MaxAge)
		case s.MaxAge == 0:
			sp.maxAge = defaultScanMaxAge
		}
		for j, id := range s.IgnoreCVEs {
			id = strings.ToUpper(strings.TrimSpace(id))
			if id == "" {
				return nil, fmt.Errorf("%s: scan.ignoreCVEs[%d] is empty", where, j)
			}
			sp.ignore[id] = true
		}
		switch s.Missing {
		case "", "block":
		case "wait":
			sp.wait = true
		default:
			return nil, fmt.Errorf("%s: scan.missing %q: want block or wait", where, s.Missing)
		}
		r := &rule{kind: kindScan, name: RuleScan, types: []string{PredicateVulnCosign, PredicateVulnsInToto}, scan: sp}
		switch s.Source {
		case "", "attestation":
			as, err := authorities("scan.authorities", "scanner", s.Authorities)
			if err != nil {
				return nil, err
			}
			r.authorities = as
		case "harbor":
			if len(s.Authorities) > 0 {
				return nil, fmt.Errorf("%s: scan.authorities apply to signed scan attestations, not to source harbor: remove them", where)
			}
			sp.harbor = true
			if s.HarborURL != "" {
				u, err := url.Parse(s.HarborURL)
				if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
					return nil, fmt.Errorf("%s: scan.harborURL %q: want https://host[:port]", where, s.HarborURL)
				}
				sp.harborURL = strings.TrimRight(s.HarborURL, "/")
			}
		default:
			return nil, fmt.Errorf("%s: scan.source %q: want attestation or harbor", where, s.Source)
		}
		p.rules = append(p.rules, r)
	}

	if pv := spec.Provenance; pv != nil {
		if pv.BuilderID == "" {
			return nil, fmt.Errorf("%s: provenance.builderID is required", where)
		}
		as, err := authorities("provenance.authorities", "provenance", pv.Authorities)
		if err != nil {
			return nil, err
		}
		p.rules = append(p.rules, &rule{kind: kindProvenance, name: RuleProvenance, types: []string{PredicateSLSAProvenanceV1}, authorities: as, builderID: pv.BuilderID})
	}
	p.hash = hex.EncodeToString(hash.Sum(nil))
	return p, nil
}

func checkPredicateType(t string) error {
	if t == "" {
		return fmt.Errorf("is required")
	}
	if len(t) > 1024 || strings.ContainsAny(t, " \t\n") {
		return fmt.Errorf("%q is not a predicate type URI", printable(t))
	}
	return nil
}
