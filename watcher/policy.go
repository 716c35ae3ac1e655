package watcher

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/Masterminds/semver/v3"
)

// The update modes of a policy.
const (
	// ModeDigest follows the digest of the tag that runs (":1.4",
	// ":latest"): the candidate is the same tag when it points at a new digest.
	ModeDigest = "digest"
	// ModeSemver follows the newest version tag allowed by the range, the
	// pre-release switch and the include/exclude regexes, never older than
	// the running tag; when that tag is the running one it follows its digest.
	ModeSemver = "semver"
)

// PolicySpec is the plain-data tag policy of one target; the config
// package maps YAML onto it and CompilePolicy turns it into a Policy once,
// at start-up.
//
// The zero PolicySpec follows the digest of the running tag.
//
// There is deliberately no regex-only mode that picks "the newest" of the
// matching tags: tag names carry no reliable order (lexically "build-9" >
// "build-10"; push time needs a manifest and config GET per tag). Following
// tags therefore needs version tags (mode semver); Include and Exclude
// narrow the candidates on top of either mode.
type PolicySpec struct {
	Mode       string   // "digest" (default when empty) or "semver"
	Range      string   // semver constraint for mode semver: "~1.4", "^1", ">=1.2 <2"; "" = any
	Prerelease bool     // mode semver: allow pre-release tags ("2.0.0-rc.1")
	Include    []string // regexes a tag must match (any of); unanchored unless written with ^…$
	Exclude    []string // regexes a tag must not match (none of)
	Frozen     bool     // never propose anything
}

// Policy is a compiled PolicySpec. It is immutable and safe for concurrent use.
type Policy struct {
	spec       PolicySpec
	constraint *semver.Constraints
	include    []*regexp.Regexp
	exclude    []*regexp.Regexp
}

// maxRegexLen bounds include/exclude patterns; longer ones are a config mistake.
const maxRegexLen = 1024

// CompilePolicy validates spec and compiles its range and regexes. Every
// problem is reported (joined), each naming the field, its value and what
// is allowed, so that the config package can prefix its own field path.
func CompilePolicy(spec PolicySpec) (*Policy, error) {
	p := &Policy{spec: spec}
	var errs []error
	switch spec.Mode {
	case "", ModeDigest:
		p.spec.Mode = ModeDigest
		if spec.Range != "" {
			errs = append(errs, fmt.Errorf("range: %q is only used with mode %q (mode is %q); remove it or set mode %q", spec.Range, ModeSemver, ModeDigest, ModeSemver))
		}
		if spec.Prerelease {
			errs = append(errs, fmt.Errorf("prerelease: only used with mode %q (mode is %q); remove it or set mode %q", ModeSemver, ModeDigest, ModeSemver))
		}
	case ModeSemver:
		if spec.Range != "" {
			c, err := semver.NewConstraint(spec.Range)
			if err != nil {
				errs = append(errs, fmt.Errorf("range: %q is not a semver range (%v); use forms like \"~1.4\", \"^1\", \">=1.2 <2\" or \"\" for any", spec.Range, err))
			} else {
				c.IncludePrerelease = spec.Prerelease
				p.constraint = c
			}
		}
	default:
		errs = append(errs, fmt.Errorf("mode: %q is not allowed; use %q (follow the digest of the running tag) or %q (newest version tag in a range)", spec.Mode, ModeDigest, ModeSemver))
	}
	compile := func(field string, pats []string) []*regexp.Regexp {
		var out []*regexp.Regexp
		for i, pat := range pats {
			if pat == "" || len(pat) > maxRegexLen {
				errs = append(errs, fmt.Errorf("%s[%d]: must be a regular expression of 1 to %d characters", field, i, maxRegexLen))
				continue
			}
			re, err := regexp.Compile(pat)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s[%d]: %q is not a valid regular expression (%v); use Go RE2 syntax such as \"^1\\\\.\"", field, i, pat, errors.Unwrap(err)))
				continue
			}
			out = append(out, re)
		}
		return out
	}
	p.include = compile("include", spec.Include)
	p.exclude = compile("exclude", spec.Exclude)
	p.spec.Include = append([]string(nil), spec.Include...)
	p.spec.Exclude = append([]string(nil), spec.Exclude...)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return p, nil
}

// MustCompilePolicy is CompilePolicy for constants and tests; it panics on error.
func MustCompilePolicy(spec PolicySpec) *Policy {
	p, err := CompilePolicy(spec)
	if err != nil {
		panic(err)
	}
	return p
}

// Spec returns the policy's spec (with the default mode filled in).
func (p *Policy) Spec() PolicySpec {
	s := p.spec
	s.Include = append([]string(nil), s.Include...)
	s.Exclude = append([]string(nil), s.Exclude...)
	return s
}

// Mode is ModeDigest or ModeSemver.
func (p *Policy) Mode() string { return p.spec.Mode }

// Frozen reports whether the policy never proposes anything.
func (p *Policy) Frozen() bool { return p.spec.Frozen }

// FollowsTags reports whether checking the policy needs the tag list.
func (p *Policy) FollowsTags() bool { return p.spec.Mode == ModeSemver && !p.spec.Frozen }

