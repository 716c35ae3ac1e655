package config

import (
	"strings"
	"testing"
)

func TestLabelPolicy(t *testing.T) {
	pol, enable, err := LabelPolicyOf(map[string]string{
		LabelEnable: "true", LabelSemver: "~1.4", LabelExclude: "-rc", "com.example.other": "x",
	})
	if err != nil {
		t.Fatal(err)
	}
	if enable == nil || !*enable || *pol.Update != UpdateSemver || *pol.Semver != "~1.4" || pol.Exclude[0] != "-rc" {
		t.Errorf("labels → enable %v, policy %+v", enable, pol)
	}
}

func TestLabelPolicyErrors(t *testing.T) {
	tests := []struct {
		labels map[string]string
		want   string
	}{
		{map[string]string{"shipwatch.semvr": "^1"}, `label shipwatch.semvr: unknown shipwatch label (did you mean "shipwatch.semver"?)`},
		{map[string]string{LabelEnable: "maybe"}, `label shipwatch.enable: "maybe" is not a boolean`},
		{map[string]string{LabelSemver: "~~1"}, `label shipwatch.semver: invalid semver range "~~1"`},
		{map[string]string{LabelPolicy: "always"}, `label shipwatch.policy: "always" is not an update policy`},
		{map[string]string{LabelInclude: "("}, `label shipwatch.include: invalid regular expression`},
	}
	for _, tt := range tests {
		_, _, err := LabelPolicyOf(tt.labels)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("LabelPolicyOf(%v) error = %v, want %q", tt.labels, err, tt.want)
		}
	}
}

func TestResolveOrder(t *testing.T) {
	cfg, err := Parse([]byte(`
defaults:
  enable: false
  policy: {update: digest}
targets:
  - compose: shop/web
    policy: {semver: "^2"}
  - compose: "shop/*"
    enable: false
  - labels: {tier: db}
    policy: {freeze: true}
`), "cfg.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		ref     TargetRef
		enabled bool
		update  string
		semver  string
		freeze  bool
		source  string
	}{
		{"not opted in", TargetRef{Kind: "compose", Name: "blog/web"}, false, "digest", "", false, "defaults"},
		{"opted in by label", TargetRef{Kind: "compose", Name: "blog/web", Labels: map[string]string{LabelEnable: "true"}}, true, "digest", "", false, "labels"},
		{"label semver", TargetRef{Kind: "swarm", Name: "api", Labels: map[string]string{LabelEnable: "true", LabelSemver: "~1.4"}}, true, "semver", "~1.4", false, "labels"},
		{"config beats labels", TargetRef{Kind: "compose", Name: "shop/web", Labels: map[string]string{LabelSemver: "~1.4"}}, true, "semver", "^2", false, "targets[0]"},
		{"first entry wins; enable false", TargetRef{Kind: "compose", Name: "shop/db", Labels: map[string]string{LabelEnable: "true"}}, false, "digest", "", false, "targets[1]"},
		{"label selector", TargetRef{Kind: "swarm", Name: "pg", Labels: map[string]string{"tier": "db"}}, true, "digest", "", true, "targets[2]"},
		{"kind must match", TargetRef{Kind: "swarm", Name: "shop/web"}, false, "digest", "", false, "defaults"},
	}
	for _, tt := range tests {
		eff, err := cfg.Resolve(tt.ref)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if eff.Enabled != tt.enabled || eff.Update != tt.update || eff.Semver != tt.semver || eff.Freeze != tt.freeze || eff.Source != tt.source {
			t.Errorf("%s: got %+v, want enabled=%v update=%s semver=%q freeze=%v source=%s", tt.name, eff, tt.enabled, tt.update, tt.semver, tt.freeze, tt.source)
		}
	}
}
