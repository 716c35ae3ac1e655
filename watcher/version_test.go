package watcher

import (
	"errors"
	"strings"
	"testing"

	"github.com/shipwatch/shipwatch/imageref"
)

func TestParseVersionTag(t *testing.T) {
	for _, tc := range []struct {
		tag  string
		want Version // Tag is filled in from tag
		err  bool
	}{
		{tag: "1", want: Version{Major: 1, Parts: 1}},
		{tag: "1.27", want: Version{Major: 1, Minor: 27, Parts: 2}},
		{tag: "1.27.3", want: Version{Major: 1, Minor: 27, Patch: 3, Parts: 3}},
		{tag: "v2.0.1", want: Version{Prefix: "v", Major: 2, Patch: 1, Parts: 3}},
		{tag: "V3", want: Version{Prefix: "V", Major: 3, Parts: 1}},
		{tag: "1.27.3-alpine", want: Version{Major: 1, Minor: 27, Patch: 3, Parts: 3, Suffix: "alpine"}},
		{tag: "1.27.4-alpine3.21", want: Version{Major: 1, Minor: 27, Patch: 4, Parts: 3, Suffix: "alpine3.21"}},
		{tag: "1.27-bookworm-slim", want: Version{Major: 1, Minor: 27, Parts: 2, Suffix: "bookworm-slim"}},
		{tag: "2.0.0-rc.1", want: Version{Major: 2, Parts: 3, Pre: "rc.1"}},
		{tag: "2.0.0-RC1", want: Version{Major: 2, Parts: 3, Pre: "RC1"}},
		{tag: "2.0.0-beta-2", want: Version{Major: 2, Parts: 3, Pre: "beta-2"}},
		{tag: "2.0.0-rc.1-alpine", want: Version{Major: 2, Parts: 3, Pre: "rc.1", Suffix: "alpine"}},
		{tag: "2.0.0-alpha.beta.1-x_y", want: Version{Major: 2, Parts: 3, Pre: "alpha.beta.1", Suffix: "x_y"}},
		{tag: "1.2.3-1", want: Version{Major: 1, Minor: 2, Patch: 3, Parts: 3, Suffix: "1"}},
		{tag: "1.25.3-debian-12-r0", want: Version{Major: 1, Minor: 25, Patch: 3, Parts: 3, Suffix: "debian-12-r0"}},
		{tag: "20240315", want: Version{Major: 20240315, Parts: 1}},
		{tag: "2024.03.05", want: Version{Major: 2024, Minor: 3, Patch: 5, Parts: 3}},
		{tag: "latest", err: true},
		{tag: "", err: true},
		{tag: "v", err: true},
		{tag: "1.2.3.4", err: true},
		{tag: "1..2", err: true},
		{tag: "1.2.", err: true},
		{tag: "1.2.3-", err: true},
		{tag: "1.2.3--alpine", err: true},
		{tag: "1.2.3_alpine", err: true},
		{tag: "1.2.3+build", err: true},
		{tag: "-1.2", err: true},
		{tag: "99999999999999999999", err: true},
		{tag: "1." + strings.Repeat("1", 130), err: true},
	} {
		got, err := ParseVersionTag(tc.tag)
		if tc.err {
			if err == nil || !errors.Is(err, ErrNotVersion) {
				t.Errorf("ParseVersionTag(%q) = %+v, %v; want an ErrNotVersion error", tc.tag, got, err)
			}
			continue
		}
		tc.want.Tag = tc.tag
		if err != nil || got != tc.want {
			t.Errorf("ParseVersionTag(%q) = %+v, %v; want %+v, nil", tc.tag, got, err, tc.want)
		}
	}
}

func TestVersionCompare(t *testing.T) {
	// Each tag is older than the next one.
	ordered := []string{
		"1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
		"1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.2.0", "1.10.0", "v2.0.0-rc1", "2.0.0", "10.0.0",
	}
	for i := 0; i+1 < len(ordered); i++ {
		a, _ := ParseVersionTag(ordered[i])
		b, _ := ParseVersionTag(ordered[i+1])
		if a.Compare(b) != -1 || b.Compare(a) != 1 {
			t.Errorf("Compare(%s, %s) = %d and reverse %d, want -1 and 1", a, b, a.Compare(b), b.Compare(a))
		}
	}
	for _, pair := range [][2]string{{"1.2.3", "v1.2.3"}, {"1.2.3-alpine", "1.2.3-bookworm"}} {
		a, _ := ParseVersionTag(pair[0])
		b, _ := ParseVersionTag(pair[1])
		if c := a.Compare(b); c != 0 {
			t.Errorf("Compare(%s, %s) = %d, want 0 (prefix and suffix do not order)", a, b, c)
		}
	}
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"1.27", "1.28", true},
		{"1.27", "1.27.1", false},
		{"1.27.1-alpine", "1.27.2-alpine", true},
		{"1.27.1-alpine", "1.27.2", false},
		{"1.27.1-rc.1-alpine", "1.27.1-alpine", true},
	} {
		a, _ := ParseVersionTag(tc.a)
		b, _ := ParseVersionTag(tc.b)
		if got := a.Comparable(b); got != tc.want {
			t.Errorf("Comparable(%s, %s) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

// FuzzParseVersionTag checks that the tag parser never panics, accepts
// only valid tags, reproduces the tag it parsed, and orders versions
// consistently. CI runs it briefly: go test -run '^$' -fuzz FuzzParseVersionTag -fuzztime 5s ./watcher
func FuzzParseVersionTag(f *testing.F) {
	for _, s := range []string{"1", "1.27", "v1.27.3", "1.27.3-alpine", "2.0.0-rc.1-alpine", "2.0.0-beta-2",
		"1.0.0-alpha.01", "1.0.0-alpha.1", "latest", "1.2.3.4", "V0.0.0-dev", "1.2.3-a-b-c", "1.2.3-rc.", "01.002.0003"} {
		f.Add(s, "1.2.3-rc.1")
	}
	f.Fuzz(func(t *testing.T, tag, other string) {
		v, err := ParseVersionTag(tag)
		if err != nil {
			if !errors.Is(err, ErrNotVersion) {
				t.Fatalf("ParseVersionTag(%q) error %v does not wrap ErrNotVersion", tag, err)
			}
			return
		}
		if !imageref.ValidTag(tag) {
			t.Fatalf("ParseVersionTag accepted %q, which is not a valid tag", tag)
		}
		if v.String() != tag || v.Tag != tag {
			t.Fatalf("ParseVersionTag(%q).String() = %q", tag, v.String())
		}
		if v.Parts < 1 || v.Parts > 3 {
			t.Fatalf("ParseVersionTag(%q).Parts = %d, want 1..3", tag, v.Parts)
		}
		if v.Compare(v) != 0 || !v.Comparable(v) {
			t.Fatalf("%q does not compare equal to itself", tag)
		}
		again, err := ParseVersionTag(tag)
		if err != nil || again != v {
			t.Fatalf("ParseVersionTag(%q) is not deterministic: %+v then %+v, %v", tag, v, again, err)
		}
		if o, err := ParseVersionTag(other); err == nil {
			if c, r := v.Compare(o), o.Compare(v); c != -r {
				t.Fatalf("Compare(%q, %q) = %d but Compare(%q, %q) = %d", tag, other, c, other, tag, r)
			}
		}
		_ = v.semver() // range checks must accept every parsed version
	})
}
