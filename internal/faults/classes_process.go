package faults

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"strings"
	"sync"
	"time"
)

// Compose rollout steps (deployer/compose), in order: the kill points.
var (
	composeSteps        = []string{"load project", "drift guard", "plan", "pull", "verify digest", "protect previous image", "rewrite files", "tag image", "converge", "health gate"}
	composeRestoreSteps = []string{"health gate", "rollback: restore files", "rollback: restore image tag", "rollback: converge"}
)

// ProcessClasses are the classes about the agent process and its engine
// connection: SIGKILL at every step, the engine API cut mid-update, a
// second agent on the same state.
func ProcessClasses() []Class {
	return []Class{killCompose(), killSwarm(), engineCut(), secondAgent()}
}

// restartAfterKill checks the journal the killed agent left, restarts the
// agent and checks that it reconciles the interrupted rollout first.
func restartAfterKill(e *Env, point string) (*Agent, []string) {
	var misses []string
	js, err := e.Journals()
	if err != nil {
		misses = append(misses, "state after SIGKILL: "+err.Error())
	}
	e.Note("killed %s; %d journal(s) left", point, len(js))
	b := e.StartAgent()
	if len(js) > 0 {
		if m := b.Wait(2*time.Minute, func(m map[string]any) bool {
			return Str(m, "message") == "found a rollout interrupted by a previous agent: reconciling"
		}); m == nil {
			misses = append(misses, "the restarted agent did not reconcile the interrupted rollout")
		}
	}
	return b, misses
}

// killCompose: SIGKILL the agent at one point of a Compose rollout (the
// end of a step, or while the engine downloads the candidate), restart it.
func killCompose() Class {
	return Class{
		Name: "kill-compose", Platforms: []Platform{Compose}, Options: baseOptions,
		Injects: "SIGKILL of the agent after any step of a Compose rollout (load … health gate), while the engine downloads the candidate, or after any step of the restore of a crashing candidate; then a restart",
		Drive: func(e *Env) []string {
			crash := e.Rng.IntN(3) == 0
			var points []string
			if crash {
				for _, s := range composeRestoreSteps {
					if s == "rollback: restore files" && e.Opts.Policy == "digest" {
						continue // a same-tag update rewrites no file
					}
					points = append(points, s)
				}
			} else {
				for _, s := range composeSteps {
					if s == "rewrite files" && e.Opts.Policy == "digest" {
						continue
					}
					points = append(points, s)
				}
				points = append(points, "pull (in flight)")
			}
			point := pick(e.Rng, points...)
			app := e.App("1.1.0")
			if crash {
				app = e.badApp(pick(e.Rng, "crash", "unhealthy"))
			}
			cand := e.PushCandidate(e.Good(app))
			killed := make(chan struct{})
			var a *Agent
			var mu sync.Mutex
			if point == "pull (in flight)" {
				layer, _ := cand.extra.Digest()
				e.Faults.Add(&Rule{Name: "kill during the layer download", Clients: []Client{Engine}, Kinds: []string{"blob"}, PathContains: layer.String(), Times: 1, Before: func() {
					mu.Lock()
					defer mu.Unlock()
					a.Kill()
					close(killed)
				}})
			}
			mu.Lock()
			a = e.StartAgent()
			mu.Unlock()
			if point != "pull (in flight)" {
				// After a health gate that failed, the first "health gate" line is the failure.
				if m, _ := a.WaitFrom(0, settle, StepEnded(e.Target, point)); m == nil {
					return []string{fmt.Sprintf("the agent never ended step %q", point)}
				}
				a.Kill()
			} else {
				select {
				case <-killed:
				case <-time.After(settle):
					return []string{"the engine never downloaded the candidate's layer"}
				}
			}
			b, misses := restartAfterKill(e, "after step "+point)
			if crash {
				return append(misses, expectRolledBack(e, b, cand)...)
			}
			return append(misses, expectUpdated(e, cand)...)
		},
	}
}

