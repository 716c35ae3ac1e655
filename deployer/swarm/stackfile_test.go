package swarm

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shipwatch/shipwatch/imageref"
)

func TestRewriteStackFile(t *testing.T) {
	from := imageref.MustParse("registry.example/team/web:1.0.0@" + testDigest1)
	to := imageref.MustParse("registry.example/team/web:1.1.0@" + testDigest2)
	for _, tc := range []struct {
		name    string
		in      string
		out     string // "" when the file must stay as it is
		changed bool
		err     string
	}{
		{name: "plain, comments kept",
			in:  "# my stack\nservices:\n  web:   # the front\n    image: registry.example/team/web:1.0.0 # pinned\n    deploy: {replicas: 2}\n  db:\n    image: postgres:16\n",
			out: "# my stack\nservices:\n  web:   # the front\n    image: registry.example/team/web:1.1.0 # pinned\n    deploy: {replicas: 2}\n  db:\n    image: postgres:16\n", changed: true},
		{name: "double quoted",
			in:  "services:\n  web:\n    image: \"registry.example/team/web:1.0.0\"\n",
			out: "services:\n  web:\n    image: \"registry.example/team/web:1.1.0\"\n", changed: true},
		{name: "single quoted",
			in:  "services:\n  web:\n    image: 'registry.example/team/web:1.0.0'\n",
			out: "services:\n  web:\n    image: 'registry.example/team/web:1.1.0'\n", changed: true},
		{name: "flow mapping",
			in:  "services:\n  web: {image: registry.example/team/web:1.0.0, deploy: {replicas: 1}}\n",
			out: "services:\n  web: {image: registry.example/team/web:1.1.0, deploy: {replicas: 1}}\n", changed: true},
		{name: "pinned digest follows",
			in:  "services:\n  web:\n    image: registry.example/team/web:1.0.0@" + testDigest1 + "\n",
			out: "services:\n  web:\n    image: registry.example/team/web:1.1.0@" + testDigest2 + "\n", changed: true},
		{name: "registry with a port",
			in:  "services:\n  web:\n    image: registry.example/team/web:1.0.0\n",
			out: "services:\n  web:\n    image: registry.example/team/web:1.1.0\n", changed: true},
		{name: "already the new tag", in: "services:\n  web:\n    image: registry.example/team/web:1.1.0\n"},
		{name: "from a variable", in: "services:\n  web:\n    image: registry.example/team/web:${TAG}\n", err: "set from a variable"},
		{name: "another repository", in: "services:\n  web:\n    image: registry.example/team/api:1.0.0\n", err: "the file and the service disagree"},
		{name: "another tag", in: "services:\n  web:\n    image: registry.example/team/web:0.9.0\n", err: "changed since the stack was deployed"},
		{name: "no such service", in: "services:\n  api:\n    image: registry.example/team/web:1.0.0\n", err: `no service "web"`},
		{name: "built, no image", in: "services:\n  web:\n    build: .\n", err: "has no image"},
		{name: "anchor", in: "x-img: &img registry.example/team/web:1.0.0\nservices:\n  web:\n    image: *img\n", err: "YAML anchor"},
		{name: "escaped", in: "services:\n  web:\n    image: \"registry.example/team/web:1.0\\u002E0\"\n", err: "edit it by hand"},
		{name: "block scalar", in: "services:\n  web:\n    image: >-\n      registry.example/team/web:1.0.0\n", err: "block scalar"},
		{name: "not yaml", in: "services: [\n", err: "not valid YAML"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "stack.yml")
			if err := os.WriteFile(path, []byte(tc.in), 0o640); err != nil {
				t.Fatal(err)
			}
			changed, err := RewriteStackFile(path, "web", from, to)
			got, rerr := os.ReadFile(path)
			if rerr != nil {
				t.Fatal(rerr)
			}
			if tc.err != "" {
				if !errors.Is(err, ErrStackFile) || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("err = %v, want ErrStackFile saying %q", err, tc.err)
				}
				if string(got) != tc.in {
					t.Errorf("refused, but the file changed:\n%s", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if changed != tc.changed {
				t.Errorf("changed = %v, want %v", changed, tc.changed)
			}
			want := tc.out
			if want == "" {
				want = tc.in
			}
			if string(got) != want {
				t.Errorf("file:\n%s\nwant:\n%s", got, want)
			}
			if !tc.changed {
				return
			}
			backup, err := os.ReadFile(path + BackupSuffix)
			if err != nil || string(backup) != tc.in {
				t.Errorf("backup = %q (%v), want the original", backup, err)
			}
			if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o640 {
				t.Errorf("mode = %v (%v), want 0640 kept", fi.Mode().Perm(), err)
			}
		})
	}
}

func TestSplitImage(t *testing.T) {
	for _, tc := range []struct {
		in, repo string
		digest   bool
	}{
		{"nginx", "nginx", false},
		{"nginx:1.27", "nginx", false},
		{"localhost:5000/app", "localhost:5000/app", false},
		{"localhost:5000/app:2", "localhost:5000/app", false},
		{"ghcr.io/o/a:v1@" + testDigest1, "ghcr.io/o/a", true},
	} {
		repo, digest := splitImage(tc.in)
		if repo != tc.repo || digest != tc.digest {
			t.Errorf("splitImage(%q) = %q, %v; want %q, %v", tc.in, repo, digest, tc.repo, tc.digest)
		}
	}
}
