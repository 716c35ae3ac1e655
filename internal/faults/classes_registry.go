package faults

import (
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moby/moby/api/types/swarm"
)

func pick[T any](rng *mrand.Rand, xs ...T) T { return xs[rng.IntN(len(xs))] }

// baseOptions draws what every class varies: the update policy, the
// referrers API, the Compose restart policy, and (Swarm) whether the
// service brings its own update settings or gets shipwatch's defaults.
func baseOptions(rng *mrand.Rand, p Platform) Options {
	o := Options{
		Policy:    pick(rng, "semver", "digest"),
		Referrers: rng.IntN(2) == 0,
		Restart:   pick(rng, "no", "unless-stopped"),
	}
	if p == Swarm && rng.IntN(2) == 0 {
		// Stop-first: the single replica publishes a host-mode port, which a
		// second task could not bind.
		o.SwarmUpdate = &swarm.UpdateConfig{Parallelism: 1, Monitor: 2 * time.Second, FailureAction: swarm.UpdateFailureActionRollback, Order: swarm.UpdateOrderStopFirst}
		o.SwarmRollback = &swarm.UpdateConfig{Parallelism: 1, Monitor: time.Second, FailureAction: swarm.UpdateFailureActionPause, Order: swarm.UpdateOrderStopFirst}
	}
	return o
}

var both = []Platform{Compose, Swarm}

// settle is the recovery window: how long a run waits for the agent to
// reach the outcome the class expects once the fault has been injected.
const settle = 4 * time.Minute

// expectUpdated waits for the agent to record the update to v.
func expectUpdated(e *Env, v Version) []string {
	if _, ok := e.WaitHistory(settle, Outcome("updated", v.Digest)); !ok {
		return []string{fmt.Sprintf("not updated to the good candidate %s within %s", short(v.Digest), settle)}
	}
	return nil
}

// fired says whether the fault was injected at all: a run whose fault never
// fired proves nothing and counts as a miss.
func fired(e *Env) []string {
	if len(e.Faults.Hits()) == 0 {
		return []string{"the registry fault never fired"}
	}
	return nil
}

// metadataRule is a rule on one kind of shipwatch's own registry traffic
// (or the engine's pull), chosen by the seed.
func metadataRule(e *Env, rng *mrand.Rand, engineToo bool) *Rule {
	type target struct {
		name    string
		clients []Client
		kinds   []string
		methods []string
	}
	targets := []target{
		{"watcher tag HEAD", []Client{Watcher}, []string{"manifest"}, []string{http.MethodHead}},
		{"token endpoint", nil, []string{"token"}, nil},
		{"verifier manifests", []Client{Verifier}, []string{"manifest"}, nil},
		{"verifier blobs", []Client{Verifier}, []string{"blob"}, nil},
		{"verifier referrers", []Client{Verifier}, []string{"referrers", "manifest"}, nil},
	}
	if e.Opts.Policy == "semver" {
		targets = append(targets, target{"watcher tag list", []Client{Watcher}, []string{"tags"}, nil})
	}
	if engineToo {
		targets = append(targets, target{"engine pull", []Client{Engine}, []string{"manifest", "blob"}, nil})
	}
	t := pick(rng, targets...)
	e.Note("faulted: %s", t.name)
	return &Rule{Name: t.name, Clients: t.clients, Kinds: t.kinds, Methods: t.methods}
}

// registryClass is a class that faults some registry requests for a while
// and expects the agent to ride it out: the good candidate is deployed once
// the registry answers again, and nothing else in between.
func registryClass(name, injects string, fault func(e *Env, rng *mrand.Rand) []*Rule, extra func(e *Env) []string) Class {
	return Class{
		Name: name, Injects: injects, Platforms: both,
		Options: baseOptions,
		Drive: func(e *Env) []string {
			cand := e.PushCandidate(e.Good(e.App("1.1.0")))
			e.Faults.Add(fault(e, e.Rng)...)
			e.StartAgent()
			misses := expectUpdated(e, cand)
			misses = append(misses, fired(e)...)
			if extra != nil {
				misses = append(misses, extra(e)...)
			}
			return misses
		},
	}
}

