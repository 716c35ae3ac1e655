package imageref

import (
	"errors"
	"testing"

	"github.com/distribution/reference"
)

func TestParse(t *testing.T) {
	const dig = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	tests := []struct {
		in                        string
		domain, path, tag, digest string
		str, familiar             string
	}{
		{"nginx", "docker.io", "library/nginx", "latest", "", "docker.io/library/nginx:latest", "nginx:latest"},
		{"nginx:1.27", "docker.io", "library/nginx", "1.27", "", "docker.io/library/nginx:1.27", "nginx:1.27"},
		{"ghcr.io/org/app:v1.2.3-alpine", "ghcr.io", "org/app", "v1.2.3-alpine", "", "ghcr.io/org/app:v1.2.3-alpine", "ghcr.io/org/app:v1.2.3-alpine"},
		{"127.0.0.1:5000/demo/app:1@" + dig, "127.0.0.1:5000", "demo/app", "1", dig, "127.0.0.1:5000/demo/app:1@" + dig, "127.0.0.1:5000/demo/app:1@" + dig},
		{"user/app@" + dig, "docker.io", "user/app", "", dig, "docker.io/user/app@" + dig, "user/app@" + dig},
	}
	for _, tt := range tests {
		r, err := Parse(tt.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if r.Domain != tt.domain || r.Path != tt.path || r.Tag != tt.tag || r.Digest != tt.digest {
			t.Errorf("Parse(%q) = %+v, want %s %s %s %s", tt.in, r, tt.domain, tt.path, tt.tag, tt.digest)
		}
		if got := r.String(); got != tt.str {
			t.Errorf("Parse(%q).String() = %s, want %s", tt.in, got, tt.str)
		}
		if got := r.Familiar(); got != tt.familiar {
			t.Errorf("Parse(%q).Familiar() = %s, want %s", tt.in, got, tt.familiar)
		}
	}
}

// TestFamiliarIsDockersFamiliarString: Familiar formats without parsing
// again; Docker's reference package is the oracle.
func TestFamiliarIsDockersFamiliarString(t *testing.T) {
	const dig = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, in := range []string{
		"nginx", "library/nginx:1", "docker.io/library/nginx:1@" + dig, "index.docker.io/library/nginx",
		"library/a/b:1", "docker.io/libraryx/app:2", "user/app:1", "user/library/app", "docker.io/user/app@" + dig,
		"ghcr.io/library/app:1", "localhost:5000/library/app", "registry-1.docker.io/library/nginx",
		"127.0.0.1:5000/demo/app:1@" + dig, "example.com:443/a/b/c:v1.2.3-alpine",
	} {
		r, err := Parse(in)
		if err != nil {
			t.Errorf("Parse(%q): %v", in, err)
			continue
		}
		named, err := reference.ParseNormalizedNamed(r.String())
		if err != nil {
			t.Fatalf("reference.ParseNormalizedNamed(%q): %v", r.String(), err)
		}
		if got, want := r.Familiar(), reference.FamiliarString(named); got != want {
			t.Errorf("Parse(%q).Familiar() = %s, want %s", in, got, want)
		}
	}
}

func TestParseRejects(t *testing.T) {
	for _, in := range []string{"", "example.com/UPPER/case", "nginx:", "a@sha256:short", "nginx:bad tag", ":1.0", "a/b:" + string(make([]byte, 200))} {
		if _, err := Parse(in); !errors.Is(err, ErrInvalid) {
			t.Errorf("Parse(%q) error = %v, want ErrInvalid", in, err)
		}
	}
}

func TestLoopback(t *testing.T) {
	for in, want := range map[string]bool{
		"127.0.0.1:5000/a": true, "localhost:5000/a": true, "localhost/a": true,
		"ghcr.io/a": false, "nginx": false, "127example.com/a": false,
	} {
		if got := MustParse(in).IsLoopback(); got != want {
			t.Errorf("IsLoopback(%s) = %v, want %v", in, got, want)
		}
	}
}

func TestValidTag(t *testing.T) {
	for in, want := range map[string]bool{"1.2.3": true, "v1_x-y.z": true, "": false, ".x": false, "-x": false, "a b": false} {
		if got := ValidTag(in); got != want {
			t.Errorf("ValidTag(%q) = %v, want %v", in, got, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"nginx", "ghcr.io/o/a:v1", "127.0.0.1:5000/x/y:1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "a@b", ":", "@@"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := Parse(s)
		if err != nil {
			return
		}
		// A parsed reference must print to something that parses back to itself.
		back, err := Parse(r.String())
		if err != nil {
			t.Fatalf("Parse(%q) ok but its String %q does not parse: %v", s, r.String(), err)
		}
		if back != r {
			t.Fatalf("round trip of %q: %+v != %+v", s, back, r)
		}
		if r.Digest != "" && !ValidDigest(r.Digest) {
			t.Fatalf("Parse(%q) kept invalid digest %q", s, r.Digest)
		}
	})
}
