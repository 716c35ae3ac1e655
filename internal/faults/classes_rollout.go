package faults

import (
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"strings"
	"time"

	"github.com/moby/moby/api/types/swarm"

	"github.com/shipwatch/shipwatch/internal/testenv"
)

// expectRolledBack waits for the agent to roll bad back, checks that the
// digest is quarantined and that later passes do not try it again (no
// retry storm).
func expectRolledBack(e *Env, a *Agent, bad Version) []string {
	if _, ok := e.WaitHistory(settle, Outcome("rolled-back", bad.Digest)); !ok {
		return []string{fmt.Sprintf("bad image %s not rolled back within %s", short(bad.Digest), settle)}
	}
	var misses []string
	if !e.Quarantined(bad.Digest) {
		misses = append(misses, "rolled-back digest not quarantined")
	}
	if !WaitPasses(a, a.Mark(), 2, 2*time.Minute) {
		misses = append(misses, "the agent did not finish 2 more passes after the rollback")
	}
	n := 0
	for _, h := range e.History() {
		if digestOf(h.To) == bad.Digest && (h.Outcome == "rolled-back" || h.Outcome == "updated") {
			n++
		}
	}
	if n != 1 {
		misses = append(misses, fmt.Sprintf("the bad digest was rolled out %d times, want once (quarantine)", n))
	}
	return misses
}

// notified counts the notifications of kind about digest.
func notified(e *Env, kind, digest string) int {
	n := 0
	for _, body := range e.Notifications() {
		var ev struct{ Kind, To string }
		if json.Unmarshal(body, &ev) == nil && ev.Kind == kind && strings.Contains(ev.To, digest) {
			n++
		}
	}
	return n
}

// badApp is a candidate that fails its health gate: it crashes after a
// while, or runs but reports unhealthy.
func (e *Env) badApp(mode string) testenv.App {
	app := e.App("1.1.0")
	app.Mode = mode
	if mode == "crash" {
		app.CrashAfter = time.Duration(200+e.Rng.IntN(2800)) * time.Millisecond
	}
	return app
}

// RolloutClasses are the classes about the new image itself and about the
// Swarm update settings.
func RolloutClasses() []Class {
	bad := func(name, mode, injects string) Class {
		return Class{
			Name: name, Injects: injects, Platforms: both, Options: baseOptions,
			Drive: func(e *Env) []string {
				cand := e.PushCandidate(e.Good(e.badApp(mode)))
				a := e.StartAgent()
				return expectRolledBack(e, a, cand)
			},
		}
	}
	return []Class{
		bad("crash", "crash", "a signed candidate that exits 1 after 0.2–3 s (a crash loop under a restart policy)"),
		bad("unhealthy", "unhealthy", "a signed candidate that runs but whose healthcheck fails"),
		{
			Name: "slow-start", Platforms: both, Options: baseOptions,
			Injects: "a signed candidate that is unhealthy for its first 2–8 s, within its healthcheck's start period of 12 s: it must be deployed, not rolled back",
			Drive: func(e *Env) []string {
				app := e.App("1.1.0")
				app.Mode, app.Slow = "slow", time.Duration(2000+e.Rng.IntN(6000))*time.Millisecond
				app.Health = &testenv.Health{Interval: 250 * time.Millisecond, Timeout: time.Second, Retries: 3, StartPeriod: 12 * time.Second}
				cand := e.PushCandidate(e.Good(app))
				e.StartAgent()
				misses := expectUpdated(e, cand)
				for _, h := range e.History() {
					if h.Outcome == "rolled-back" {
						misses = append(misses, "false rollback of a slow but healthy image: "+h.Reason)
					}
				}
				return misses
			},
		},
		{
			Name: "swarm-delay", Platforms: []Platform{Swarm},
			Injects: "a 2-replica Swarm service whose update delay (3–8 s) is longer than its monitor window (1–2 s); the candidate is good, or crashes after 0.2–3 s",
			Options: func(rng *mrand.Rand, p Platform) Options {
				o := baseOptions(rng, p)
				o.Replicas = 2
				o.SwarmUpdate = &swarm.UpdateConfig{
					Parallelism: 1, Delay: time.Duration(3+rng.IntN(6)) * time.Second, Monitor: time.Duration(1+rng.IntN(2)) * time.Second,
					FailureAction: swarm.UpdateFailureActionRollback, Order: pick(rng, swarm.UpdateOrderStartFirst, swarm.UpdateOrderStopFirst),
				}
				o.SwarmRollback = &swarm.UpdateConfig{Parallelism: 1, Monitor: time.Second, FailureAction: swarm.UpdateFailureActionPause, Order: swarm.UpdateOrderStopFirst}
				return o
			},
			Drive: func(e *Env) []string {
				e.Note("update delay %s, monitor %s, order %s", e.Opts.SwarmUpdate.Delay, e.Opts.SwarmUpdate.Monitor, e.Opts.SwarmUpdate.Order)
				if e.Rng.IntN(3) == 0 {
					cand := e.PushCandidate(e.Good(e.badApp("crash")))
					a := e.StartAgent()
					return expectRolledBack(e, a, cand)
				}
				cand := e.PushCandidate(e.Good(e.App("1.1.0")))
				e.StartAgent()
				return expectUpdated(e, cand)
			},
		},
	}
}

