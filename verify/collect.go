package verify

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	sgverify "github.com/sigstore/sigstore-go/pkg/verify"

	"github.com/shipwatch/shipwatch/imageref"
)

// evidence is one verified triple (authority, predicate type, subject
// digest) with what the rule needs from its payload. Nothing else counts.
type evidence struct {
	authority     string
	identity      string
	predicateType string
	subject       string
	source        string
	scan          *ScanReport // scan rule: the parsed report
	builderID     string      // provenance rule
}

// evidenceSet is everything found for one digest under one policy.
type evidenceSet struct {
	digest string
	// byRule[i] is the verified evidence for policy rule i.
	byRule [][]evidence
	// rejected[i] says why candidates routed to rule i did not count.
	rejected [][]string
	// invalid lists artifacts that could not even be parsed.
	invalid []string
	// unreachable is the first failure to get an answer (registry down,
	// denied, rate limited, timed out): the verdict cannot be "blocked".
	unreachable error
	// harbor is the registry-side scan (Source "harbor").
	harbor *ScanReport
	// platforms holds the evidence of each platform that runs, when the
	// policy accepts per-platform evidence and the index lacked some.
	platforms     []platformEvidence
	platformsNote string
}

type platformEvidence struct {
	platform string
	digest   string // "" when the index has no manifest for the platform
	set      *evidenceSet
}

func newEvidenceSet(digest string, rules int) *evidenceSet {
	return &evidenceSet{digest: digest, byRule: make([][]evidence, rules), rejected: make([][]string, rules)}
}

// fail records an error of discovery: unreachable errors make the verdict
// undecided; anything else marks an artifact invalid.
func (s *evidenceSet) fail(what string, err error) {
	var ue *UnreachableError
	if errors.As(err, &ue) {
		if s.unreachable == nil {
			s.unreachable = err
		}
		return
	}
	s.invalid = append(s.invalid, what+": "+err.Error())
}

// collect finds and verifies the evidence for digest, then, if the policy
// accepts per-platform evidence and a rule is unmet on the index, for each
// platform that runs.
func (v *Verifier) collect(ctx context.Context, r repository, image imageref.Ref, p *compiledPolicy) *evidenceSet {
	set := newEvidenceSet(image.Digest, len(p.rules))
	v.collectFor(ctx, r, image, p, set)
	if p.platformSignatures && !allRulesHaveEvidence(p, set) && set.unreachable == nil {
		v.collectPlatforms(ctx, r, image, p, set)
	}
	return set
}

func allRulesHaveEvidence(p *compiledPolicy, set *evidenceSet) bool {
	for i, r := range p.rules {
		if r.kind == kindScan && r.scan.harbor {
			if set.harbor == nil {
				return false
			}
			continue
		}
		if !ruleHasEvidence(r, set.byRule[i]) {
			return false
		}
	}
	return true
}

// registryEvidenceMissing says whether a rule that looks for evidence in
// the registry (not the Harbor scan) found none.
func registryEvidenceMissing(p *compiledPolicy, set *evidenceSet) bool {
	for i, r := range p.rules {
		if r.kind == kindScan && r.scan.harbor {
			continue
		}
		if !ruleHasEvidence(r, set.byRule[i]) {
			return true
		}
	}
	return false
}

// ruleHasEvidence: a provenance rule needs evidence from the right builder.
func ruleHasEvidence(r *rule, ev []evidence) bool {
	if r.kind != kindProvenance {
		return len(ev) > 0
	}
	for _, e := range ev {
		if e.builderID == r.builderID {
			return true
		}
	}
	return false
}

