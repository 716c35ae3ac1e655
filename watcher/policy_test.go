package watcher

import (
	"bufio"
	"os"
	"strings"
	"testing"
)

func readTags(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var tags []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" && !strings.HasPrefix(line, "#") {
			tags = append(tags, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return tags
}

func TestPolicySelect(t *testing.T) {
	nginx := readTags(t, "testdata/nginx-tags.txt")
	vtags := []string{"v1.2.0", "v1.3.0", "1.3.0", "v1.9.9", "v1.10.0", "v1.10.0-rc.1", "1.11.0-alpine"}
	pre := []string{"1.9.0", "2.0.0-beta.3", "2.0.0-rc.1", "2.0.0-rc.2", "2.0.0-rc.10", "2.0.0-RC.11-alpine"}
	dates := []string{"20231231", "20240101", "20240315", "2024.03.15", "nightly"}
	for _, tc := range []struct {
		name      string
		spec      PolicySpec
		running   string
		tags      []string
		wantTag   string // "" when nothing is selected
		wantNewer bool
		reason    string // substring of the reason
	}{
		// shapes and suffixes (nginx)
		{"patch follows patches", PolicySpec{Mode: ModeSemver}, "1.27.3", nginx, "1.29.1", true, "1.29.1 is the newest allowed tag"},
		{"tilde range", PolicySpec{Mode: ModeSemver, Range: "~1.27"}, "1.27.3", nginx, "1.27.4", true, "newest tag in ~1.27"},
		{"suffix kept exactly", PolicySpec{Mode: ModeSemver, Range: "~1.27"}, "1.27.3-alpine", nginx, "1.27.4-alpine", true, ""},
		{"suffix over ranges", PolicySpec{Mode: ModeSemver}, "1.26.3-alpine-slim", nginx, "1.27.4-alpine-slim", true, ""},
		{"minor channel follows minor channels", PolicySpec{Mode: ModeSemver, Range: "^1"}, "1.27", nginx, "1.29", true, ""},
		{"minor channel with suffix", PolicySpec{Mode: ModeSemver, Range: "<1.29"}, "1.27-alpine", nginx, "1.28-alpine", true, ""},
		{"major channel has nothing newer", PolicySpec{Mode: ModeSemver}, "1", nginx, "1", false, "1 is the newest allowed tag"},
		{"newest is running: follow its digest", PolicySpec{Mode: ModeSemver, Range: "~1.27"}, "1.27.4", nginx, "1.27.4", false, "1.27.4 is the newest tag in ~1.27"},
		{"running outside range", PolicySpec{Mode: ModeSemver, Range: "~1.27"}, "1.28.0", nginx, "", false, "1.28.0 itself is outside ~1.27"},
		{"caret bounded", PolicySpec{Mode: ModeSemver, Range: ">=1.25 <1.27"}, "1.25.0", nginx, "1.26.3", true, ""},
		{"include narrows", PolicySpec{Mode: ModeSemver, Include: []string{`^1\.26\.`}}, "1.25.0", nginx, "1.26.3", true, ""},
		{"exclude drops a release", PolicySpec{Mode: ModeSemver, Range: "~1.27", Exclude: []string{`^1\.27\.4$`}}, "1.27.0", nginx, "1.27.3", true, ""},
		{"exclude running, nothing newer", PolicySpec{Mode: ModeSemver, Range: "~1.27", Exclude: []string{`^1\.27\.4$`}}, "1.27.4", nginx, "", false, "excluded by policy"},
		{"include misses running", PolicySpec{Mode: ModeSemver, Include: []string{`^2\.`}}, "1.29.1", nginx, "", false, "matches no include pattern (^2\\.)"},

		// v prefix, numeric order, equal versions
		{"numeric not lexical", PolicySpec{Mode: ModeSemver}, "v1.2.0", vtags, "v1.10.0", true, ""},
		{"same prefix preferred on equal versions", PolicySpec{Mode: ModeSemver, Range: "<1.4"}, "1.2.0", vtags, "1.3.0", true, ""},
		{"v prefix kept on equal versions", PolicySpec{Mode: ModeSemver, Range: "<1.4"}, "v1.2.0", vtags, "v1.3.0", true, ""},

		// pre-releases
		{"pre-releases off", PolicySpec{Mode: ModeSemver}, "1.9.0", pre, "1.9.0", false, ""},
		{"pre-releases on", PolicySpec{Mode: ModeSemver, Prerelease: true}, "1.9.0", pre, "2.0.0-rc.10", true, ""},
		{"pre-releases on within range", PolicySpec{Mode: ModeSemver, Range: "^2.0.0-0", Prerelease: true}, "2.0.0-beta.3", pre, "2.0.0-rc.10", true, ""},
		{"running pre-release, no release yet", PolicySpec{Mode: ModeSemver}, "2.0.0-rc.1", pre, "", false, "is a pre-release"},
		{"running pre-release moves to the release", PolicySpec{Mode: ModeSemver}, "2.0.0-rc.1", append([]string{"2.0.0"}, pre...), "2.0.0", true, ""},
		{"pre-release suffix shape", PolicySpec{Mode: ModeSemver, Prerelease: true}, "2.0.0-rc.1-alpine", append([]string{"2.0.0-alpine"}, pre...), "2.0.0-alpine", true, ""},

		// no downgrades
		{"never older", PolicySpec{Mode: ModeSemver}, "3.0.0", []string{"1.0.0", "2.9.9", "2.99.0"}, "3.0.0", false, ""},
		{"running not listed any more", PolicySpec{Mode: ModeSemver}, "3.0.0", nil, "3.0.0", false, ""},

		// date-like versions
		{"dates", PolicySpec{Mode: ModeSemver}, "20240101", dates, "20240315", true, ""},
		{"dotted dates keep their shape", PolicySpec{Mode: ModeSemver}, "2024.01.05", dates, "2024.03.15", true, ""},

		// digest mode and freezing
		{"digest follows running", PolicySpec{}, "latest", nginx, "latest", false, "following the digest of tag latest"},
		{"digest excluded", PolicySpec{Exclude: []string{"^latest$"}}, "latest", nginx, "", false, "tag latest is excluded by policy (^latest$)"},
		{"digest include", PolicySpec{Include: []string{"^1"}}, "stable", nginx, "", false, "tag stable matches no include pattern"},
		{"frozen digest", PolicySpec{Frozen: true}, "latest", nginx, "", false, "frozen by policy"},
		{"frozen semver", PolicySpec{Mode: ModeSemver, Frozen: true}, "1.27.0", nginx, "", false, "frozen by policy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := CompilePolicy(tc.spec)
			if err != nil {
				t.Fatalf("CompilePolicy(%+v): %v", tc.spec, err)
			}
			sel, err := p.Select(tc.running, tc.tags)
			if err != nil {
				t.Fatalf("Select(%q): %v", tc.running, err)
			}
			if sel.Tag != tc.wantTag || sel.Newer != tc.wantNewer {
				t.Errorf("Select(%q) = %q newer=%v, want %q newer=%v (reason %q)", tc.running, sel.Tag, sel.Newer, tc.wantTag, tc.wantNewer, sel.Reason)
			}
			if !strings.Contains(sel.Reason, tc.reason) {
				t.Errorf("reason %q does not contain %q", sel.Reason, tc.reason)
			}
		})
	}
}

