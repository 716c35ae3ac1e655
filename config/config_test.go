package config

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func env(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
}

const canary = "hunter2-canary-9f1c"

func TestLoadFull(t *testing.T) {
	cfg, err := Load("testdata/full.yaml", env(map[string]string{"GHCR_TOKEN": canary}))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got := cfg.Registries[0].Password.Value(); got != canary {
		t.Errorf("password from ${GHCR_TOKEN} = %q, want the variable's value", got)
	}
	if got := cfg.Registries[1].Token.Value(); got != "tok-from-file-42" {
		t.Errorf("token_file = %q, want the file's first line without newline", got)
	}
	if cfg.Jitter.Std().Seconds() != 30 || cfg.Verify.Policies[0].Scan.MaxAge.Std().Hours() != 168 {
		t.Errorf("durations: jitter %v, max_age %v", cfg.Jitter.Std(), cfg.Verify.Policies[0].Scan.MaxAge.Std())
	}
	if r := cfg.Rollout; r.RetryBackoff.Std() != 30*time.Second || r.RetryBackoffMax.Std() != time.Hour {
		t.Errorf("rollout retry backoff %v up to %v, want 30s (set) up to 1h (default)", r.RetryBackoff.Std(), r.RetryBackoffMax.Std())
	}
	if len(cfg.Targets) != 4 || *cfg.Targets[0].Policy.Semver != "~1.4" || cfg.Targets[3].Policy.Levels.Major != "never" {
		t.Errorf("targets = %+v", cfg.Targets)
	}
}

func TestSecretsNeverPrinted(t *testing.T) {
	cfg, err := Load("testdata/full.yaml", env(map[string]string{"GHCR_TOKEN": canary}))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := Print(&out, cfg); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{out.String(), fmt.Sprintf("%v %+v %#v %s %q", cfg, cfg, cfg, cfg.Registries[0].Password, cfg.Registries[0].Password)} {
		if strings.Contains(s, canary) || strings.Contains(s, "tok-from-file-42") || strings.Contains(s, "-canary") {
			t.Fatalf("a secret leaked into printed output:\n%s", s)
		}
	}
	if !strings.Contains(out.String(), "password: '[redacted]'") && !strings.Contains(out.String(), "password: \"[redacted]\"") {
		t.Errorf("config print does not show that the password is set:\n%s", out.String())
	}
	// The printed config is YAML with the same schema (secrets aside).
	var printed Config
	if _, err := decodeInto(out.Bytes(), "printed", nil, &printed); err != nil {
		t.Errorf("printed config does not decode back: %v", err)
	}
}

func TestEmptyFileIsDefault(t *testing.T) {
	cfg, err := Parse(nil, "empty.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Schedule != "@every 5m" || *cfg.Defaults.Policy.Update != UpdateDigest || cfg.Concurrency != 4 {
		t.Errorf("defaults = %+v", cfg)
	}
}

