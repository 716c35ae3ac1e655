package pass

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/shipwatch/shipwatch/config"
	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/state"
	"github.com/shipwatch/shipwatch/watcher"
)

// Store is the part of the state store a pass uses (implemented by *state.Store).
type Store interface {
	IsQuarantined(target, digest string) (state.Quarantined, bool, error)
	HighWater(target string) (state.Mark, bool, error)
	AddHistory(e state.Entry, keep int) (state.Entry, error)
	Record(o state.Outcome, keep int) (state.Entry, error)
	SetPending(a state.Approval) error
	Approval(target string) (state.Approval, bool, error)
	BeginJournal(j state.Journal) error
	StepJournal(target, step string) error
	EndJournal(target string) error
	FirstNotice(key string) (bool, error)
	Seen(key string, now time.Time) (time.Time, error)
	LastDeployed(target string) (string, error)
	History(target string, limit int) ([]state.Entry, error)
}

var _ Store = (*state.Store)(nil)

// preVerifyGates drops candidates the agent already knows it must not
// deploy, before spending registry requests on verification: quarantined
// digests and digests this target has already moved past.
func preVerifyGates(deps Deps, results []TargetResult, opts Options) {
	if deps.Store == nil || opts.Mode != Agent {
		return // by hand, an operator may deploy what the agent would refuse
	}
	for i := range results {
		r := &results[i]
		if r.Outcome != "" || r.Candidate.Digest == "" {
			continue
		}
		id, d := r.Target.ID, r.Candidate.Digest
		q, ok, err := deps.Store.IsQuarantined(id, d)
		switch {
		case err != nil:
			r.Outcome, r.Err, r.Reason = deployer.Failed, err, "state: "+err.Error()
			continue
		case ok:
			r.Outcome = deployer.Blocked
			r.Reason = fmt.Sprintf("%s is quarantined since %s (%s); it is retried when the registry offers another digest, or after `shipwatch quarantine clear %s`",
				shortDigest(d), q.Since.Format(time.RFC3339), q.Reason, id)
			continue
		}
		mark, ok, err := deps.Store.HighWater(id)
		if err != nil {
			r.Outcome, r.Err, r.Reason = deployer.Failed, err, "state: "+err.Error()
			continue
		}
		if ok && older(r.Candidate.Tag, mark.Tag) {
			r.Outcome = deployer.Blocked
			r.Reason = fmt.Sprintf("%s is older than %s, which this target already ran; shipwatch never downgrades on its own (use shipwatch rollout --to %s to do it by hand)",
				r.Candidate.Tag, mark.Tag, r.Candidate.Tag)
			continue
		}
		if ok && contains(mark.Superseded, d) {
			r.Outcome = deployer.Blocked
			r.Reason = fmt.Sprintf("the tag %s moved back to %s, a digest this target already replaced with a newer one; refusing the silent downgrade (use shipwatch rollout --to %s to do it by hand)",
				r.Candidate.Tag, shortDigest(d), d)
			continue
		}
		backoff := config.Default().Rollout
		if deps.Config != nil {
			backoff = deps.Config.Rollout
		}
		next, attempts, err := retryAt(deps.Store, id, r.Candidate.String(), backoff)
		if err != nil {
			r.Outcome, r.Err, r.Reason = deployer.Failed, err, "state: "+err.Error()
			continue
		}
		if now := deps.now(); now.Before(next) {
			r.Outcome = deployer.Available
			r.Reason = fmt.Sprintf("verified earlier; %d rollout attempt(s) of %s failed for reasons that are not the image's; next attempt after %s (shipwatch rollout %s tries now)",
				attempts, shortDigest(d), next.Format(time.RFC3339), id)
		}
	}
}

