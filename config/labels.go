package config

import (
	"errors"
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Labels that opt a container or service in and set its policy without a
// config file, the way Watchtower users expect.
const (
	LabelEnable     = "shipwatch.enable"     // true | false
	LabelPolicy     = "shipwatch.policy"     // digest | semver | none
	LabelSemver     = "shipwatch.semver"     // ~1.4
	LabelPrerelease = "shipwatch.prerelease" // true | false
	LabelInclude    = "shipwatch.include"    // regex
	LabelExclude    = "shipwatch.exclude"    // regex
	LabelFreeze     = "shipwatch.freeze"     // true | false
	LabelApproval   = "shipwatch.approval"   // auto | manual
	LabelSchedule   = "shipwatch.schedule"   // cron spec
	LabelWave       = "shipwatch.wave"       // 0, 1, 2 …
	LabelCooldown   = "shipwatch.cooldown"   // 24h
)

// labelKeys lists every label shipwatch reads; other shipwatch.* labels are
// errors, so that a typo does not silently do nothing.
var labelKeys = []string{LabelEnable, LabelPolicy, LabelSemver, LabelPrerelease, LabelInclude, LabelExclude, LabelFreeze, LabelApproval, LabelSchedule, LabelWave, LabelCooldown}

// LabelPolicyOf reads the shipwatch.* labels into a Policy (and the
// shipwatch.enable opt-in). Errors name the label and say what is allowed.
func LabelPolicyOf(labels map[string]string) (Policy, *bool, error) {
	var pol Policy
	var enable *bool
	v := validator{}
	var keys []string // shipwatch's, sorted: a Compose container has many others
	for k := range labels {
		if strings.HasPrefix(k, "shipwatch.") && !strings.HasPrefix(k, "shipwatch.test") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		val := labels[k]
		p := "label " + k
		switch k {
		case LabelEnable:
			enable = v.labelBool(p, val)
		case LabelPolicy:
			pol.Update = &val
		case LabelSemver:
			pol.Semver = &val
		case LabelPrerelease:
			pol.Prerelease = v.labelBool(p, val)
		case LabelInclude:
			pol.Include = []string{val}
		case LabelExclude:
			pol.Exclude = []string{val}
		case LabelFreeze:
			pol.Freeze = v.labelBool(p, val)
		case LabelApproval:
			pol.Approval = &val
		case LabelSchedule:
			pol.Schedule = &val
		case LabelWave:
			n, err := strconv.Atoi(val)
			if err != nil {
				v.fail(p, "%q is not a whole number", val)
			} else {
				pol.Wave = &n
			}
		case LabelCooldown:
			d, err := parseDuration(val)
			if err != nil {
				v.fail(p, "%q is not a duration; write it like 30m, 24h or 2d", val)
			} else {
				cd := Duration(d)
				pol.Cooldown = &cd
			}
		default:
			fields := make([]fieldInfo, len(labelKeys))
			for i, lk := range labelKeys {
				fields[i] = fieldInfo{key: lk}
			}
			v.fail(p, "unknown shipwatch label%s; known labels: %s", suggest(k, fields), strings.Join(labelKeys, ", "))
		}
	}
	if pol.Semver != nil && pol.Update == nil {
		semverMode := UpdateSemver
		pol.Update = &semverMode
	}
	v.labelPolicy(pol)
	return pol, enable, errors.Join(v.errs...)
}

func (v *validator) labelBool(p, val string) *bool {
	switch strings.ToLower(val) {
	case "true", "1", "yes":
		b := true
		return &b
	case "false", "0", "no":
		b := false
		return &b
	}
	v.fail(p, "%q is not a boolean; use true or false", val)
	return nil
}

// labelPolicy validates a label policy with label names in the errors.
func (v *validator) labelPolicy(pol Policy) {
	sub := validator{}
	sub.policy("p", pol)
	for _, err := range sub.errs {
		var fe *FieldError
		if errors.As(err, &fe) {
			name := map[string]string{"p.update": LabelPolicy, "p.semver": LabelSemver, "p.include[0]": LabelInclude, "p.exclude[0]": LabelExclude,
				"p.approval": LabelApproval, "p.schedule": LabelSchedule, "p.wave": LabelWave}[fe.Path]
			v.fail("label "+name, "%s", fe.Msg)
		}
	}
}

// TargetRef is what policy resolution needs to know about a discovered target.
type TargetRef struct {
	Kind   string // "compose" or "swarm"
	Name   string // "project/service" or "service"
	Labels map[string]string
}

// Effective is the policy that applies to one target after defaults, labels
// and the first matching targets entry are merged (in that order).
type Effective struct {
	Enabled    bool
	Update     string
	Semver     string
	Prerelease bool
	Include    []string
	Exclude    []string
	Freeze     bool
	Approval   string // auto | manual
	Levels     Levels
	Schedule   string // "" = the global schedule
	Windows    []Window
	Cooldown   time.Duration
	Wave       int
	// Source says where the policy came from: "defaults", "labels",
	// "targets[2]" (the last layer that set something).
	Source string
}

// Resolve returns the effective policy of t, or an error when its labels are
// invalid (the target is then reported as failed, others go on).
func (c *Config) Resolve(t TargetRef) (Effective, error) {
	eff := Effective{Enabled: c.Defaults.Enable, Source: "defaults", Approval: "auto"}
	apply(&eff, c.Defaults.Policy)
	lp, enable, err := LabelPolicyOf(t.Labels)
	if err != nil {
		return eff, err
	}
	if enable != nil {
		eff.Enabled = *enable
		eff.Source = "labels"
	}
	if apply(&eff, lp) {
		eff.Source = "labels"
	}
	for i, entry := range c.Targets {
		if !entry.matches(t) {
			continue
		}
		eff.Enabled = true
		if entry.Enable != nil {
			eff.Enabled = *entry.Enable
		}
		apply(&eff, entry.Policy)
		eff.Source = fmt.Sprintf("targets[%d]", i)
		break
	}
	return eff, nil
}

// apply overlays the set fields of p on eff and reports whether any was set.
func apply(eff *Effective, p Policy) bool {
	set := false
	if p.Update != nil {
		eff.Update, set = *p.Update, true
	}
	if p.Semver != nil {
		eff.Semver, set = *p.Semver, true
		if p.Update == nil {
			eff.Update = UpdateSemver
		}
	}
	if p.Prerelease != nil {
		eff.Prerelease, set = *p.Prerelease, true
	}
	if p.Include != nil {
		eff.Include, set = p.Include, true
	}
	if p.Exclude != nil {
		eff.Exclude, set = p.Exclude, true
	}
	if p.Freeze != nil {
		eff.Freeze, set = *p.Freeze, true
	}
	if p.Approval != nil {
		eff.Approval, set = *p.Approval, true
	}
	if l := p.Levels; l != nil {
		set = true
		if l.Patch != "" {
			eff.Levels.Patch = l.Patch
		}
		if l.Minor != "" {
			eff.Levels.Minor = l.Minor
		}
		if l.Major != "" {
			eff.Levels.Major = l.Major
		}
	}
	if p.Schedule != nil {
		eff.Schedule, set = *p.Schedule, true
	}
	if p.Windows != nil {
		eff.Windows, set = p.Windows, true
	}
	if p.Cooldown != nil {
		eff.Cooldown, set = p.Cooldown.Std(), true
	}
	if p.Wave != nil {
		eff.Wave, set = *p.Wave, true
	}
	return set
}

func (t Target) matches(ref TargetRef) bool {
	switch {
	case t.Compose != "":
		if ref.Kind != "compose" || !globMatch(t.Compose, ref.Name) {
			return false
		}
	case t.Swarm != "":
		if ref.Kind != "swarm" || !globMatch(t.Swarm, ref.Name) {
			return false
		}
	}
	for k, want := range t.Labels {
		got, ok := ref.Labels[k]
		if !ok || (want != "*" && got != want) {
			return false
		}
	}
	return true
}

func globMatch(pattern, name string) bool {
	ok, err := path.Match(pattern, name)
	return err == nil && ok
}
