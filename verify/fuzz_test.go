package verify

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/shipwatch/shipwatch/verify/sigtest"
)

const fuzzDigest = "sha256:6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3b"

// fuzzAuthority is a key no fuzz input was signed with: whatever parses,
// nothing may verify.
func fuzzAuthority(f *testing.F) *authority {
	f.Helper()
	k := sigtest.MustKey(f, "")
	pub, err := parsePublicKeyPEM([]byte(k.PublicKeyPEM()))
	if err != nil {
		f.Fatal(err)
	}
	a, err := compileKey("fuzz", pub, "fuzz")
	if err != nil {
		f.Fatal(err)
	}
	return a
}

func fuzzRules(a *authority) []*rule {
	return []*rule{
		{kind: kindSignature, name: RuleSignature, types: []string{PredicateCosignSign, EvidenceSimpleSigning}, authorities: []*authority{a}},
		{kind: kindScan, name: RuleScan, types: []string{PredicateVulnCosign, PredicateVulnsInToto}, authorities: []*authority{a}, scan: &scanPolicy{maxSeverity: SeverityNone, maxAge: time.Hour}},
	}
}

// neverAllowed checks a parsed candidate against every rule: it must not
// verify, since the fuzz authority signed nothing.
func neverAllowed(t *testing.T, c candidate, rules []*rule) {
	for _, r := range rules {
		if !r.accepts(c.claimedType) {
			continue
		}
		for _, a := range r.authorities {
			if _, err := check(c, fuzzDigest, r, a); err == nil {
				t.Fatalf("fuzz input verified under rule %s: got evidence, want an error", r.name)
			}
		}
	}
}

func seedBundles(f *testing.F) [][]byte {
	k := sigtest.MustKey(f, "")
	st, err := sigtest.Statement(fuzzDigest, sigtest.PredicateCosignSign, nil)
	if err != nil {
		f.Fatal(err)
	}
	b, err := sigtest.BundleJSON(k, st)
	if err != nil {
		f.Fatal(err)
	}
	ss := sigtest.MustSigstore(f)
	kb, err := sigtest.BundleJSON(ss.Identity("a@example.com", "https://issuer.example"), st)
	if err != nil {
		f.Fatal(err)
	}
	return [][]byte{b, kb}
}

func FuzzParseBundle(f *testing.F) {
	for _, b := range seedBundles(f) {
		f.Add(b)
	}
	f.Add([]byte(`{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}`))
	f.Add([]byte(`{}`))
	rules := fuzzRules(fuzzAuthority(f))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := parseBundleCandidate(b)
		if err != nil {
			return
		}
		neverAllowed(t, c, rules)
	})
}

func FuzzParseLegacySignature(f *testing.F) {
	k := sigtest.MustKey(f, "")
	payload, ann, err := sigtest.LegacySignatureLayer(k, "127.0.0.1:5000/demo/app", fuzzDigest)
	if err != nil {
		f.Fatal(err)
	}
	ss := sigtest.MustSigstore(f)
	kpayload, kann, err := sigtest.LegacySignatureLayer(ss.Identity("a@example.com", "https://issuer.example"), "127.0.0.1:5000/demo/app", fuzzDigest)
	if err != nil {
		f.Fatal(err)
	}
	annJSON := func(m map[string]string) []byte { b, _ := json.Marshal(m); return b }
	f.Add(payload, annJSON(ann))
	f.Add(kpayload, annJSON(kann))
	f.Add([]byte(`{"critical":{}}`), []byte(`{"dev.cosignproject.cosign/signature":"AAAA","dev.sigstore.cosign/bundle":"{}"}`))
	rules := fuzzRules(fuzzAuthority(f))
	f.Fuzz(func(t *testing.T, payload, annotations []byte) {
		var ann map[string]string
		if json.Unmarshal(annotations, &ann) != nil {
			return
		}
		c, err := parseLegacySignature(ann, payload)
		if err != nil {
			return
		}
		neverAllowed(t, c, rules)
	})
}

func FuzzParseLegacyAttestation(f *testing.F) {
	k := sigtest.MustKey(f, "")
	st, err := sigtest.Statement(fuzzDigest, sigtest.PredicateVulnCosign, sigtest.VulnPredicate(sigtest.Scan{FinishedAt: time.Unix(1700000000, 0)}))
	if err != nil {
		f.Fatal(err)
	}
	env, ann, err := sigtest.LegacyAttestationLayer(k, st, sigtest.PredicateVulnCosign)
	if err != nil {
		f.Fatal(err)
	}
	annJSON, _ := json.Marshal(ann)
	f.Add(env, annJSON)
	f.Add([]byte(`{"payloadType":"application/vnd.in-toto+json","payload":"e30=","signatures":[{"sig":"AAAA"}]}`), []byte(`{}`))
	rules := fuzzRules(fuzzAuthority(f))
	f.Fuzz(func(t *testing.T, envelope, annotations []byte) {
		var ann map[string]string
		if json.Unmarshal(annotations, &ann) != nil {
			return
		}
		c, err := parseLegacyAttestation(ann, envelope)
		if err != nil {
			return
		}
		neverAllowed(t, c, rules)
	})
}