// RegistryClasses are the classes of registry faults.
func RegistryClasses() []Class {
	return []Class{
		registryClass("registry-5xx", "HTTP 500/502/503 on 1–6 requests of one kind (tag HEAD, tag list, token, verifier manifests/blobs/referrers, engine pull)",
			func(e *Env, rng *mrand.Rand) []*Rule {
				r := metadataRule(e, rng, true)
				r.Times = 1 + rng.IntN(6)
				r.Fault = Fault{Status: pick(rng, 500, 502, 503)}
				return []*Rule{r}
			}, nil),
		registryClass("registry-4xx", "a spurious HTTP 401 or 404 on 1–3 requests of one kind (a flaky auth proxy, a replica lagging behind)",
			func(e *Env, rng *mrand.Rand) []*Rule {
				r := metadataRule(e, rng, true)
				r.Times = 1 + rng.IntN(3)
				r.Fault = Fault{Status: pick(rng, 401, 404)}
				return []*Rule{r}
			}, nil),
		registryClass("registry-timeout", "1–2 requests of one kind held without an answer for 3–35 s, then the connection reset (the client's own timeout may come first); or a slow registry: 3–10 requests of one kind answered after 1–5 s",
			func(e *Env, rng *mrand.Rand) []*Rule {
				r := metadataRule(e, rng, true)
				if rng.IntN(3) == 0 {
					r.Times = 3 + rng.IntN(8)
					r.Fault = Fault{Latency: time.Duration(1000+rng.IntN(4000)) * time.Millisecond}
					return []*Rule{r}
				}
				r.Times = 1 + rng.IntN(2)
				r.Fault = Fault{Hang: true, HangMax: time.Duration(3+rng.IntN(33)) * time.Second}
				return []*Rule{r}
			}, nil),
		registryClass("registry-429", "HTTP 429 with Retry-After (1–3 s, as seconds or an HTTP date) on 1–5 requests of one kind; the watcher must wait as told",
			func(e *Env, rng *mrand.Rand) []*Rule {
				r := metadataRule(e, rng, false)
				r.Times = 1 + rng.IntN(5)
				secs := 1 + rng.IntN(3)
				ra := strconv.Itoa(secs)
				if rng.IntN(3) == 0 {
					ra = time.Now().Add(time.Duration(secs+1) * time.Second).UTC().Format(http.TimeFormat)
				}
				r.Fault = Fault{Status: http.StatusTooManyRequests, RetryAfter: ra}
				return []*Rule{r}
			}, checkRetryAfter),
		registryClass("registry-reset", "connections reset before the answer, or answers cut half-way through the body, on 1–4 requests of one kind",
			func(e *Env, rng *mrand.Rand) []*Rule {
				r := metadataRule(e, rng, false)
				r.Times = 1 + rng.IntN(4)
				if rng.IntN(2) == 0 {
					r.Fault = Fault{Reset: true}
				} else {
					r.Fault = Fault{Truncate: true, TruncateAfter: -1}
				}
				return []*Rule{r}
			}, nil),
		{
			Name: "pull-reset", Platforms: both, Options: baseOptions,
			Injects: "the engine's download of the candidate's own layer cut half-way (or reset) 1–8 times: Docker retries, and past its retries the pull fails",
			Drive: func(e *Env) []string {
				cand := e.PushCandidate(e.Good(e.App("1.1.0")))
				layer, _ := cand.extra.Digest()
				r := &Rule{Name: "engine layer download", Clients: []Client{Engine}, Kinds: []string{"blob"}, PathContains: layer.String(), Times: 1 + e.Rng.IntN(8)}
				if e.Rng.IntN(3) == 0 {
					r.Fault = Fault{Reset: true}
				} else {
					r.Fault = Fault{Truncate: true, TruncateAfter: -1}
				}
				e.Faults.Add(r)
				e.StartAgent()
				return append(expectUpdated(e, cand), fired(e)...)
			},
		},
		verifyUnreachable(),
		tagMissing(),
	}
}

// checkRetryAfter: after a 429 to the watcher, its next request for the
// same path came no earlier than Retry-After said.
func checkRetryAfter(e *Env) []string {
	var misses []string
	for _, hit := range e.Faults.Hits() {
		if hit.Client != Watcher {
			continue
		}
		after := e.Faults.Requests(Watcher, hit.Path)
		var next *Hit
		for i := range after {
			if after[i].Path == hit.Path && after[i].Time.After(hit.Time) {
				next = &after[i]
				break
			}
		}
		if next == nil {
			continue
		}
		wait := retryAfterOf(hit.Fault, hit.Time)
		if gap := next.Time.Sub(hit.Time); gap < wait-100*time.Millisecond {
			misses = append(misses, fmt.Sprintf("watcher asked %s again %s after a 429 with Retry-After %s", hit.Path, gap.Round(time.Millisecond), wait))
		}
	}
	return misses
}

// retryAfterOf reads the Retry-After back from the fault's description.
func retryAfterOf(desc string, at time.Time) time.Duration {
	_, v, ok := strings.Cut(desc, "Retry-After ")
	if !ok {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return t.Sub(at).Truncate(time.Second)
	}
	return 0
}

