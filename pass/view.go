package pass

import (
	"time"

	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/verify/verdict"
)

// ReportView is the JSON form of a Report, shared by `--output json` and the
// HTTP API. It holds no secrets: references, digests, reasons and verdicts.
type ReportView struct {
	Mode    string        `json:"mode"`
	Started time.Time     `json:"started"`
	TookMS  int64         `json:"took_ms"`
	Targets []TargetView  `json:"targets"`
	Ignored []IgnoredView `json:"ignored,omitempty"`
	Notes   []string      `json:"notes,omitempty"`
}

// TargetView is one target's line in the plan.
type TargetView struct {
	ID        string           `json:"id"`
	Kind      string           `json:"kind"`
	Image     string           `json:"image"`
	Digest    string           `json:"digest,omitempty"`
	Policy    PolicyView       `json:"policy"`
	Candidate string           `json:"candidate,omitempty"`
	Change    string           `json:"change,omitempty"`
	Verdict   *verdict.Verdict `json:"verdict,omitempty"`
	Outcome   string           `json:"outcome"`
	Reason    string           `json:"reason"`
	Steps     []StepView       `json:"steps,omitempty"`
	Running   string           `json:"running,omitempty"`
	TookMS    int64            `json:"took_ms,omitempty"`
}

// PolicyView is the effective update policy of a target.
type PolicyView struct {
	Update string `json:"update"`
	Semver string `json:"semver,omitempty"`
	Freeze bool   `json:"freeze,omitempty"`
	Source string `json:"source"`
}

// StepView is one timed rollout step.
type StepView struct {
	Name   string `json:"name"`
	TookMS int64  `json:"took_ms"`
	Detail string `json:"detail,omitempty"`
	Error  string `json:"error,omitempty"`
}

// IgnoredView is a target the pass left alone.
type IgnoredView struct {
	ID     string `json:"id"`
	Reason string `json:"reason"`
}

// View returns the JSON form of the report.
func (r Report) View() ReportView {
	v := ReportView{Mode: r.Mode.String(), Started: r.Started, TookMS: r.Took.Milliseconds(), Notes: r.Notes, Targets: []TargetView{}}
	for _, t := range r.Targets {
		v.Targets = append(v.Targets, t.View())
	}
	for _, ig := range r.Ignored {
		v.Ignored = append(v.Ignored, IgnoredView(ig))
	}
	return v
}

// View returns the JSON form of one target result.
func (t TargetResult) View() TargetView {
	v := TargetView{
		ID:      t.Target.ID,
		Kind:    string(t.Target.Kind),
		Image:   t.Target.Image.Familiar(),
		Digest:  t.Target.Digest,
		Policy:  PolicyView{Update: t.Policy.Update, Semver: t.Policy.Semver, Freeze: t.Policy.Freeze, Source: t.Policy.Source},
		Change:  t.Change,
		Verdict: t.Verdict,
		Outcome: string(t.Outcome),
		Reason:  t.Reason,
		TookMS:  t.Took.Milliseconds(),
	}
	if t.Candidate.Digest != "" {
		v.Candidate = t.Candidate.Familiar()
	}
	if d := t.Deploy; d != nil {
		v.Running = d.Running
		for _, s := range d.Steps {
			sv := StepView{Name: s.Name, TookMS: s.Took.Milliseconds(), Detail: s.Detail}
			if s.Err != nil {
				sv.Error = s.Err.Error()
			}
			v.Steps = append(v.Steps, sv)
		}
	}
	return v
}

// Actionable reports whether the target has a verified update waiting.
func (t TargetResult) Actionable() bool { return t.Outcome == deployer.Available }