// FuzzParseVulnPredicate checks that a scan report that parses is never
// read as cleaner than it is: every vulnerability keeps a known severity.
func FuzzParseVulnPredicate(f *testing.F) {
	for _, pred := range []any{
		sigtest.VulnPredicate(sigtest.Scan{FinishedAt: time.Unix(1700000000, 0), Vulns: []sigtest.Vuln{{ID: "CVE-1", Severity: "CRITICAL"}}}),
		sigtest.VulnsV02Predicate(sigtest.Scan{FinishedAt: time.Unix(1700000000, 0), Vulns: []sigtest.Vuln{{ID: "CVE-1", Severity: "9.8"}}}),
	} {
		b, _ := json.Marshal(pred)
		f.Add(b, false)
		f.Add(b, true)
	}
	f.Add([]byte(`{"scanner":{"result":{}},"metadata":{"scanFinishedOn":"2024-01-01T00:00:00Z"}}`), false)
	sp := &scanPolicy{maxSeverity: SeverityHigh, ignore: map[string]bool{}}
	f.Fuzz(func(t *testing.T, b []byte, intoto bool) {
		pt := PredicateVulnCosign
		if intoto {
			pt = PredicateVulnsInToto
		}
		rep, err := parseVulnPredicate(pt, b)
		if err != nil {
			return
		}
		if rep.FinishedAt.IsZero() {
			t.Fatalf("parsed report without a finish time: %+v", rep)
		}
		sum := sp.summarize(rep, "attestation", "fuzz")
		total := 0
		for _, n := range sum.Counts {
			total += n
		}
		for _, v := range rep.Vulnerabilities {
			if _, ok := severityRank[v.Severity]; !ok {
				t.Fatalf("severity %q is not normalized", v.Severity)
			}
			if v.Severity != SeverityNone && total == 0 {
				t.Fatalf("report with a %s vulnerability summarized as clean", v.Severity)
			}
		}
	})
}

func FuzzParseRekorBundle(f *testing.F) {
	f.Add([]byte(`{"SignedEntryTimestamp":"AAAA","Payload":{"body":"e30=","integratedTime":1,"logIndex":1,"logID":"abcd"}}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := parseRekorBundle(b)
		if err != nil {
			return
		}
		if len(e.InclusionPromise.SignedEntryTimestamp) == 0 || len(e.LogId.KeyId) == 0 {
			t.Fatalf("accepted a Rekor bundle without promise or log id: %+v", e)
		}
	})
}

func FuzzCompileGlob(f *testing.F) {
	for _, s := range []string{"ghcr.io/acme/*", "127.0.0.1:*/demo/**", "nginx", "**", "a?b"} {
		f.Add(s, "ghcr.io/acme/app")
	}
	f.Fuzz(func(t *testing.T, pattern, repo string) {
		re, err := compileGlob(pattern)
		if err != nil {
			return
		}
		// A pattern without wildcards matches only its normalized self.
		if !strings.ContainsAny(pattern, "*?") && re.MatchString(repo) && repo != normalizePattern(pattern) {
			t.Fatalf("pattern %q matched %q", pattern, repo)
		}
	})
}

// TestScanWithoutARealFinishTimeIsRejected: found by FuzzParseVulnPredicate
// (CI run of 2026-12-03): "0001-01-01T0:00:00Z" parsed as the zero time,
// a report whose age means nothing.
func TestScanWithoutARealFinishTimeIsRejected(t *testing.T) {
	for _, finished := range []string{"0001-01-01T0:00:00Z", "0001-01-01T00:00:00Z", "1969-12-31T23:59:59Z"} {
		b := []byte(`{"metadata":{"scanFinishedOn":"` + finished + `"},"scanner":{"result":[]}}`)
		for _, pt := range []string{PredicateVulnCosign, PredicateVulnsInToto} {
			if rep, err := parseVulnPredicate(pt, b); err == nil || !strings.Contains(err.Error(), "before 1970") {
				t.Errorf("%s, scanFinishedOn %s: report %+v, error %v; want rejected as before 1970", pt, finished, rep, err)
			}
		}
	}
}