// retryAt returns when the agent may try candidate on target again after
// rollouts that failed without the image being at fault (the digest is not
// quarantined, but it is not retried on every pass either): the configured
// backoff after the first failure, doubling, at most its maximum. A success
// or a different candidate in between resets it.
func retryAt(s Store, target, candidate string, cfg config.Rollout) (time.Time, int, error) {
	hist, err := s.History(target, 50)
	if err != nil {
		return time.Time{}, 0, err
	}
	attempts := 0
	var last time.Time
	for _, e := range hist { // newest first
		if !e.Deployed {
			continue
		}
		if e.To != candidate || (e.Outcome != string(deployer.Failed) && e.Outcome != string(deployer.RolledBack)) {
			break
		}
		if attempts == 0 {
			last = e.Time
		}
		attempts++
	}
	if attempts == 0 {
		return time.Time{}, 0, nil
	}
	wait, most := cfg.RetryBackoff.Std(), cfg.RetryBackoffMax.Std() // validated: 1s ≤ wait ≤ most
	for i := 1; i < attempts && wait < most; i++ {
		if wait > most/2 {
			wait = most
			break
		}
		wait *= 2
	}
	return last.Add(wait), attempts, nil
}

// older reports whether tag a is an older version than tag b (both must read
// as versions of the same shape; otherwise nothing can be said).
func older(a, b string) bool {
	if a == "" || b == "" || a == b {
		return false
	}
	va, errA := watcher.ParseVersionTag(a)
	vb, errB := watcher.ParseVersionTag(b)
	if errA != nil || errB != nil || !va.Comparable(vb) {
		return false
	}
	return va.Compare(vb) < 0
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// deployGates decides, in agent mode, whether an allowed candidate is
// deployed now: approvals (manual, or by semver level), maintenance windows
// and cooldown. A candidate held back ends the pass as Available with the
// reason; it is deployed by a later pass once the gate opens.
func deployGates(deps Deps, results []TargetResult, opts Options, now time.Time) {
	if opts.Mode != Agent {
		return
	}
	for i := range results {
		r := &results[i]
		if r.Outcome != "" || r.Candidate.Digest == "" {
			continue
		}
		pol := r.Policy
		if open, next := inWindow(pol.Windows, now); !open {
			r.Outcome = deployer.Available
			r.Reason = "verified; outside the maintenance window (next opens " + next.Format(time.RFC3339) + ")"
			continue
		}
		if pol.Cooldown > 0 && deps.Store != nil {
			first, err := firstSeen(deps.Store, r.Target.ID, r.Candidate.Digest, now)
			if err != nil {
				r.Outcome, r.Err, r.Reason = deployer.Failed, err, "state: "+err.Error()
				continue
			}
			if ready := first.Add(pol.Cooldown); now.Before(ready) {
				r.Outcome = deployer.Available
				r.Reason = "verified; in cooldown until " + ready.Format(time.RFC3339)
				continue
			}
		}
		mode := approvalMode(pol, r.Target.Image.Tag, r.Candidate.Tag)
		switch mode {
		case "never":
			r.Outcome = deployer.Available
			r.Reason = fmt.Sprintf("verified; %s updates are never applied automatically (levels); use shipwatch rollout to apply it by hand", level(r.Target.Image.Tag, r.Candidate.Tag))
			continue
		case "manual":
			if deps.Store == nil {
				r.Outcome, r.Reason = deployer.Available, "verified; waits for approval"
				continue
			}
			cand := r.Candidate.String()
			a, ok, err := deps.Store.Approval(r.Target.ID)
			if err != nil {
				r.Outcome, r.Err, r.Reason = deployer.Failed, err, "state: "+err.Error()
				continue
			}
			if ok && a.Approved && a.Candidate == cand {
				r.Reason += "; approved by " + a.ApprovedBy
				continue // deploy
			}
			if err := deps.Store.SetPending(state.Approval{Target: r.Target.ID, Candidate: cand, Reason: r.Reason}); err != nil {
				r.Outcome, r.Err, r.Reason = deployer.Failed, err, "state: "+err.Error()
				continue
			}
			r.Outcome = deployer.Available
			r.Reason = fmt.Sprintf("verified; waits for approval: shipwatch approve %s", r.Target.ID)
			r.NeedsApproval = true
		}
	}
}

// approvalMode combines the target's approval setting with its semver-level
// rules: the stricter one wins.
func approvalMode(pol config.Effective, from, to string) string {
	mode := pol.Approval
	if mode == "" {
		mode = "auto"
	}
	levelMode := ""
	switch level(from, to) {
	case "major":
		levelMode = pol.Levels.Major
	case "minor":
		levelMode = pol.Levels.Minor
	case "patch":
		levelMode = pol.Levels.Patch
	}
	rank := map[string]int{"": 0, "auto": 1, "manual": 2, "never": 3}
	if rank[levelMode] > rank[mode] {
		return levelMode
	}
	return mode
}

// level names the semver level of a tag change: major, minor, patch, or ""
// (same tag, or tags that do not read as versions).
func level(from, to string) string {
	if from == to {
		return ""
	}
	a, errA := watcher.ParseVersionTag(from)
	b, errB := watcher.ParseVersionTag(to)
	if errA != nil || errB != nil {
		return ""
	}
	switch {
	case a.Major != b.Major:
		return "major"
	case a.Minor != b.Minor:
		return "minor"
	}
	return "patch"
}

// inWindow reports whether now is inside one of the windows (always, when
// there are none) and otherwise when the next one opens.
func inWindow(windows []config.Window, now time.Time) (bool, time.Time) {
	if len(windows) == 0 {
		return true, now
	}
	var next time.Time
	for _, w := range windows {
		sched, err := config.CronParser.Parse(w.Cron)
		if err != nil {
			continue // validated at start-up
		}
		// The window is open if it opened within the last Duration: find the
		// last opening before now by stepping from now - Duration.
		if open := sched.Next(now.Add(-w.Duration.Std())); !open.After(now) {
			return true, now
		}
		if n := sched.Next(now); next.IsZero() || n.Before(next) {
			next = n
		}
	}
	return false, next
}

// firstSeen returns when the agent first saw digest as target's candidate.
func firstSeen(s Store, target, digest string, now time.Time) (time.Time, error) {
	return s.Seen("seen/"+target+"/"+digest, now)
}

// waveOrder returns the indexes of results to deploy, grouped by wave
// (ascending), and within a wave Compose dependencies first.
func waveOrder(results []TargetResult, idx []int) [][]int {
	byWave := map[int][]int{}
	var waves []int
	for _, i := range idx {
		w := results[i].Policy.Wave
		if _, ok := byWave[w]; !ok {
			waves = append(waves, w)
		}
		byWave[w] = append(byWave[w], i)
	}
	sort.Ints(waves)
	out := make([][]int, 0, len(waves))
	for _, w := range waves {
		out = append(out, dependencyOrder(results, byWave[w]))
	}
	return out
}

// dependencyOrder sorts Compose targets so that a service comes after the
// services of the same project it depends on (com.docker.compose.depends_on).
func dependencyOrder(results []TargetResult, idx []int) []int {
	sort.SliceStable(idx, func(a, b int) bool { return results[idx[a]].Target.ID < results[idx[b]].Target.ID })
	pos := map[string]int{}
	for _, i := range idx {
		pos[results[i].Target.ID] = i
	}
	var out []int
	done := map[int]bool{}
	var visit func(i int, depth int)
	visit = func(i int, depth int) {
		if done[i] || depth > len(idx) {
			return
		}
		t := results[i].Target
		if t.Compose != nil {
			for _, dep := range dependsOn(t.Labels["com.docker.compose.depends_on"]) {
				if j, ok := pos["compose/"+t.Compose.Project+"/"+dep]; ok {
					visit(j, depth+1)
				}
			}
		}
		if !done[i] {
			done[i] = true
			out = append(out, i)
		}
	}
	for _, i := range idx {
		visit(i, 0)
	}
	return out
}

// dependsOn parses the compose label "db:service_healthy:false,cache:service_started:true".
func dependsOn(label string) []string {
	var out []string
	for _, part := range strings.Split(label, ",") {
		if name, _, _ := strings.Cut(strings.TrimSpace(part), ":"); name != "" {
			out = append(out, name)
		}
	}
	return out
}