func (v *Verifier) collectFor(ctx context.Context, r repository, image imageref.Ref, p *compiledPolicy, set *evidenceSet) {
	digest := set.digest
	if p.needsRegistryEvidence() {
		answered := v.fromReferrers(ctx, r, digest, p, set, false)
		if i := ruleIndex(p, kindSignature); i >= 0 && len(set.byRule[i]) == 0 {
			v.fromLegacyTag(ctx, r, digest, ".sig", p, set)
		}
		if needsLegacyAttestations(p, set) {
			v.fromLegacyTag(ctx, r, digest, ".att", p, set)
		}
		if !answered && set.unreachable == nil && registryEvidenceMissing(p, set) {
			// A 404 from the referrers API (now, or remembered from an
			// earlier call) says the registry has no such API — or was a
			// proxy's or a lagging replica's mistake, which would hide
			// every signature attached through that API. Ask it once
			// more before concluding that the evidence does not exist.
			v.reg.forgetNoReferrersAPI(r)
			v.fromReferrers(ctx, r, digest, p, set, true)
		}
	}
	if sr := p.scanRule(); sr != nil && sr.scan.harbor {
		rep, err := v.harbor.LatestScanAt(ctx, sr.scan.harborURL, image.WithDigest(digest), len(sr.scan.ignore) > 0)
		if err != nil {
			set.fail("harbor scan", err)
		} else {
			set.harbor = rep
		}
	}
}

func ruleIndex(p *compiledPolicy, k ruleKind) int {
	for i, r := range p.rules {
		if r.kind == k {
			return i
		}
	}
	return -1
}

// needsLegacyAttestations says whether the ".att" tag may still matter: an
// attestation rule is unmet, or a scan rule found no scan in the referrers
// (scanners publish in one format, so a scan found there ends the search).
func needsLegacyAttestations(p *compiledPolicy, set *evidenceSet) bool {
	for i, r := range p.rules {
		switch r.kind {
		case kindAttestation, kindProvenance:
			if !ruleHasEvidence(r, set.byRule[i]) {
				return true
			}
		case kindScan:
			if !r.scan.harbor && len(set.byRule[i]) == 0 {
				return true
			}
		}
	}
	return false
}

// done says whether discovery can stop early: every rule has evidence and
// no scan rule wants to see all scans to pick the newest.
func done(p *compiledPolicy, set *evidenceSet) bool {
	for i, r := range p.rules {
		if r.kind == kindScan {
			if !r.scan.harbor {
				return false
			}
			continue
		}
		if !ruleHasEvidence(r, set.byRule[i]) {
			return false
		}
	}
	return true
}

// relevantArtifactType says whether a referrer may hold a signature or an
// attestation. Registries differ in what they report as its artifact type
// (the manifest's artifactType, the config media type, or nothing), so the
// empty and OCI config types are opened too; other types (SBOMs, Notation
// signatures, ...) are skipped.
func relevantArtifactType(t string) bool {
	switch {
	case t == "", strings.HasPrefix(t, mediaBundlePrefix), t == mediaInToto, t == mediaDSSE,
		t == "application/vnd.oci.empty.v1+json", t == "application/vnd.oci.image.config.v1+json",
		strings.HasPrefix(t, "application/vnd.dev.cosign"):
		return true
	}
	return false
}

// fromReferrers examines what refers to digest; apiOnly skips the fallback
// tag (already asked). It reports whether the referrers API answered.
func (v *Verifier) fromReferrers(ctx context.Context, r repository, digest string, p *compiledPolicy, set *evidenceSet, apiOnly bool) (answered bool) {
	idx, source, err := v.reg.referrers(ctx, r, digest, apiOnly)
	if errors.Is(err, errNotFound) {
		return false
	}
	if err != nil {
		set.fail(source, err)
		return false
	}
	answered = source == sourceReferrersAPI
	descs := make([]descriptor, 0, len(idx.Manifests))
	for _, d := range idx.Manifests {
		if relevantArtifactType(d.ArtifactType) {
			descs = append(descs, d)
		}
	}
	// Bundles first, newest tooling first; the order only saves requests.
	sort.SliceStable(descs, func(i, j int) bool {
		return strings.HasPrefix(descs[i].ArtifactType, mediaBundlePrefix) && !strings.HasPrefix(descs[j].ArtifactType, mediaBundlePrefix)
	})
	if len(descs) > maxReferrers {
		set.invalid = append(set.invalid, fmt.Sprintf("%s: %d referrers, only the first %d examined", source, len(descs), maxReferrers))
		descs = descs[:maxReferrers]
	}
	for _, d := range descs {
		if done(p, set) {
			return answered
		}
		if ctx.Err() != nil {
			set.fail(source, &UnreachableError{What: source, Err: ctx.Err()})
			return answered
		}
		b, err := v.reg.manifest(ctx, r, d.Digest)
		if err != nil {
			set.fail("referrer "+d.Digest, err)
			continue
		}
		m, err := parseManifest(b)
		if err != nil {
			set.fail("referrer "+d.Digest, err)
			continue
		}
		if m.Subject != nil && m.Subject.Digest != digest {
			set.invalid = append(set.invalid, fmt.Sprintf("referrer %s refers to %s, not %s", d.Digest, m.Subject.Digest, digest))
			continue
		}
		v.fromLayers(ctx, r, digest, source, m.Layers, p, set)
	}
	return answered
}

