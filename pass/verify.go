package pass

import (
	"context"
	"strings"
	"sync"

	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/imageref"
	"github.com/shipwatch/shipwatch/verify/verdict"
)

// verifyAll verifies every candidate (each distinct digest once).
func verifyAll(ctx context.Context, deps Deps, results []TargetResult) []TargetResult {
	cache := map[string]verdict.Verdict{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, max(1, deps.Config.Concurrency))
	var todo []string
	for _, r := range results {
		if r.Outcome == "" && r.Candidate.Digest != "" {
			key := r.Candidate.Repo() + "@" + r.Candidate.Digest
			if _, ok := cache[key]; !ok {
				cache[key] = verdict.Verdict{}
				todo = append(todo, key)
			}
		}
	}
	for _, key := range todo {
		ref, _ := imageref.Parse(key)
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			v := verifyOne(ctx, deps, ref)
			mu.Lock()
			cache[key] = v
			mu.Unlock()
		}()
	}
	wg.Wait()
	for i := range results {
		r := &results[i]
		if r.Outcome != "" || r.Candidate.Digest == "" {
			continue
		}
		v := cache[r.Candidate.Repo()+"@"+r.Candidate.Digest]
		r.Verdict = &v
		switch {
		case v.Decision == verdict.Allowed:
		case v.Decision == verdict.Blocked && v.Mode == verdict.ModeWarn:
			r.Warning = "verification would block it (" + firstFailure(v) + ") but policy " + v.Policy + " is in warn mode"
			r.Reason += "; " + r.Warning
		case v.Decision == verdict.Blocked:
			r.Outcome, r.Reason = deployer.Blocked, "verification blocked "+shortDigest(r.Candidate.Digest)+": "+firstFailure(v)
		default:
			r.Outcome, r.Reason = deployer.Failed, "verification could not decide (will retry): "+firstFailure(v)
		}
	}
	return results
}

func verifyOne(ctx context.Context, deps Deps, ref imageref.Ref) verdict.Verdict {
	if deps.Verifier == nil {
		return verdict.Verdict{Image: ref.String(), Decision: verdict.Blocked, Reasons: []verdict.Reason{{Rule: "policy", Message: "verification is not configured: nothing is trusted, so nothing is deployed (configure verify.policies)"}}}
	}
	return deps.Verifier.Verify(ctx, ref)
}

func firstFailure(v verdict.Verdict) string {
	var msgs []string
	for _, r := range v.Reasons {
		if !r.OK {
			msgs = append(msgs, r.Message)
		}
	}
	if len(msgs) == 0 {
		return "no reason given"
	}
	return strings.Join(msgs, "; ")
}
