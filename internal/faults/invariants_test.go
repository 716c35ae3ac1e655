package faults

import (
	"encoding/base64"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/shipwatch/shipwatch/state"
)

const (
	dOld  = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	dNew  = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
	dEvil = "sha256:3333333333333333333333333333333333333333333333333333333333333333"
)

// good is a consistent observation: the agent updated the target from dOld
// to dNew, which runs healthy in its one container.
func good(swarm bool) Observation {
	o := Observation{
		Target: "compose/p/web", Swarm: swarm, Desired: 1, Initial: dOld,
		Containers: []Container{{ID: "c1111111111111", Name: "p-web-1", State: "running", Health: "healthy", Digest: dNew}},
		Allowed:    map[string]bool{dOld: true, dNew: true},
		History: []state.Entry{
			{ID: 1, Target: "compose/p/web", Mode: "agent", From: dOld, To: "reg/app:1.1@" + dNew, Decision: "allowed", Outcome: "updated", Running: dNew},
		},
		Texts:    map[string][]byte{"agent 1 log": []byte(`{"message":"pass done"}`)},
		Canaries: map[string]string{CanaryAPIToken: "canary-api-0123456789abcdef", CanaryRegistry: "canary-reg-0123456789abcdef"},
	}
	if swarm {
		o.Target, o.SpecDigest, o.UpdateState = "swarm/web", dNew, "completed"
		o.History[0].Target = "swarm/web"
		o.Containers[0].Task = "running"
		o.Containers = append(o.Containers, Container{ID: "c2222222222222", State: "exited", Digest: dOld, Task: "shutdown"})
	}
	return o
}

// Every invariant must be able to fail: each case breaks one thing in a
// consistent observation and expects that invariant to fire (a missing
// replica is also a missing container: others may fire with it).
func TestInvariantsFireOnBrokenStates(t *testing.T) {
	for _, swarm := range []bool{false, true} {
		if v := Check(good(swarm)); len(v) != 0 {
			t.Fatalf("consistent observation (swarm %v): got violations %v, want none", swarm, v)
		}
	}
	cases := []struct {
		name   string
		swarm  bool
		want   string
		break_ func(o *Observation)
	}{
		{"replica unhealthy", false, "I1", func(o *Observation) { o.Containers[0].Health = "unhealthy" }},
		{"replica missing", false, "I1", func(o *Observation) { o.Desired = 2 }},
		{"replica stopped", true, "I1", func(o *Observation) { o.Containers[0].State = "exited" }},
		{"orphan from an interrupted recreate", false, "I2", func(o *Observation) {
			o.Containers = append(o.Containers, Container{ID: "c3333333333333", Name: "c1111111_p-web-1", State: "created", Digest: dNew})
		}},
		{"duplicated container", false, "I2", func(o *Observation) {
			c := o.Containers[0]
			c.ID, c.Health = "c4444444444444", "healthy"
			o.Containers = append(o.Containers, c)
		}},
		{"swarm container stuck created", true, "I2", func(o *Observation) {
			o.Containers = append(o.Containers, Container{ID: "c5555555555555", State: "created", Digest: dNew, Task: "running"})
		}},
		{"runs a digest the policy does not allow", false, "I3", func(o *Observation) {
			delete(o.Allowed, dNew)
		}},
		{"spec pins a digest the policy does not allow", true, "I3", func(o *Observation) { o.SpecDigest = dEvil }},
		{"runs another digest than the one verified", false, "I4", func(o *Observation) {
			o.Allowed[dEvil] = true
			o.Containers[0].Digest = dEvil
		}},
		{"updated although verification did not allow it", false, "I4", func(o *Observation) { o.History[0].Decision = "blocked" }},
		{"update records another running digest", false, "I4", func(o *Observation) { o.History[0].Running = dOld }},
		{"changed without any history", false, "I4", func(o *Observation) { o.History = nil }},
		{"swarm left paused", true, "I5", func(o *Observation) { o.UpdateState = "paused" }},
		{"swarm left rollback_paused", true, "I5", func(o *Observation) { o.UpdateState = "rollback_paused" }},
		{"state file corrupt", false, "I6", func(o *Observation) { o.StateErr = errors.New("state file is corrupt: page 3 unreachable") }},
		{"journal left behind", false, "I6", func(o *Observation) {
			o.Journals = []state.Journal{{Target: "compose/p/web", Step: "converge"}}
		}},
		{"rolled back but still running the bad digest", false, "I6", func(o *Observation) {
			o.History = append(o.History, state.Entry{ID: 2, Target: "compose/p/web", Mode: "agent", From: dNew, To: "reg/app:1.2@" + dEvil, Outcome: "rolled-back", Running: dEvil})
			o.Allowed[dEvil] = true
			o.Containers[0].Digest = dEvil
		}},
		{"API token in the log", false, "I7", func(o *Observation) {
			o.Texts["agent 1 log"] = []byte(`{"error":"401 with Bearer canary-api-0123456789abcdef"}`)
		}},
		{"registry password base64 in a notification", false, "I7", func(o *Observation) {
			o.Texts["notification 1"] = []byte(`{"auth":"` + base64.StdEncoding.EncodeToString([]byte("fault-user:canary-reg-0123456789abcdef")) + `"}`)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := good(c.swarm)
			c.break_(&o)
			var got []string
			fires := false
			for _, v := range Check(o) {
				got = append(got, v.String())
				fires = fires || v.Invariant == c.want
			}
			if !fires {
				t.Errorf("got %v, want %s to fire", got, c.want)
			}
		})
	}
}

// The base64 forms find the secret whatever bytes precede it.
func TestSecretFormsFindEncodedSecrets(t *testing.T) {
	secret := "canary-reg-0123456789abcdef"
	for _, prefix := range []string{"", "u:", "us:", "user:", "fault-user:"} {
		enc := base64.StdEncoding.EncodeToString([]byte(prefix + secret + "\"}"))
		o := Observation{Texts: map[string][]byte{"x": []byte("auth " + enc)}, Canaries: map[string]string{CanaryRegistry: secret}}
		if v := I7Secrets(o); len(v) != 1 {
			t.Errorf("prefix %q: got %v, want one I7 violation", prefix, v)
		}
	}
	o := Observation{Texts: map[string][]byte{"x": []byte("nothing secret here")}, Canaries: map[string]string{CanaryRegistry: secret}}
	if v := I7Secrets(o); len(v) != 0 {
		t.Errorf("clean text: got %v, want none", v)
	}
}

// docs/faults.md describes every class the suite runs.
func TestDocsListEveryClass(t *testing.T) {
	doc, err := os.ReadFile("../../docs/faults.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range AllClasses() {
		if !strings.Contains(string(doc), "| `"+c.Name+"` |") {
			t.Errorf("docs/faults.md has no row for class %s", c.Name)
		}
	}
}
