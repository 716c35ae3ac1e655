package pass

import (
	"fmt"
	"strings"
	"sync"

	"github.com/shipwatch/shipwatch/config"
	"github.com/shipwatch/shipwatch/watcher"
)

// Policies compiles effective update policies into watcher policies, once
// per distinct policy (targets that share a policy share its compiled form).
type Policies struct {
	mu    sync.Mutex
	cache map[string]*watcher.Policy
}

// NewPolicies returns an empty policy cache.
func NewPolicies() *Policies { return &Policies{cache: map[string]*watcher.Policy{}} }

// For returns the compiled watcher policy of eff.
func (p *Policies) For(eff config.Effective) (*watcher.Policy, error) {
	spec := watcher.PolicySpec{
		Mode:       eff.Update,
		Range:      eff.Semver,
		Prerelease: eff.Prerelease,
		Include:    eff.Include,
		Exclude:    eff.Exclude,
		Frozen:     eff.Freeze,
	}
	key := fmt.Sprintf("%s|%s|%v|%s|%s|%v", spec.Mode, spec.Range, spec.Prerelease,
		strings.Join(spec.Include, "\x00"), strings.Join(spec.Exclude, "\x00"), spec.Frozen)
	p.mu.Lock()
	defer p.mu.Unlock()
	if pol, ok := p.cache[key]; ok {
		return pol, nil
	}
	pol, err := watcher.CompilePolicy(spec)
	if err != nil {
		return nil, fmt.Errorf("policy from %s: %w", eff.Source, err)
	}
	p.cache[key] = pol
	return pol, nil
}