// VerifyClasses are the classes where verification must say no, or where
// the registry changes under the agent's feet.
func VerifyClasses() []Class {
	blocked := func(name, injects string, scan bool, make func(e *Env) Version) Class {
		return Class{
			Name: name, Injects: injects, Platforms: both,
			Options: func(rng *mrand.Rand, p Platform) Options {
				o := baseOptions(rng, p)
				o.Scan = scan
				return o
			},
			Drive: func(e *Env) []string {
				cand := e.PushCandidate(make(e))
				a := e.StartAgent()
				if _, ok := e.WaitHistory(settle, Outcome("blocked", cand.Digest)); !ok {
					return []string{fmt.Sprintf("candidate %s not blocked within %s", short(cand.Digest), settle)}
				}
				var misses []string
				if !WaitPasses(a, a.Mark(), 2, 2*time.Minute) {
					misses = append(misses, "the agent did not finish 2 more passes after blocking")
				}
				if n := len(e.Faults.Requests(Engine, cand.Digest)); n > 0 {
					misses = append(misses, fmt.Sprintf("the engine fetched the blocked digest %d time(s)", n))
				}
				if n := notified(e, "blocked", cand.Digest); n != 1 {
					misses = append(misses, fmt.Sprintf("blocked digest notified %d times, want once", n))
				}
				return misses
			},
		}
	}
	return []Class{
		blocked("unsigned", "a candidate without any signature", false, func(e *Env) Version {
			return Version{App: e.App("1.1.0")}
		}),
		blocked("wrong-key", "a candidate signed by a key the policy does not trust", false, func(e *Env) Version {
			return Version{App: e.App("1.1.0"), Sign: e.Stranger}
		}),
		blocked("scan-stale", "a signed candidate whose scan attestation is 30 days old (max age 7 d), or fresh with a critical finding", true, func(e *Env) Version {
			return Version{App: e.App("1.1.0"), Sign: e.Trusted, Scan: pick(e.Rng, ScanStale, ScanBad)}
		}),
		blocked("scan-missing", "a signed candidate with no scan attestation, or one signed by an untrusted scanner key", true, func(e *Env) Version {
			return Version{App: e.App("1.1.0"), Sign: e.Trusted, Scan: pick(e.Rng, ScanNone, ScanWrong)}
		}),
		tagMoved(),
		downgrade(),
	}
}

// tagMoved: the candidate's tag is moved to an unsigned image between the
// verification of the candidate and the engine's pull. Exactly the verified
// digest must be deployed; the new one is then blocked.
func tagMoved() Class {
	return Class{
		Name: "tag-moved", Platforms: both, Options: baseOptions,
		Injects: "the candidate's tag re-pointed to an unsigned image after the verifier's first look at the candidate, or just before the engine fetches it",
		Drive: func(e *Env) []string {
			cand := e.PushCandidate(e.Good(e.App("1.1.0")))
			evil := e.Push("staging", Version{App: e.App("1.1.0-evil")})
			tag := e.CandidateTag()
			moved := make(chan error, 1)
			move := func() { moved <- e.MoveTag(tag, evil.Digest) }
			hex := strings.TrimPrefix(cand.Digest, "sha256:")
			if e.Rng.IntN(2) == 0 {
				e.Faults.Add(&Rule{Name: "verifier looks at the candidate", Clients: []Client{Verifier}, PathContains: hex, Times: 1, After: move})
				e.Note("tag %s moved after the verifier's first request about the candidate", tag)
			} else {
				e.Faults.Add(&Rule{Name: "engine fetches the candidate", Clients: []Client{Engine}, Kinds: []string{"manifest"}, PathContains: cand.Digest, Times: 1, Before: move})
				e.Note("tag %s moved just before the engine fetched the candidate", tag)
			}
			e.StartAgent()
			select {
			case err := <-moved:
				if err != nil {
					return []string{"move tag: " + err.Error()}
				}
			case <-time.After(settle):
				return []string{"the tag was never moved (hook did not fire)"}
			}
			misses := expectUpdated(e, cand)
			if _, ok := e.WaitHistory(settle, Outcome("blocked", evil.Digest)); !ok {
				misses = append(misses, "the unsigned digest the tag moved to was not blocked")
			}
			return misses
		},
	}
}

// downgrade: after the agent updated the target, its tag is moved back to
// the older (still validly signed) digest. The agent must refuse it.
func downgrade() Class {
	return Class{
		Name: "downgrade", Platforms: both, Options: baseOptions,
		Injects: "after an update, the tag moved back to the older, validly signed digest the target ran before",
		Drive: func(e *Env) []string {
			cand := e.PushCandidate(e.Good(e.App("1.1.0")))
			e.StartAgent()
			if misses := expectUpdated(e, cand); misses != nil {
				return misses
			}
			if err := e.MoveTag(e.CandidateTag(), e.Initial); err != nil {
				return []string{"move tag back: " + err.Error()}
			}
			if _, ok := e.WaitHistory(settle, Outcome("blocked", e.Initial)); !ok {
				return []string{"the tag moved back to the older digest was not refused (blocked) within " + settle.String()}
			}
			for _, h := range e.History() {
				if h.Outcome == "updated" && digestOf(h.To) == e.Initial {
					return []string{"silently downgraded to the older digest: " + h.Reason}
				}
			}
			return nil
		},
	}
}
