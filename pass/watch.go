package pass

import (
	"context"
	"fmt"

	"github.com/shipwatch/shipwatch/config"
	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/imageref"
	"github.com/shipwatch/shipwatch/watcher"
)

// watch asks the registries for a candidate for every target in one batch,
// so that targets sharing an image share its requests.
func watch(ctx context.Context, deps Deps, ws []work, opts Options) []TargetResult {
	results := make([]TargetResult, len(ws))
	var reqs []watcher.Request
	var idx []int
	for i, w := range ws {
		r := TargetResult{Target: w.target, Policy: w.policy}
		switch {
		case w.policy.Update == "invalid":
			r.Outcome = deployer.Failed
			_, _, err := config.LabelPolicyOf(w.target.Labels)
			r.Err, r.Reason = err, fmt.Sprintf("invalid shipwatch labels: %v", err)
		case opts.To != "":
			c, err := forced(ctx, deps, w.target, opts.To)
			if err != nil {
				r.Outcome, r.Err, r.Reason = deployer.Failed, err, err.Error()
			} else {
				r.Candidate, r.Change = c, changeOf(w.target, c)
				r.Reason = "requested by hand: " + opts.To
				if r.Change == "" {
					r.Outcome, r.Reason = deployer.UpToDate, "already runs "+shortDigest(c.Digest)
				}
			}
		case w.policy.Freeze:
			r.Outcome, r.Reason = deployer.UpToDate, "frozen by policy ("+w.policy.Source+")"
		case w.policy.Update == config.UpdateNone:
			r.Outcome, r.Reason = deployer.UpToDate, "update: none ("+w.policy.Source+")"
		case w.target.Image.Tag == "":
			r.Outcome, r.Reason = deployer.UpToDate, "deployed by digest without a tag: nothing to follow"
		default:
			pol, err := deps.Policies.For(w.policy)
			if err != nil {
				r.Outcome, r.Err, r.Reason = deployer.Failed, err, err.Error()
				break
			}
			reqs = append(reqs, watcher.Request{Key: w.target.ID, Image: w.target.Image, Running: w.target.Digest, Policy: pol})
			idx = append(idx, i)
		}
		results[i] = r
	}
	if len(reqs) == 0 {
		return results
	}
	for j, res := range deps.Watcher.Check(ctx, reqs) {
		r := &results[idx[j]]
		switch {
		case res.Err != nil:
			r.Outcome, r.Err, r.Reason = deployer.Failed, res.Err, "could not check: "+res.Err.Error()
		case res.Change == watcher.ChangeNone:
			r.Outcome, r.Reason = deployer.UpToDate, res.Reason
		default:
			r.Candidate, r.Reason = res.Candidate, res.Reason
			r.Change = "digest"
			if res.Change == watcher.ChangeTag {
				r.Change = "tag"
			}
		}
	}
	return results
}

// forced resolves an operator's --to into a pinned candidate.
func forced(ctx context.Context, deps Deps, t deployer.Target, to string) (imageref.Ref, error) {
	if imageref.ValidDigest(to) {
		return t.Image.WithDigest(to), nil
	}
	if !imageref.ValidTag(to) {
		return imageref.Ref{}, fmt.Errorf("--to %q is neither a tag nor a sha256 digest", to)
	}
	ref := t.Image.WithTag(to)
	d, err := deps.Watcher.Resolve(ctx, ref)
	if err != nil {
		return imageref.Ref{}, fmt.Errorf("resolve %s: %w", ref.Familiar(), err)
	}
	return ref.WithDigest(d), nil
}

func changeOf(t deployer.Target, c imageref.Ref) string {
	switch {
	case c.Tag != t.Image.Tag:
		return "tag"
	case c.Digest != t.Digest:
		return "digest"
	}
	return ""
}