// killSwarm: SIGKILL the agent at one point of a Swarm update, restart it.
// The points are seen from outside: the registry pre-flight, the update
// written to the spec, the new task running, the update completed, and
// (crashing candidate) Swarm's rollback started.
func killSwarm() Class {
	return Class{
		Name: "kill-swarm", Platforms: []Platform{Swarm}, Options: baseOptions,
		Injects: "SIGKILL of the agent after the registry pre-flight, right after the service update, while the new task runs, when Swarm reports the update completed, or (crashing candidate) when Swarm starts rolling back; then a restart",
		Drive: func(e *Env) []string {
			crash := e.Rng.IntN(4) == 0
			points := []string{"registry pre-flight", "update written", "new task running", "update completed"}
			if crash {
				points = []string{"registry pre-flight", "update written", "rollback started"}
			}
			point := pick(e.Rng, points...)
			app := e.App("1.1.0")
			if crash {
				app = e.badApp("crash")
			}
			cand := e.PushCandidate(e.Good(app))
			killed := make(chan struct{})
			var a *Agent
			var mu sync.Mutex
			kill := func() {
				mu.Lock()
				defer mu.Unlock()
				a.Kill()
				close(killed)
			}
			if point == "registry pre-flight" {
				e.Faults.Add(&Rule{Name: "kill after the pre-flight", Clients: []Client{Engine}, Kinds: []string{"manifest"}, PathContains: cand.Digest, Times: 1, After: kill})
			}
			mu.Lock()
			a = e.StartAgent()
			mu.Unlock()
			if point != "registry pre-flight" {
				ctx, cancel := context.WithTimeout(context.Background(), settle)
				defer cancel()
				ok := e.Watch(ctx, func(o Observation) bool {
					switch point {
					case "update written":
						return o.SpecDigest == cand.Digest
					case "new task running":
						for _, c := range o.Containers {
							if c.Digest == cand.Digest {
								return true
							}
						}
					case "update completed":
						return o.SpecDigest == cand.Digest && o.UpdateState == "completed"
					case "rollback started":
						return strings.HasPrefix(o.UpdateState, "rollback")
					}
					return false
				})
				if !ok {
					return []string{fmt.Sprintf("the update never reached %q", point)}
				}
				kill()
			}
			select {
			case <-killed:
			case <-time.After(settle):
				return []string{"the pre-flight never happened"}
			}
			b, misses := restartAfterKill(e, point)
			if crash {
				return append(misses, expectRolledBack(e, b, cand)...)
			}
			return append(misses, expectUpdated(e, cand)...)
		},
	}
}

