package agent

import (
	"strings"

	"github.com/shipwatch/shipwatch/config"
	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/imageref"
)

// hint is a registry's word that a repository changed. It is only a hint:
// the pass it triggers asks the registry and verifies as always.
type hint struct {
	repository string // normalized: "docker.io/library/nginx"
	tag        string
}

// trigger queues a pass for the targets of repository. Hints for a
// repository already queued are coalesced; a full queue drops the hint (the
// schedule will catch up) rather than blocking the webhook.
func (a *Agent) trigger(repository, tag string) int {
	repo := normalizeRepo(repository)
	if repo == "" {
		return 0
	}
	// The count is what the last pass knew; a target that appeared since is
	// found by the pass itself, so the hint is queued even for 0.
	matched := a.countTargetsOf(repo)
	a.mu.Lock()
	if a.queued == nil {
		a.queued = map[string]bool{}
	}
	if a.queued[repo] {
		a.mu.Unlock()
		return matched
	}
	a.queued[repo] = true
	a.mu.Unlock()
	select {
	case a.hints <- hint{repository: repo, tag: tag}:
	default:
		a.mu.Lock()
		delete(a.queued, repo)
		a.mu.Unlock()
		a.log.Warn().Str("repository", repo).Msg("hint queue full: dropped (the schedule catches up)")
	}
	return matched
}

// normalizeRepo turns "nginx", "library/nginx" or "docker.io/library/nginx"
// into the normalized repository.
func normalizeRepo(repository string) string {
	ref, err := imageref.Parse(strings.TrimSpace(repository))
	if err != nil {
		return ""
	}
	return ref.Repo()
}

// countTargetsOf says how many targets of the last pass use repo; before the
// first pass it assumes some do.
func (a *Agent) countTargetsOf(repo string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.lastPass.IsZero() {
		return 1
	}
	n := 0
	for _, t := range a.status {
		if ref, err := imageref.Parse(t.Image); err == nil && ref.Repo() == repo {
			n++
		}
	}
	return n
}

func (a *Agent) hintFilter(h hint) func(deployer.Target, config.Effective) bool {
	a.mu.Lock()
	delete(a.queued, h.repository)
	a.mu.Unlock()
	return func(t deployer.Target, _ config.Effective) bool { return t.Image.Repo() == h.repository }
}