// String describes the policy for humans: "semver ~1.4 (include ^1\.)".
func (p *Policy) String() string {
	if p.spec.Frozen {
		return "frozen"
	}
	s := p.spec.Mode
	if p.spec.Range != "" {
		s += " " + p.spec.Range
	}
	var extra []string
	if p.spec.Prerelease {
		extra = append(extra, "pre-releases")
	}
	if len(p.spec.Include) > 0 {
		extra = append(extra, "include "+strings.Join(p.spec.Include, " | "))
	}
	if len(p.spec.Exclude) > 0 {
		extra = append(extra, "exclude "+strings.Join(p.spec.Exclude, " | "))
	}
	if len(extra) > 0 {
		s += " (" + strings.Join(extra, ", ") + ")"
	}
	return s
}

// Selection is what a policy picks for a running tag among the tags of its
// repository.
type Selection struct {
	// Tag is the chosen tag; "" when the policy allows nothing.
	Tag string
	// Newer is true when Tag is a newer version than the running tag (a
	// tag change); false when Tag is the running tag, whose digest is then
	// followed.
	Newer bool
	// Reason says why, for humans ("1.5.2 is the newest tag in ~1.4").
	Reason string
}

// ErrPolicyMismatch is wrapped when a policy cannot apply to a running tag
// (mode semver on "latest").
var ErrPolicyMismatch = errors.New("policy does not fit the running tag")

// CheckRunning reports whether the policy can be applied to the running tag
// at all, before any registry request: mode semver needs a version tag.
func (p *Policy) CheckRunning(running string) error {
	if p.spec.Frozen || p.spec.Mode != ModeSemver {
		return nil
	}
	if _, err := ParseVersionTag(running); err != nil {
		return fmt.Errorf("%w: mode %q needs the running tag to be a version such as 1.4.2, but it is %q; use mode %q to follow the digest of %q",
			ErrPolicyMismatch, ModeSemver, running, ModeDigest, running)
	}
	return nil
}

// Select picks the tag to follow for a target running tag running, among
// tags (the repository's tag list; ignored in mode digest). It is pure:
// the caller resolves the chosen tag's digest.
//
// Mode digest selects the running tag unless include/exclude reject it.
// Mode semver selects the newest tag that has the running tag's shape
// (numeric parts and suffix), passes include/exclude, the range and the
// pre-release switch, and is strictly newer than the running tag; when
// there is none it selects the running tag itself if that is allowed (its
// digest is followed), and nothing otherwise. Among equal versions it
// prefers the running tag's prefix ("v"), then the shorter, then the
// lexically smaller tag, so the choice is deterministic. A version older
// than the running tag is never selected (no downgrades).
func (p *Policy) Select(running string, tags []string) (Selection, error) {
	if p.spec.Frozen {
		return Selection{Reason: "frozen by policy"}, nil
	}
	if p.spec.Mode != ModeSemver {
		if why := p.filterTag(running); why != "" {
			return Selection{Reason: fmt.Sprintf("tag %s %s", running, why)}, nil
		}
		return Selection{Tag: running, Reason: "following the digest of tag " + running}, nil
	}
	if err := p.CheckRunning(running); err != nil {
		return Selection{}, err
	}
	rv, _ := ParseVersionTag(running)
	var best *Version
	for _, t := range tags {
		v, err := ParseVersionTag(t)
		if err != nil || !rv.Comparable(v) || v.Compare(rv) <= 0 || p.filter(v) != "" {
			continue
		}
		if best == nil || better(v, *best, rv.Prefix) {
			vv := v
			best = &vv
		}
	}
	where := "allowed tag"
	if p.spec.Range != "" {
		where = "tag in " + p.spec.Range
	}
	if best != nil {
		return Selection{Tag: best.Tag, Newer: true, Reason: fmt.Sprintf("%s is the newest %s (running %s)", best.Tag, where, running)}, nil
	}
	if why := p.filter(rv); why != "" {
		return Selection{Reason: fmt.Sprintf("no %s is newer than %s, and %s itself %s", where, running, running, why)}, nil
	}
	return Selection{Tag: running, Reason: fmt.Sprintf("%s is the newest %s", running, where)}, nil
}

// better reports whether a should be chosen over b: newer, or equal and
// with the running prefix, shorter, lexically smaller.
func better(a, b Version, prefix string) bool {
	if c := a.Compare(b); c != 0 {
		return c > 0
	}
	if (a.Prefix == prefix) != (b.Prefix == prefix) {
		return a.Prefix == prefix
	}
	if len(a.Tag) != len(b.Tag) {
		return len(a.Tag) < len(b.Tag)
	}
	return a.Tag < b.Tag
}

// filter returns why v is not allowed by the range, the pre-release switch
// or the regexes, or "" when it is allowed.
func (p *Policy) filter(v Version) string {
	if v.Pre != "" && !p.spec.Prerelease {
		return "is a pre-release (pre-releases are not allowed)"
	}
	if p.constraint != nil && !p.constraint.Check(v.semver()) {
		return "is outside " + p.spec.Range
	}
	return p.filterTag(v.Tag)
}

// filterTag applies include/exclude to a tag name.
func (p *Policy) filterTag(tag string) string {
	if len(p.include) > 0 {
		ok := false
		for _, re := range p.include {
			if re.MatchString(tag) {
				ok = true
				break
			}
		}
		if !ok {
			return "matches no include pattern (" + strings.Join(p.spec.Include, " | ") + ")"
		}
	}
	for _, re := range p.exclude {
		if re.MatchString(tag) {
			return "is excluded by policy (" + re.String() + ")"
		}
	}
	return ""
}