func TestBadConfigs(t *testing.T) {
	dir := t.TempDir()
	priv := filepath.Join(dir, "priv.pem")
	os.WriteFile(priv, []byte("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIA==\n-----END EC PRIVATE KEY-----\n"), 0o600)
	tests := []struct {
		name, yaml string
		want       []string // substrings of the error, all required
	}{
		{"unknown key with suggestion", "targets:\n  - compose: a/b\n    polcy: {}\n", []string{"cfg.yaml:3: targets[0].polcy: unknown key \"polcy\" (did you mean \"policy\"?)", "allowed here: compose, enable, labels, policy, swarm"}},
		{"wrong type", "concurrency: lots\n", []string{"cfg.yaml:1: concurrency: \"lots\" is not a whole number"}},
		{"list expected", "registries: ghcr.io\n", []string{"cfg.yaml:1: registries: got a value, want a list"}},
		{"bad semver", "targets:\n  - compose: a/b\n    policy:\n      update: semver\n      semver: \"~1.x.y.z\"\n", []string{"cfg.yaml:5: targets[0].policy.semver: invalid semver range \"~1.x.y.z\"", "~1.4"}},
		{"bad regex", "defaults:\n  policy:\n    include: [\"(unclosed\"]\n", []string{"cfg.yaml:3: defaults.policy.include[0]: invalid regular expression \"(unclosed\""}},
		{"bad cron", "schedule: \"61 * * * *\"\n", []string{"cfg.yaml:1: schedule: invalid cron spec \"61 * * * *\"", "@every 5m"}},
		{"bad update", "defaults:\n  policy:\n    update: sometimes\n", []string{"cfg.yaml:3: defaults.policy.update: \"sometimes\" is not an update policy; use digest, semver or none"}},
		{"semver with digest", "defaults:\n  policy:\n    update: digest\n    semver: ^1\n", []string{"defaults.policy.semver: a semver range only applies with update: semver"}},
		{"unset variable", "registries:\n  - host: ghcr.io\n    token: ${NOPE}\n", []string{"cfg.yaml:3: registries[0].token: environment variable NOPE is not set; set it or give a default with ${NOPE:-value}"}},
		{"scheme in host", "registries:\n  - host: https://ghcr.io\n", []string{"registries[0].host: \"https://ghcr.io\": write the host without a scheme, like ghcr.io"}},
		{"username without password", "registries:\n  - host: ghcr.io\n    username: bob\n", []string{"registries[0].password: username \"bob\" is set but no password"}},
		{"password and file", "registries:\n  - host: ghcr.io\n    username: bob\n    password: x\n    password_file: /nonexistent\n", []string{"registries[0].password_file: set either password or password_file, not both"}},
		{"missing secret file", "registries:\n  - host: ghcr.io\n    token_file: /nonexistent/token\n", []string{"registries[0].token_file: cannot read the secret file"}},
		{"target selects nothing", "targets:\n  - policy: {freeze: true}\n", []string{"cfg.yaml:2: targets[0]: selects nothing"}},
		{"policy without authority", "verify:\n  policies:\n    - name: p\n      images: [\"x/*\"]\n", []string{"verify.policies[0].signed_by: missing; name the authorities", "allow_unsigned: true"}},
		{"unknown authority", "verify:\n  policies:\n    - name: p\n      images: [\"x/*\"]\n      signed_by: [nobody]\n", []string{"cfg.yaml:5: verify.policies[0].signed_by[0]: no authority named \"nobody\""}},
		{"private key as key", "verify:\n  authorities:\n    a:\n      key_file: " + priv + "\n", []string{"verify.authorities.a.key_file", "want PUBLIC KEY (never put a private key here)"}},
		{"garbage key", "verify:\n  authorities:\n    a:\n      key: hello\n", []string{"cfg.yaml:4: verify.authorities.a.key: not a PEM public key"}},
		{"bad severity", "verify:\n  authorities: {a: {key_file: testdata/cosign.pub}}\n  policies:\n    - name: p\n      images: [\"x/*\"]\n      signed_by: [a]\n      scan: {signed_by: [a], max_severity: severe}\n", []string{"verify.policies[0].scan.max_severity: \"severe\" is not a severity"}},
		{"bad duration", "jitter: soon\n", []string{"cfg.yaml:1: jitter: \"soon\" is not a duration"}},
		{"malformed yaml", "targets:\n  - compose: a/b\n   policy: x\n", []string{"cfg.yaml:1: not valid YAML: did not find expected"}},
		{"two documents", "schedule: '@hourly'\n---\nschedule: '@daily'\n", []string{"more than one YAML document"}},
		{"duplicate key", "schedule: '@hourly'\nschedule: '@daily'\n", []string{"cfg.yaml"}},
		{"bool", "defaults:\n  enable: yes\n", []string{"cfg.yaml:2: defaults.enable: \"yes\" is not a boolean; write true or false"}},
		{"merge key", "base: &b {compose: a/b}\n", []string{"unknown key \"base\""}},
		{"api beyond loopback without token", "api:\n  listen: 0.0.0.0:8080\n", []string{"api.token: the API listens on 0.0.0.0:8080, beyond this machine"}},
		{"bad approval", "defaults:\n  policy:\n    approval: later\n", []string{"cfg.yaml:3: defaults.policy.approval: \"later\": use auto"}},
		{"bad level", "defaults:\n  policy:\n    levels: {major: sometimes}\n", []string{"defaults.policy.levels.major: \"sometimes\": use auto, manual or never"}},
		{"window without duration", "defaults:\n  policy:\n    windows: [{cron: \"0 2 * * *\"}]\n", []string{"defaults.policy.windows[0].duration: missing"}},
		{"bad notify url is not echoed", "notify:\n  urls: [\"hunter2-canary-9f1c\"]\n", []string{"notify.urls[0]: not a service URL"}},
		{"bad event", "notify:\n  events: [exploded]\n", []string{"notify.events[0]: \"exploded\" is not an event"}},
		{"retry backoff too short", "rollout: {retry_backoff: 0s}\n", []string{"rollout.retry_backoff: 0s is too short", "1s or more"}},
		{"retry backoff max below backoff", "rollout: {retry_backoff: 2h}\n", []string{"rollout.retry_backoff_max: 1h0m0s is shorter than rollout.retry_backoff (2h0m0s)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml), "cfg.yaml", env(nil))
			if err == nil {
				t.Fatalf("Parse accepted:\n%s", tt.yaml)
			}
			if strings.Contains(err.Error(), canary) {
				t.Errorf("error echoes a secret: %v", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n  %v\ndoes not contain\n  %s", err, w)
				}
			}
		})
	}
}

func TestExpand(t *testing.T) {
	lookup := env(map[string]string{"A": "alpha", "EMPTY": ""})
	tests := []struct{ in, want, err string }{
		{"plain", "plain", ""},
		{"${A}", "alpha", ""},
		{"x-${A}-y", "x-alpha-y", ""},
		{"${B:-beta}", "beta", ""},
		{"${EMPTY:-d}", "d", ""},
		{"${EMPTY}", "", ""},
		{"$$A and $$", "$A and $", ""},
		{"cost $5", "cost $5", ""},
		{"${B}", "", "B is not set"},
		{"${A", "", "unterminated"},
		{"${1A}", "", "not a variable name"},
	}
	for _, tt := range tests {
		got, err := expand(tt.in, lookup)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("expand(%q) error = %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("expand(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	full, _ := os.ReadFile("testdata/full.yaml")
	f.Add(string(full))
	f.Add("targets:\n  - compose: a/b\n    policy: {update: semver, semver: ^1}\n")
	f.Add("registries: [{host: x, password: ${P:-secret}}]")
	f.Fuzz(func(t *testing.T, s string) {
		cfg, err := Parse([]byte(s), "fuzz.yaml", env(map[string]string{"GHCR_TOKEN": canary}))
		if err != nil {
			if strings.Contains(err.Error(), canary) {
				t.Fatalf("secret in error: %v", err)
			}
			return
		}
		var out bytes.Buffer
		if err := Print(&out, cfg); err != nil {
			t.Fatalf("Print of a valid config failed: %v", err)
		}
		if strings.Contains(out.String(), canary) {
			t.Fatalf("secret printed:\n%s", out.String())
		}
	})
}