func (v *Verifier) fromLegacyTag(ctx context.Context, r repository, digest, suffix string, p *compiledPolicy, set *evidenceSet) {
	tag := strings.Replace(digest, ":", "-", 1) + suffix
	source := "tag " + tag
	b, err := v.reg.manifest(ctx, r, tag)
	if errors.Is(err, errNotFound) {
		return
	}
	if err != nil {
		set.fail(source, err)
		return
	}
	m, err := parseManifest(b)
	if err != nil {
		set.fail(source, err)
		return
	}
	v.fromLayers(ctx, r, digest, source, m.Layers, p, set)
}

// fromLayers reads the signature and attestation layers of one manifest.
func (v *Verifier) fromLayers(ctx context.Context, r repository, digest, source string, layers []descriptor, p *compiledPolicy, set *evidenceSet) {
	n := 0
	for _, l := range layers {
		var parse func([]byte) (candidate, error)
		switch {
		case strings.HasPrefix(l.MediaType, mediaBundlePrefix):
			parse = parseBundleCandidate
		case l.MediaType == mediaSimpleSigning:
			ann := l.Annotations
			parse = func(b []byte) (candidate, error) { return parseLegacySignature(ann, b) }
		case l.MediaType == mediaDSSE:
			ann := l.Annotations
			parse = func(b []byte) (candidate, error) { return parseLegacyAttestation(ann, b) }
		default:
			continue
		}
		if n++; n > maxReferrers {
			set.invalid = append(set.invalid, fmt.Sprintf("%s: more than %d signature layers, the rest ignored", source, maxReferrers))
			return
		}
		if done(p, set) {
			return
		}
		b, err := v.reg.blob(ctx, r, l.Digest, l.Size)
		if err != nil {
			set.fail(source+" layer "+l.Digest, err)
			continue
		}
		c, err := parse(b)
		if err != nil {
			set.invalid = append(set.invalid, fmt.Sprintf("%s layer %s: %v", source, l.Digest, err))
			continue
		}
		c.source = source
		v.consider(c, digest, p, set)
	}
}

// consider verifies a candidate against every rule that could use it, with
// each of the rule's authorities until one accepts it.
func (v *Verifier) consider(c candidate, digest string, p *compiledPolicy, set *evidenceSet) {
	for i, r := range p.rules {
		if !r.accepts(c.claimedType) || (r.kind == kindScan && r.scan.harbor) {
			continue
		}
		if (r.kind == kindSignature || r.kind == kindAttestation) && len(set.byRule[i]) > 0 {
			continue // already met; spare the cryptography
		}
		var errs []string
		for _, a := range r.authorities {
			ev, err := check(c, digest, r, a)
			if err == nil {
				set.byRule[i] = append(set.byRule[i], ev)
				errs = nil
				break
			}
			errs = append(errs, fmt.Sprintf("%s: %v", a.name, err))
		}
		if len(errs) > 0 {
			set.rejected[i] = append(set.rejected[i], c.describe()+" rejected: "+strings.Join(errs, "; "))
		}
	}
}