func TestPolicySelectIsOrderIndependent(t *testing.T) {
	tags := readTags(t, "testdata/nginx-tags.txt")
	p := MustCompilePolicy(PolicySpec{Mode: ModeSemver, Range: "~1.27"})
	want, _ := p.Select("1.27.0-alpine", tags)
	rev := make([]string, len(tags))
	for i, tg := range tags {
		rev[len(tags)-1-i] = tg
	}
	got, _ := p.Select("1.27.0-alpine", rev)
	if got != want {
		t.Errorf("reversed tag list selects %+v, want %+v", got, want)
	}
}

func TestPolicySemverNeedsVersionTag(t *testing.T) {
	p := MustCompilePolicy(PolicySpec{Mode: ModeSemver})
	if _, err := p.Select("latest", []string{"1.0.0"}); err == nil || !strings.Contains(err.Error(), `use mode "digest"`) {
		t.Errorf("Select(latest) error = %v, want one that suggests mode digest", err)
	}
}

func TestCompilePolicyErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec PolicySpec
		want []string // substrings, all required
	}{
		{"unknown mode", PolicySpec{Mode: "regex"}, []string{`mode: "regex" is not allowed`, `use "digest"`}},
		{"range in digest mode", PolicySpec{Mode: ModeDigest, Range: "~1"}, []string{`range: "~1" is only used with mode "semver"`}},
		{"prerelease in digest mode", PolicySpec{Prerelease: true}, []string{"prerelease: only used with mode"}},
		{"bad range", PolicySpec{Mode: ModeSemver, Range: "one point four"}, []string{`range: "one point four" is not a semver range`, `"~1.4"`}},
		{"bad include", PolicySpec{Include: []string{"ok", "("}}, []string{`include[1]: "(" is not a valid regular expression`}},
		{"empty exclude", PolicySpec{Exclude: []string{""}}, []string{"exclude[0]: must be a regular expression"}},
		{"every problem reported", PolicySpec{Mode: ModeSemver, Range: "x y z", Exclude: []string{"[a"}}, []string{"range:", "exclude[0]:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := CompilePolicy(tc.spec)
			if err == nil {
				t.Fatalf("CompilePolicy(%+v) = %v, nil; want an error", tc.spec, p)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestPolicyDefaultsAndString(t *testing.T) {
	p := MustCompilePolicy(PolicySpec{})
	if p.Mode() != ModeDigest || p.FollowsTags() {
		t.Errorf("zero spec: mode %q follows tags %v, want %q false", p.Mode(), p.FollowsTags(), ModeDigest)
	}
	for _, tc := range []struct {
		spec PolicySpec
		want string
	}{
		{PolicySpec{}, "digest"},
		{PolicySpec{Mode: ModeSemver, Range: "~1.4", Prerelease: true, Include: []string{`^1\.`}, Exclude: []string{"rc", "beta"}}, `semver ~1.4 (pre-releases, include ^1\., exclude rc | beta)`},
		{PolicySpec{Mode: ModeSemver, Frozen: true}, "frozen"},
	} {
		if got := MustCompilePolicy(tc.spec).String(); got != tc.want {
			t.Errorf("String() of %+v = %q, want %q", tc.spec, got, tc.want)
		}
	}
	spec := PolicySpec{Mode: ModeSemver, Include: []string{"a"}}
	p = MustCompilePolicy(spec)
	spec.Include[0] = "changed"
	if got := p.Spec().Include[0]; got != "a" {
		t.Errorf("policy changed with its spec's slice: include = %q, want %q", got, "a")
	}
}