// verifyUnreachable: the verification infrastructure fails while the
// candidate is verified. The verdict must be "could not decide" (retried),
// never "blocked", and nothing is deployed until it can decide.
func verifyUnreachable() Class {
	return Class{
		Name: "verify-unreachable", Platforms: both, Options: baseOptions,
		Injects: "verification infrastructure unreachable: every verifier request answered 503 or reset for 5–20 s from its first request (registry gone during verification), or the referrers API / signature tag answering 5xx 3–12 times",
		Drive: func(e *Env) []string {
			cand := e.PushCandidate(e.Good(e.App("1.1.0")))
			switch e.Rng.IntN(2) {
			case 0:
				down := time.Duration(5+e.Rng.IntN(16)) * time.Second
				fault := pick(e.Rng, Fault{Status: 503}, Fault{Reset: true})
				var once sync.Once
				e.Faults.Add(&Rule{Name: "verifier's first request", Clients: []Client{Verifier}, Times: 1, Before: func() {
					once.Do(func() {
						outage := &Rule{Name: "registry gone during verification", Clients: []Client{Verifier, Watcher, Engine}, Fault: fault}
						e.Faults.Add(outage)
						time.AfterFunc(down, func() { e.Faults.Remove(outage) })
					})
				}})
				e.Note("registry gone for %s from the verifier's first request (%s)", down, fault)
			default:
				hex := strings.TrimPrefix(cand.Digest, "sha256:")
				kinds := []string{"referrers"}
				if !e.Opts.Referrers {
					kinds = []string{"manifest"} // the fallback tag sha256-<hex>
				}
				e.Faults.Add(&Rule{Name: "signature lookup", Clients: []Client{Verifier}, Kinds: kinds, PathContains: hex, Times: 3 + e.Rng.IntN(10), Fault: Fault{Status: pick(e.Rng, 500, 503)}})
			}
			e.StartAgent()
			misses := expectUpdated(e, cand)
			for _, h := range e.History() {
				if h.Outcome == "blocked" && digestOf(h.To) == cand.Digest {
					misses = append(misses, "an unreachable verification was taken as a no (blocked): "+h.Reason)
				}
			}
			return append(misses, fired(e)...)
		},
	}
}

// tagMissing: the candidate's tag (or its manifest) disappears after the
// watcher found it. What runs must stay a verified digest, and a digest
// that is gone must not be deployed.
func tagMissing() Class {
	return Class{
		Name: "tag-missing", Platforms: both, Options: baseOptions,
		Injects: "the candidate's tag deleted right after the watcher resolved it, or its manifest deleted after the tag HEAD or just before the engine pulls it",
		Drive: func(e *Env) []string {
			cand := e.PushCandidate(e.Good(e.App("1.1.0")))
			tag := e.CandidateTag()
			var hookErr error
			done := make(chan struct{})
			var once sync.Once
			do := func(ref string) func() {
				return func() {
					once.Do(func() {
						hookErr = e.DeleteRef(ref)
						close(done)
					})
				}
			}
			variant := e.Rng.IntN(3)
			switch variant {
			case 0:
				e.Faults.Add(&Rule{Name: "tag HEAD", Clients: []Client{Watcher}, Kinds: []string{"manifest"}, Methods: []string{http.MethodHead}, PathContains: "/manifests/" + tag, Times: 1, After: do(":" + tag)})
				e.Note("tag %s deleted after the watcher's HEAD", tag)
			case 1:
				e.Faults.Add(&Rule{Name: "tag HEAD", Clients: []Client{Watcher}, Kinds: []string{"manifest"}, Methods: []string{http.MethodHead}, PathContains: "/manifests/" + tag, Times: 1, After: do("@" + cand.Digest)})
				e.Note("manifest %s deleted after the watcher's HEAD", short(cand.Digest))
			default:
				e.Faults.Add(&Rule{Name: "engine fetch", Clients: []Client{Engine}, Kinds: []string{"manifest"}, PathContains: cand.Digest, Times: 1, Before: do("@" + cand.Digest)})
				e.Note("manifest %s deleted before the engine fetched it", short(cand.Digest))
			}
			a := e.StartAgent()
			select {
			case <-done:
			case <-time.After(settle):
				return []string{"the deletion hook never fired"}
			}
			if hookErr != nil {
				return []string{"delete: " + hookErr.Error()}
			}
			// Let the agent run into the missing tag or manifest on a few passes.
			if !WaitPasses(a, a.Mark(), 3, settle) {
				return []string{"the agent did not finish 3 passes after the deletion"}
			}
			var misses []string
			if variant > 0 {
				for _, h := range e.History() {
					if h.Outcome == "updated" && digestOf(h.To) == cand.Digest {
						misses = append(misses, "deployed a digest the registry no longer has")
					}
				}
			}
			return misses
		},
	}
}