// check verifies one candidate with one authority and reads the verified
// payload. The triple recorded is the authority, the predicate type in the
// verified payload and the digest the payload names, which must be digest.
func check(c candidate, digest string, r *rule, a *authority) (evidence, error) {
	var artifact sgverify.ArtifactPolicyOption
	if c.dsse {
		raw, err := hex.DecodeString(strings.TrimPrefix(digest, "sha256:"))
		if err != nil {
			return evidence{}, err
		}
		// sigstore-go checks that the statement's subject is this digest.
		artifact = sgverify.WithArtifactDigest("sha256", raw)
	} else {
		artifact = sgverify.WithArtifact(bytes.NewReader(c.payload))
	}
	identity, err := a.verifyEntity(c.entity, artifact)
	if err != nil {
		return evidence{}, shortenSigstoreError(err)
	}
	ev := evidence{authority: a.name, identity: identity, subject: digest, source: c.describe()}
	var st *statement
	if c.dsse {
		if st, err = parseStatement(c.payload); err != nil {
			return evidence{}, err
		}
		if !st.hasSubject(digest) {
			return evidence{}, fmt.Errorf("the statement is not about %s", digest)
		}
		ev.predicateType = st.PredicateType
	} else {
		signed, err := parseSimpleSigning(c.payload)
		if err != nil {
			return evidence{}, err
		}
		if signed != digest {
			return evidence{}, fmt.Errorf("the signed payload names %s, not %s (a signature copied from another image)", printable(signed), digest)
		}
		ev.predicateType = EvidenceSimpleSigning
	}
	if !r.accepts(ev.predicateType) {
		return evidence{}, fmt.Errorf("signed content is %q, which does not satisfy rule %s", printable(ev.predicateType), r.name)
	}
	switch r.kind {
	case kindScan:
		if ev.scan, err = parseVulnPredicate(st.PredicateType, st.Predicate); err != nil {
			return evidence{}, err
		}
	case kindProvenance:
		if ev.builderID, err = parseProvenanceBuilder(st.Predicate); err != nil {
			return evidence{}, err
		}
	}
	return ev, nil
}

// parseProvenanceBuilder reads runDetails.builder.id of a SLSA v1 predicate.
func parseProvenanceBuilder(raw json.RawMessage) (string, error) {
	var p struct {
		BuildDefinition *struct {
			BuildType string `json:"buildType"`
		} `json:"buildDefinition"`
		RunDetails *struct {
			Builder struct {
				ID string `json:"id"`
			} `json:"builder"`
		} `json:"runDetails"`
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		return "", fmt.Errorf("SLSA provenance: %w", err)
	}
	if p.BuildDefinition == nil || p.RunDetails == nil {
		return "", errors.New("SLSA provenance v1 needs buildDefinition and runDetails")
	}
	if p.RunDetails.Builder.ID == "" {
		return "", errors.New("SLSA provenance names no runDetails.builder.id")
	}
	return p.RunDetails.Builder.ID, nil
}

// shortenSigstoreError keeps the innermost useful part of sigstore-go's
// long error chains.
func shortenSigstoreError(err error) error {
	msg := err.Error()
	if len(msg) > 400 {
		msg = msg[:400] + "…"
	}
	return errors.New(msg)
}

func (v *Verifier) collectPlatforms(ctx context.Context, r repository, image imageref.Ref, p *compiledPolicy, set *evidenceSet) {
	b, err := v.reg.manifest(ctx, r, set.digest)
	if err != nil {
		if errors.Is(err, errNotFound) {
			set.platformsNote = "the image manifest was not found"
			return
		}
		set.fail("manifest "+set.digest, err)
		return
	}
	m, err := parseManifest(b)
	if err != nil {
		set.fail("manifest "+set.digest, err)
		return
	}
	if len(m.Manifests) == 0 {
		set.platformsNote = "the image is not a multi-platform index"
		return
	}
	for _, pl := range v.platforms {
		pe := platformEvidence{platform: pl.String()}
		for _, d := range m.Manifests {
			if pl.matches(d) {
				pe.digest = d.Digest
				break
			}
		}
		if pe.digest != "" {
			pe.set = newEvidenceSet(pe.digest, len(p.rules))
			v.collectFor(ctx, r, image, p, pe.set)
			if pe.set.unreachable != nil && set.unreachable == nil {
				set.unreachable = pe.set.unreachable
			}
		}
		set.platforms = append(set.platforms, pe)
	}
}
