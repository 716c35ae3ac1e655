// Package verify decides whether an image digest may run: it finds the
// digest's cosign signatures and attestations (sigstore bundles through the
// OCI referrers API or its fallback tag, legacy ".sig"/".att" tags), checks
// them with sigstore-go against the policy's authorities, evaluates scan and
// provenance rules, and returns a Verdict: allowed, blocked (decided no) or
// undecided (could not decide; retry later). It never imports Docker.
package verify

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/rs/zerolog"

	"github.com/shipwatch/shipwatch/imageref"
)

// verifyTimeout bounds one verification whose context has no deadline.
const verifyTimeout = 2 * time.Minute

// Verifier verifies image digests against compiled policies. It is safe for
// concurrent use; it reuses registry connections and tokens across calls.
type Verifier struct {
	policies  []*compiledPolicy
	reg       *registryClient
	harbor    *harborClient
	cache     *Cache
	log       zerolog.Logger
	now       func() time.Time
	platforms []platform
	warnings  []string
	insecure  map[string]bool
}

// New validates and compiles the policies once: keys and trusted roots are
// loaded, regexes and patterns compiled. A bad PEM key, trusted root, regex
// or value is an error naming the policy, the authority and the field.
func New(opts Options) (*Verifier, error) {
	v := &Verifier{log: opts.Logger, now: opts.Now, cache: opts.Cache}
	if v.now == nil {
		v.now = time.Now
	}
	if v.cache == nil {
		v.cache = NewCache(0)
	}
	platforms := opts.Platforms
	if len(platforms) == 0 {
		platforms = []string{"linux/" + runtime.GOARCH}
	}
	for i, s := range platforms {
		pl, err := parsePlatform(s)
		if err != nil {
			return nil, fmt.Errorf("platforms[%d]: %w", i, err)
		}
		v.platforms = append(v.platforms, pl)
	}
	names := map[string]bool{}
	for i, spec := range opts.Policies {
		p, err := compilePolicy(i, spec, platforms)
		if err != nil {
			return nil, err
		}
		if names[p.name] {
			return nil, fmt.Errorf("policies[%d]: name %q is used twice", i, p.name)
		}
		names[p.name] = true
		v.policies = append(v.policies, p)
		if p.allowUnsigned {
			v.warnings = append(v.warnings, fmt.Sprintf("policy %q allows unsigned images for %s", p.name, strings.Join(p.images, ", ")))
		}
		if p.mode == ModeWarn {
			v.warnings = append(v.warnings, fmt.Sprintf("policy %q is in warn mode: verdicts for %s are reported but never block", p.name, strings.Join(p.images, ", ")))
		}
	}
	kc := opts.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	rt := opts.Transport
	if rt == nil {
		rt = http.DefaultTransport.(*http.Transport).Clone()
	}
	v.reg = newRegistryClient(kc, rt, v.now)
	v.insecure = map[string]bool{}
	for _, h := range opts.InsecureRegistries {
		v.insecure[h] = true
	}
	v.harbor = &harborClient{keychain: kc, transport: rt}
	return v, nil
}

// Warnings are the start-up warnings the agent must log loudly: policies
// that allow unsigned images, policies in warn mode.
func (v *Verifier) Warnings() []string { return append([]string(nil), v.warnings...) }

// Verify decides whether image may run. image must carry a digest
// (repo[:tag]@sha256:…): exactly that digest is verified (design rule 1);
// without one the verdict is undecided. Verify never returns an error: every
// failure is a verdict with its reasons.
func (v *Verifier) Verify(ctx context.Context, image imageref.Ref) Verdict {
	now := v.now()
	vd := Verdict{Image: image.Repo() + "@" + image.Digest, Mode: ModeEnforce, Reasons: []Reason{}}
	if image.Digest == "" {
		vd.Image = image.String()
		vd.Decision = Undecided
		vd.Reasons = append(vd.Reasons, Reason{Rule: RuleImage, Message: fmt.Sprintf("%s has no digest: resolve the tag to a digest and verify that digest (shipwatch deploys exactly what it verified)", image.Familiar())})
		return vd
	}
	if !strings.HasPrefix(image.Digest, "sha256:") || !imageref.ValidDigest(image.Digest) {
		vd.Decision = Blocked
		vd.Reasons = append(vd.Reasons, Reason{Rule: RuleImage, Message: fmt.Sprintf("digest %q: only sha256 digests can be verified", printable(image.Digest))})
		return vd
	}
	p := v.match(image.Repo())
	if p == nil {
		vd.Decision = Blocked
		vd.Reasons = append(vd.Reasons, Reason{Rule: RulePolicy, Message: fmt.Sprintf("no verification policy matches %s; add one or set allowUnsigned for it", image.Repo())})
		return vd
	}
	vd.Policy, vd.Mode = p.name, p.mode
	key := cacheKey(image.Digest, p.hash)
	if set := v.cache.get(key, now); set != nil {
		if cached := v.verdict(vd, p, set, now); cached.Decision == Allowed {
			cached.Cached = true
			return cached
		}
		// Not allowed any more (the scan aged): look again, a newer scan
		// may have been published.
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, verifyTimeout)
		defer cancel()
	}
	repo, err := parseRepository(image.Repo(), v.insecure[image.Domain])
	if err != nil {
		vd.Decision = Blocked
		vd.Reasons = append(vd.Reasons, Reason{Rule: RuleImage, Message: fmt.Sprintf("repository %s: %v", image.Repo(), err)})
		return vd
	}
	set := v.collect(ctx, repo, image, p)
	out := v.verdict(vd, p, set, now)
	if out.Decision == Allowed && set.unreachable == nil {
		v.cache.put(key, set, now)
	}
	v.log.Debug().Str("image", out.Image).Str("policy", p.name).Str("decision", string(out.Decision)).Msg("verified image")
	return out
}

// match returns the first policy whose patterns match repo.
func (v *Verifier) match(repo string) *compiledPolicy {
	for _, p := range v.policies {
		if p.matches(repo) {
			return p
		}
	}
	return nil
}

// platform is "os/arch[/variant]".
type platform struct{ os, arch, variant string }

func (p platform) String() string {
	s := p.os + "/" + p.arch
	if p.variant != "" {
		s += "/" + p.variant
	}
	return s
}

func parsePlatform(s string) (platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return platform{}, fmt.Errorf("platform %q: want os/arch[/variant]", s)
	}
	p := platform{os: parts[0], arch: parts[1]}
	if len(parts) == 3 {
		p.variant = parts[2]
	}
	return p, nil
}

func (p platform) matches(d descriptor) bool {
	if d.Platform == nil || d.Platform.OS != p.os || d.Platform.Architecture != p.arch {
		return false
	}
	if p.variant == "" {
		return true
	}
	v := d.Platform.Variant
	if v == "" && p.arch == "arm64" {
		v = "v8"
	}
	return v == p.variant
}
