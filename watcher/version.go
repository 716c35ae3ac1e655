package watcher

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/Masterminds/semver/v3"
)

// Version is an image tag read as a version: "v1.27.3-rc.1-alpine" is
// prefix "v", numbers 1.27.3 (three parts), pre-release "rc.1" and
// suffix "alpine".
//
// The shape of a tag is its number of numeric parts and its suffix. Two tags
// are comparable only when their shapes are equal (see Comparable): "1.27"
// is a moving channel and "1.27.3" a pinned release, so a target that runs
// one is never moved to the other, and "-alpine" never becomes "-bookworm".
type Version struct {
	Tag    string // the tag as parsed; String returns it unchanged
	Prefix string // "v", "V" or ""
	Major  uint64
	Minor  uint64
	Patch  uint64
	Parts  int    // how many numeric parts the tag has: 1, 2 or 3
	Pre    string // pre-release ("rc.1", "beta2"), "" for a release
	Suffix string // variant after the version ("alpine", "bookworm-slim"), "" for none
}

// ErrNotVersion is wrapped by ParseVersionTag errors.
var ErrNotVersion = errors.New("not a version tag")

// maxTagLen is the longest tag the distribution spec allows.
const maxTagLen = 128

// preReleaseWords start a pre-release field ("rc1", "beta.2", "alpha").
// Any other word after the numbers is a suffix (a variant such as
// "alpine"), which must match exactly between the running tag and a
// candidate.
var preReleaseWords = []string{"alpha", "beta", "rc", "pre", "preview", "dev", "snapshot", "canary", "nightly", "next", "ea"}

// ParseVersionTag reads tag as a version. Accepted forms are
//
//	[v]N[.N[.N]][-PRE[-NUM...]][-SUFFIX]
//
// where N are decimal numbers, PRE is a pre-release field that starts with
// one of alpha, beta, rc, pre, preview, dev, snapshot, canary, nightly, next
// or ea (optionally followed by digits and dot-separated alphanumerics:
// "rc.1", "beta2", "alpha.1.x"), the numeric fields right after it belong
// to it ("beta-1"), and SUFFIX is everything else after the next dash
// ("alpine", "bookworm-slim", "alpine3.20"). Tags such as "latest",
// "1.2.3.4" or "1.2.3_x" are not versions.
func ParseVersionTag(tag string) (Version, error) {
	fail := func(why string) (Version, error) {
		return Version{}, fmt.Errorf("%w: %q %s", ErrNotVersion, tag, why)
	}
	if tag == "" {
		return fail("is empty")
	}
	if len(tag) > maxTagLen {
		return fail(fmt.Sprintf("is longer than %d characters", maxTagLen))
	}
	v := Version{Tag: tag}
	rest := tag
	if rest[0] == 'v' || rest[0] == 'V' {
		v.Prefix, rest = rest[:1], rest[1:]
	}
	core, tail, hasTail := strings.Cut(rest, "-")
	nums := strings.Split(core, ".")
	if len(nums) > 3 {
		return fail("has more than three numeric parts")
	}
	for i, s := range nums {
		if s == "" || !isDigits(s) {
			return fail("does not start with numbers separated by dots")
		}
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return fail("has a number out of range")
		}
		switch i {
		case 0:
			v.Major = n
		case 1:
			v.Minor = n
		case 2:
			v.Patch = n
		}
	}
	v.Parts = len(nums)
	if !hasTail {
		return v, nil
	}
	fields := strings.Split(tail, "-")
	for _, f := range fields {
		if f == "" {
			return fail("has an empty field between dashes")
		}
		for _, r := range f {
			if !isAlnum(r) && r != '.' && r != '_' {
				return fail(fmt.Sprintf("has the character %q, which tags cannot contain", r))
			}
		}
	}
	i := 0
	if isPreRelease(fields[0]) {
		i = 1
		for i < len(fields) && isDigits(fields[i]) {
			i++
		}
		v.Pre = strings.Join(fields[:i], "-")
	}
	v.Suffix = strings.Join(fields[i:], "-")
	return v, nil
}

func isPreRelease(field string) bool {
	ids := strings.Split(field, ".")
	head := strings.ToLower(ids[0])
	word := strings.TrimRightFunc(head, func(r rune) bool { return r >= '0' && r <= '9' })
	known := false
	for _, w := range preReleaseWords {
		if word == w {
			known = true
			break
		}
	}
	if !known {
		return false
	}
	for _, id := range ids[1:] {
		if id == "" {
			return false
		}
		for _, r := range id {
			if !isAlnum(r) {
				return false
			}
		}
	}
	return true
}

func isDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}

func isAlnum(r rune) bool {
	return (r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z')
}

// String returns the tag the version was parsed from.
func (v Version) String() string { return v.Tag }

// Comparable reports whether o has the same shape as v: the same number of
// numeric parts and the same suffix. Only comparable tags are candidates
// for each other.
func (v Version) Comparable(o Version) bool {
	return v.Parts == o.Parts && v.Suffix == o.Suffix
}

// Compare orders versions by semver precedence of their numbers and
// pre-release (a release is newer than its pre-releases); prefix and suffix
// are ignored. It returns -1, 0 or +1.
func (v Version) Compare(o Version) int {
	for _, d := range [3][2]uint64{{v.Major, o.Major}, {v.Minor, o.Minor}, {v.Patch, o.Patch}} {
		if d[0] != d[1] {
			if d[0] < d[1] {
				return -1
			}
			return 1
		}
	}
	switch {
	case v.Pre == o.Pre:
		return 0
	case v.Pre == "":
		return 1
	case o.Pre == "":
		return -1
	}
	return comparePre(v.Pre, o.Pre)
}

// comparePre compares pre-releases by semver rule 11 (dot-separated
// identifiers; numeric ones compare as numbers and sort before words),
// extended to a total order: dashes separate identifiers too, and numbers
// equal in value but written differently ("01", "1") compare as strings.
func comparePre(a, b string) int {
	split := func(s string) []string {
		return strings.FieldsFunc(s, func(r rune) bool { return r == '.' || r == '-' })
	}
	as, bs := split(a), split(b)
	for i := 0; i < len(as) && i < len(bs); i++ {
		if c := compareIdent(as[i], bs[i]); c != 0 {
			return c
		}
	}
	switch {
	case len(as) < len(bs):
		return -1
	case len(as) > len(bs):
		return 1
	}
	return strings.Compare(a, b)
}

func compareIdent(a, b string) int {
	an, bn := isDigits(a), isDigits(b)
	switch {
	case an && bn:
		ta, tb := strings.TrimLeft(a, "0"), strings.TrimLeft(b, "0")
		if len(ta) != len(tb) {
			if len(ta) < len(tb) {
				return -1
			}
			return 1
		}
		if c := strings.Compare(ta, tb); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	case an:
		return -1
	case bn:
		return 1
	}
	return strings.Compare(a, b)
}

// semver is v as a Masterminds version, for range checks.
func (v Version) semver() *semver.Version {
	return semver.New(v.Major, v.Minor, v.Patch, v.Pre, "")
}