// engineCut: the agent's engine connections are cut (and refused for
// 0–5 s) at one API call of the rollout, as a dockerd restart would cut
// them. See EngineProxy for what this does and does not reproduce.
func engineCut() Class {
	return Class{
		Name: "engine-cut", Platforms: both,
		Options: func(rng *mrand.Rand, p Platform) Options {
			o := baseOptions(rng, p)
			o.EngineProxy = true
			return o
		},
		Injects: "every engine API connection of the agent cut (dockerd restart) at one call of the rollout — pull, tag, container create/start/stop, health inspect, service update, task list, events — before or 50–500 ms after it reaches the engine, and new connections refused for 0–5 s",
		Drive: func(e *Env) []string {
			// armAfter: the Compose step whose end arms the trigger ("" arms
			// it when the rollout starts).
			type trigger struct{ name, method, path, armAfter string }
			triggers := []trigger{
				{"pull", "POST", "/images/create", ""},
				{"tag", "POST", "/tag", ""},
				{"container create", "POST", "/containers/create", ""},
				{"container start", "POST", "/start", ""},
				{"container stop", "POST", "/stop", ""},
				{"health inspect", "GET", "/json", "converge"},
			}
			if e.Platform == Swarm {
				triggers = []trigger{
					{"registry pre-flight", "GET", "/distribution/", ""},
					{"service update", "POST", "/update", ""},
					{"task list while following", "GET", "/tasks", ""},
					{"events while following", "GET", "/events", ""},
				}
			}
			tr := pick(e.Rng, triggers...)
			before := e.Rng.IntN(2) == 0
			delay := time.Duration(50+e.Rng.IntN(450)) * time.Millisecond
			down := time.Duration(e.Rng.IntN(5001)) * time.Millisecond
			cand := e.PushCandidate(e.Good(e.App("1.1.0")))
			cut := make(chan struct{})
			var once sync.Once
			armed := make(chan struct{})
			e.Proxy.OnRequest(func(method, path string) {
				select {
				case <-armed:
				default:
					return
				}
				if method != tr.method || !strings.Contains(path, tr.path) {
					return
				}
				once.Do(func() {
					if before {
						e.Proxy.Cut(down)
						close(cut)
						return
					}
					go func() {
						time.Sleep(delay) // the request reaches the engine first
						e.Proxy.Cut(down)
						close(cut)
					}()
				})
			})
			when := "before"
			if !before {
				when = delay.String() + " after"
			}
			e.Note("engine connections cut %s %s (%s %s), refused for %s", when, tr.name, tr.method, tr.path, down)
			a := e.StartAgent()
			// Arm the trigger once the rollout begins (discovery and the
			// watcher make the same calls otherwise).
			arm := func(m map[string]any) bool {
				return Str(m, "message") == "rollout starting" && Str(m, "target") == e.Target ||
					Str(m, "message") == "compose rollout step" && Str(m, "target") == e.Target
			}
			if tr.armAfter != "" {
				arm = StepEnded(e.Target, tr.armAfter)
			}
			if m, _ := a.WaitFrom(0, settle, arm); m == nil {
				return []string{"the rollout never reached the point that arms the cut"}
			}
			close(armed)
			select {
			case <-cut:
			case <-time.After(settle):
				return []string{fmt.Sprintf("the agent never called %s %s during the rollout", tr.method, tr.path)}
			}
			return expectUpdated(e, cand)
		},
	}
}

// secondAgent: a second agent is started on the same state file, during
// the first one's rollout or right after it. Exactly one must run; the
// other must refuse to start, touching nothing.
func secondAgent() Class {
	return Class{
		Name: "second-agent", Platforms: both, Options: baseOptions,
		Injects: "a second agent on the same configuration and state file, started during the first agent's rollout or 0–300 ms after it",
		Drive: func(e *Env) []string {
			cand := e.PushCandidate(e.Good(e.App("1.1.0")))
			a := e.StartAgent()
			var b *Agent
			if e.Rng.IntN(2) == 0 {
				if m, _ := a.WaitFrom(0, settle, func(m map[string]any) bool {
					return Str(m, "message") == "rollout starting" && Str(m, "target") == e.Target
				}); m == nil {
					return []string{"the first agent never started its rollout"}
				}
				e.Note("second agent started during the rollout")
				b = e.StartAgent()
			} else {
				d := time.Duration(e.Rng.IntN(300)) * time.Millisecond
				time.Sleep(d) // the race itself is the fault
				e.Note("second agent started %s after the first", d)
				b = e.StartAgent()
			}
			var misses []string
			// One of the two must refuse within the state lock's wait.
			deadline := time.Now().Add(30 * time.Second)
			var loser, winner *Agent
			for loser == nil && time.Now().Before(deadline) {
				switch {
				case b.Exited():
					loser, winner = b, a
				case a.Exited():
					loser, winner = a, b
				default:
					time.Sleep(50 * time.Millisecond) // polling two processes with a deadline
				}
			}
			if loser == nil {
				return []string{"two agents run on the same state file"}
			}
			if err, _ := loser.ExitErr(0); err == nil {
				misses = append(misses, "the refused agent exited 0")
			}
			if !strings.Contains(loser.Log(), "in use by another shipwatch agent") {
				misses = append(misses, "the refused agent did not say the state file is in use: "+tail(loser.Log(), 5))
			}
			if winner.Exited() {
				return append(misses, "both agents exited")
			}
			return append(misses, expectUpdated(e, cand)...)
		},
	}
}

// AllClasses is every fault class of the suite.
func AllClasses() []Class {
	var out []Class
	out = append(out, RegistryClasses()...)
	out = append(out, RolloutClasses()...)
	out = append(out, VerifyClasses()...)
	out = append(out, ProcessClasses()...)
	return out
}
