package compose

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shipwatch/shipwatch/deployer"
)

func TestParseTemplate(t *testing.T) {
	tests := []struct {
		in      string
		want    []string // "lit:…" or "var:name op arg"
		wantErr string
	}{
		{in: "nginx:1.27", want: []string{"lit:nginx:1.27"}},
		{in: "reg/app:${TAG}", want: []string{"lit:reg/app:", "var:TAG  "}},
		{in: "${REG}/app:${TAG:-1.0}-alpine", want: []string{"var:REG  ", "lit:/app:", "var:TAG :- 1.0", "lit:-alpine"}},
		{in: "app:$TAG", want: []string{"lit:app:", "var:TAG  "}},
		{in: "app:${T-1}${U?err}${V:?e}${W+x}", want: []string{"lit:app:", "var:T - 1", "var:U ? err", "var:V :? e", "var:W + x"}},
		{in: "a$$b", want: []string{"lit:a", "lit:$", "lit:b"}},
		{in: "app:${A:-${B}}", wantErr: "nested"},
		{in: "app:${TAG", wantErr: "unclosed"},
		{in: "app:$", wantErr: "lone $"},
		{in: "app:${1X}", wantErr: "invalid variable name"},
		{in: "app:${X/a/b}", wantErr: "unsupported form"},
	}
	for _, tt := range tests {
		toks, err := parseTemplate(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parseTemplate(%q) error = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseTemplate(%q): %v", tt.in, err)
			continue
		}
		var got []string
		for _, tk := range toks {
			if tk.isVar() {
				got = append(got, "var:"+tk.name+" "+tk.op+" "+tk.arg)
				if tk.op != "" && tt.in[tk.argStart:tk.argStart+len(tk.arg)] != tk.arg {
					t.Errorf("parseTemplate(%q): arg offset %d does not point at %q", tt.in, tk.argStart, tk.arg)
				}
			} else {
				got = append(got, "lit:"+tk.literal)
			}
			if tk.start >= tk.end || tk.end > len(tt.in) {
				t.Errorf("parseTemplate(%q): bad span %d-%d", tt.in, tk.start, tk.end)
			}
		}
		if strings.Join(got, "|") != strings.Join(tt.want, "|") {
			t.Errorf("parseTemplate(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestTokenExpand(t *testing.T) {
	env := map[string]string{"SET": "v", "EMPTY": ""}
	tests := []struct {
		tmpl, want string
		fromArg    bool
	}{
		{"${SET}", "v", false},
		{"${UNSET}", "", false},
		{"${SET:-d}", "v", false},
		{"${EMPTY:-d}", "d", true},
		{"${EMPTY-d}", "", false},
		{"${UNSET-d}", "d", true},
		{"${SET:+alt}", "alt", true},
		{"${EMPTY:+alt}", "", false},
		{"${EMPTY+alt}", "alt", true},
	}
	for _, tt := range tests {
		toks, err := parseTemplate(tt.tmpl)
		if err != nil || len(toks) != 1 {
			t.Fatalf("parseTemplate(%q) = %v, %v", tt.tmpl, toks, err)
		}
		got, fromArg := toks[0].expand(env)
		if got != tt.want || fromArg != tt.fromArg {
			t.Errorf("expand(%q) = %q, %v; want %q, %v", tt.tmpl, got, fromArg, tt.want, tt.fromArg)
		}
	}
}

func TestRewrittenRef(t *testing.T) {
	const d1 = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	const d2 = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
	tests := []struct{ current, tag, digest, want string }{
		{"nginx:1.27", "1.28", d2, "nginx:1.28"},
		{"nginx:1.27", "1.27", d2, "nginx:1.27"},
		{"nginx", "latest", d2, "nginx"},
		{"nginx", "1.28", d2, "nginx:1.28"},
		{"localhost:5000/a/b:1", "2", d2, "localhost:5000/a/b:2"},
		{"localhost:5000/a/b", "2", d2, "localhost:5000/a/b:2"},
		{"ghcr.io/o/a:1@" + d1, "1", d2, "ghcr.io/o/a:1@" + d2},
		{"ghcr.io/o/a:1@" + d1, "2", d2, "ghcr.io/o/a:2@" + d2},
		{"ghcr.io/o/a:1@" + d1, "1", d1, "ghcr.io/o/a:1@" + d1},
	}
	for _, tt := range tests {
		if got := rewrittenRef(tt.current, tt.tag, tt.digest); got != tt.want {
			t.Errorf("rewrittenRef(%q, %q) = %q, want %q", tt.current, tt.tag, got, tt.want)
		}
	}
}

func TestPlanImageEdit(t *testing.T) {
	t.Setenv("SHIPWATCH_UNIT_FROM_SHELL", "r/app:1.0")
	tests := []struct {
		name    string
		files   map[string]string // compose.yaml, .env, …
		env     map[string]string // the project's interpolation environment
		current string
		want    string
		// wantFile is the edited file and wantContent its content after the edit.
		wantFile, wantContent string
		wantErr               string
	}{{
		name:        "plain value keeps comments and layout",
		files:       map[string]string{"compose.yaml": "# top\nservices:\n  web:\n    image: r/app:1.0   # pin\n    ports: [\"80:80\"]\n"},
		current:     "r/app:1.0",
		want:        "r/app:1.1",
		wantFile:    "compose.yaml",
		wantContent: "# top\nservices:\n  web:\n    image: r/app:1.1   # pin\n    ports: [\"80:80\"]\n",
	}, {
		name:        "double-quoted",
		files:       map[string]string{"compose.yaml": "services:\n  web:\n    image: \"r/app:1.0\"\n"},
		current:     "r/app:1.0",
		want:        "r/app:10.0",
		wantFile:    "compose.yaml",
		wantContent: "services:\n  web:\n    image: \"r/app:10.0\"\n",
	}, {
		name:        "single-quoted in a flow mapping, after unicode",
		files:       map[string]string{"compose.yaml": "services:\n  ünï: {image: 'x:1'}\n  web: {image: 'r/app:1.0', ports: ['80:80']}\n"},
		current:     "r/app:1.0",
		want:        "r/app:1.1",
		wantFile:    "compose.yaml",
		wantContent: "services:\n  ünï: {image: 'x:1'}\n  web: {image: 'r/app:1.1', ports: ['80:80']}\n",
	}, {
		name:        "override file wins",
		files:       map[string]string{"compose.yaml": "services:\n  web:\n    image: r/app:0.1\n", "compose.override.yaml": "services:\n  web:\n    image: r/app:1.0\n"},
		current:     "r/app:1.0",
		want:        "r/app:1.1",
		wantFile:    "compose.override.yaml",
		wantContent: "services:\n  web:\n    image: r/app:1.1\n",
	}, {
		name:        "extends in the project",
		files:       map[string]string{"compose.yaml": "services:\n  web:\n    extends: {file: base/common.yaml, service: app}\n", "base/common.yaml": "services:\n  app:\n    image: r/app:1.0\n"},
		current:     "r/app:1.0",
		want:        "r/app:1.1",
		wantFile:    "base/common.yaml",
		wantContent: "services:\n  app:\n    image: r/app:1.1\n",
	}, {
		name:        "anchor",
		files:       map[string]string{"compose.yaml": "x-img: &img r/app:1.0\nservices:\n  web:\n    image: *img\n"},
		current:     "r/app:1.0",
		want:        "r/app:1.1",
		wantFile:    "compose.yaml",
		wantContent: "x-img: &img r/app:1.1\nservices:\n  web:\n    image: *img\n",
	}, {
		name:        "merge key",
		files:       map[string]string{"compose.yaml": "x-base: &base\n  image: r/app:1.0\nservices:\n  web:\n    <<: *base\n"},
		current:     "r/app:1.0",
		want:        "r/app:1.1",
		wantFile:    "compose.yaml",
		wantContent: "x-base: &base\n  image: r/app:1.1\nservices:\n  web:\n    <<: *base\n",
	}, {
		name:        "variable in .env",
		files:       map[string]string{"compose.yaml": "services:\n  web:\n    image: ${REG}/app:${TAG}\n", ".env": "REG=r\n# tag\nTAG=1.0 # current\n"},
		env:         map[string]string{"REG": "r", "TAG": "1.0"},
		current:     "r/app:1.0",
		want:        "r/app:1.1",
		wantFile:    ".env",
		wantContent: "REG=r\n# tag\nTAG=1.1 # current\n",
	}, {
		name:        "whole reference in .env, quoted, export",
		files:       map[string]string{"compose.yaml": "services:\n  web:\n    image: $IMAGE\n", ".env": "export IMAGE='r/app:1.0'\n"},
		env:         map[string]string{"IMAGE": "r/app:1.0"},
		current:     "r/app:1.0",
		want:        "r/app:2.0",
		wantFile:    ".env",
		wantContent: "export IMAGE='r/app:2.0'\n",
	}, {
		name:        "last definition in .env wins",
		files:       map[string]string{"compose.yaml": "services:\n  web:\n    image: r/app:${TAG}\n", ".env": "TAG=0.9\nTAG=1.0\n"},
		env:         map[string]string{"TAG": "1.0"},
		current:     "r/app:1.0",
		want:        "r/app:1.1",
		wantFile:    ".env",
		wantContent: "TAG=0.9\nTAG=1.1\n",
	}, {
		name:        "default of an unset variable",
		files:       map[string]string{"compose.yaml": "services:\n  web:\n    image: \"r/app:${TAG:-1.0}\"\n"},
		current:     "r/app:1.0",
		want:        "r/app:1.1",
		wantFile:    "compose.yaml",
		wantContent: "services:\n  web:\n    image: \"r/app:${TAG:-1.1}\"\n",
	}, {
		name:        "one of two variables changes",
		files:       map[string]string{"compose.yaml": "services:\n  web:\n    image: r/app:${MAJOR}.${MINOR}\n", ".env": "MAJOR=1\nMINOR=4\n"},
		env:         map[string]string{"MAJOR": "1", "MINOR": "4"},
		current:     "r/app:1.4",
		want:        "r/app:1.5",
		wantFile:    ".env",
		wantContent: "MAJOR=1\nMINOR=5\n",
	}, {
		name:    "change spans two variables",
		files:   map[string]string{"compose.yaml": "services:\n  web:\n    image: r/app:${MAJOR}.${MINOR}\n", ".env": "MAJOR=1\nMINOR=4\n"},
		env:     map[string]string{"MAJOR": "1", "MINOR": "4"},
		current: "r/app:1.4",
		want:    "r/app:2.0",
		wantErr: "spans more than one",
	}, {
		name:    "shell variable",
		files:   map[string]string{"compose.yaml": "services:\n  web:\n    image: ${SHIPWATCH_UNIT_FROM_SHELL}\n"},
		env:     map[string]string{"SHIPWATCH_UNIT_FROM_SHELL": "r/app:1.0"},
		current: "r/app:1.0",
		want:    "r/app:1.1",
		wantErr: "SHIPWATCH_UNIT_FROM_SHELL from shipwatch's own environment",
	}, {
		name:    "variable set by nobody",
		files:   map[string]string{"compose.yaml": "services:\n  web:\n    image: r/app:${TAG}\n"},
		env:     map[string]string{"TAG": "1.0"},
		current: "r/app:1.0",
		want:    "r/app:1.1",
		wantErr: "from a shell variable",
	}, {
		name:    "env value built from another variable",
		files:   map[string]string{"compose.yaml": "services:\n  web:\n    image: r/app:${TAG}\n", ".env": "BASE=1.0\nTAG=${BASE}\n"},
		env:     map[string]string{"TAG": "1.0", "BASE": "1.0"},
		current: "r/app:1.0",
		want:    "r/app:1.1",
		wantErr: "built from other variables",
	}, {
		name:    "block scalar",
		files:   map[string]string{"compose.yaml": "services:\n  web:\n    image: >-\n      r/app:1.0\n"},
		current: "r/app:1.0",
		want:    "r/app:1.1",
		wantErr: "block scalar",
	}, {
		name:    "escaped quote",
		files:   map[string]string{"compose.yaml": "services:\n  web:\n    image: \"r/app\\u003a1.0\"\n"},
		current: "r/app:1.0",
		want:    "r/app:1.1",
		wantErr: "escapes",
	}, {
		name:    "expands to something else than Compose loaded",
		files:   map[string]string{"compose.yaml": "services:\n  web:\n    image: r/app:0.1\n"},
		current: "r/app:1.0",
		want:    "r/app:1.1",
		wantErr: "but Compose loaded",
	}, {
		name:    "not found",
		files:   map[string]string{"compose.yaml": "include: [other.yaml]\nservices:\n  db:\n    image: x\n"},
		current: "r/app:1.0",
		want:    "r/app:1.1",
		wantErr: "cannot find the image",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			var files []string
			for _, name := range []string{"compose.yaml", "compose.override.yaml"} {
				if _, ok := tt.files[name]; ok {
					files = append(files, filepath.Join(dir, name))
				}
			}
			for name, content := range tt.files {
				path := filepath.Join(dir, name)
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			e, err := planImageEdit(imageEditInput{
				service: "web", files: files, envFiles: []string{filepath.Join(dir, ".env")},
				workingDir: dir, env: tt.env, current: tt.current, want: tt.want,
			})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				if !errors.Is(err, deployer.ErrUnsupported) {
					t.Errorf("error %v is not ErrUnsupported", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got, want := e.file, filepath.Join(dir, tt.wantFile); got != want {
				t.Errorf("edits %s, want %s", got, want)
			}
			if got := string(e.after()); got != tt.wantContent {
				t.Errorf("after the edit:\n%s\nwant\n%s", got, tt.wantContent)
			}
			// Planning writes nothing.
			if b, _ := os.ReadFile(e.file); string(b) != tt.files[tt.wantFile] {
				t.Errorf("planning changed %s", e.file)
			}
		})
	}
}

func TestFileEditApplyAndRestore(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "compose.yaml")
	orig := []byte("services:\n  web:\n    image: r/app:1.0\n")
	if err := os.WriteFile(path, orig, 0o640); err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(orig), "1.0")
	e := fileEdit{file: path, before: orig, start: i, end: i + 3, text: "2.0"}
	if err := e.apply(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "services:\n  web:\n    image: r/app:2.0\n" {
		t.Errorf("after apply: %q", b)
	}
	if b, _ := os.ReadFile(path + backupSuffix); string(b) != string(orig) {
		t.Errorf("backup = %q, want the original", b)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode = %v, want 0640 kept", fi.Mode().Perm())
	}
	// Applying again refuses: the file is no longer what was planned on.
	if err := e.apply(); !errors.Is(err, deployer.ErrConflict) {
		t.Errorf("second apply: %v, want ErrConflict", err)
	}
	if err := e.restore(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != string(orig) {
		t.Errorf("after restore: %q", b)
	}
	if _, err := os.Stat(path + backupSuffix); !os.IsNotExist(err) {
		t.Errorf("backup still there after restore: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only compose.yaml", len(entries))
	}
}

func TestRollbackTag(t *testing.T) {
	if got := RollbackTag("shop", "web.api"); got != "shipwatch-rollback.shop.web.api" {
		t.Errorf("RollbackTag = %q", got)
	}
	long := RollbackTag(strings.Repeat("p", 80), strings.Repeat("s", 80))
	if len(long) > 128 || !strings.HasPrefix(long, "shipwatch-rollback.") {
		t.Errorf("RollbackTag for long names = %q (%d chars), want ≤ 128", long, len(long))
	}
	if long == RollbackTag(strings.Repeat("p", 80), strings.Repeat("s", 79)) {
		t.Errorf("long names collide")
	}
}
