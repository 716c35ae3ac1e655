package agent

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shipwatch/shipwatch/internal/testenv"
	"github.com/shipwatch/shipwatch/state"
)

// TestWebhookTriggersVerifiedRollout: with a schedule far away, a registry
// webhook makes the agent check, verify and roll out the new digest of the
// running tag at once; the update is notified.
func TestWebhookTriggersVerifiedRollout(t *testing.T) {
	h := newHarness(t, "@every 1h")
	old := h.push("demo/web:1.4", testenv.App{Version: "1.4-a", Health: testenv.FastHealth}, true)
	h.compose(h.reg.Ref("demo/web:1.4"), "")
	testenv.Eventually(t, 30*time.Second, 100*time.Millisecond, func() (bool, string) {
		st, _ := h.agent.Status()
		return !st.LastPass.IsZero(), "first pass not done"
	})
	next := h.push("demo/web:1.4", testenv.App{Version: "1.4-b", Health: testenv.FastHealth}, true)

	// A hook with a wrong token is rejected and triggers nothing.
	body := map[string]any{"events": []map[string]any{{
		"action":  "push",
		"target":  map[string]any{"repository": "demo/web", "tag": "1.4", "digest": next, "mediaType": "application/vnd.docker.distribution.manifest.v2+json"},
		"request": map[string]any{"host": h.reg.Host},
	}}}
	if code, _ := h.request(http.MethodPost, "/v1/webhooks/distribution?token=wrong-token-0123456789", "", body); code != http.StatusUnauthorized {
		t.Fatalf("webhook with a wrong token: status %d, want 401", code)
	}
	sent := time.Now()
	if code, data := h.request(http.MethodPost, "/v1/webhooks/distribution?token="+webhookSecret, "", body); code != http.StatusAccepted && code != http.StatusOK {
		t.Fatalf("webhook: status %d: %s", code, data)
	}
	e := h.waitHistory("updated", next, 60*time.Second)
	h.mu.Lock()
	latency := h.firstRun.Sub(sent)
	h.mu.Unlock()
	t.Logf("webhook → first rollout step ended: %s (includes one HEAD, verification, load, drift guard)", latency.Round(time.Millisecond))
	if e.From != old {
		t.Errorf("history from = %s, want %s", e.From, old)
	}
	if d, n := h.running(); d != next || n != 1 {
		t.Errorf("runs %s in %d containers, want %s in 1", d, n, next)
	}
	testenv.Eventually(t, 10*time.Second, 100*time.Millisecond, func() (bool, string) {
		k := h.eventKinds()
		return slices.Contains(k, "updated"), fmt.Sprint("notifications: ", k)
	})

	// The API answers with the token only; /metrics shows the update.
	if code, _ := h.request(http.MethodGet, "/v1/targets", "", nil); code != http.StatusUnauthorized {
		t.Errorf("GET /v1/targets without token: %d, want 401", code)
	}
	code, data := h.request(http.MethodGet, "/v1/targets", apiToken, nil)
	if code != http.StatusOK || !strings.Contains(string(data), h.target()) {
		t.Errorf("GET /v1/targets: %d %s", code, data)
	}
	code, data = h.request(http.MethodGet, "/metrics", apiToken, nil)
	if code != http.StatusOK || !strings.Contains(string(data), `shipwatch_updates_total{outcome="updated"`) {
		t.Errorf("GET /metrics: %d, no updated counter in:\n%.2000s", code, data)
	}
}

// TestBadVersionsAreRefusedQuarantinedAndNotifiedOnce: an unsigned digest is
// blocked (and notified once however many passes see it); a signed digest
// that crashes is rolled back, quarantined and not retried.
func TestBadVersionsAreRefusedQuarantinedAndNotifiedOnce(t *testing.T) {
	h := newHarness(t, "@every 1s")
	good := h.push("demo/web:1.0.0", testenv.App{Version: "1.0.0", Health: testenv.FastHealth}, true)
	h.compose(h.reg.Ref("demo/web:1.0.0"), `, shipwatch.semver: "^1"`)

	unsigned := h.push("demo/web:1.1.0", testenv.App{Version: "1.1.0", Health: testenv.FastHealth}, false)
	h.waitHistory("blocked", unsigned, 30*time.Second)
	// Let several more passes see the same blocked digest.
	passes := 0
	last := time.Time{}
	testenv.Eventually(t, 30*time.Second, 200*time.Millisecond, func() (bool, string) {
		st, _ := h.agent.Status()
		if st.LastPass != last {
			last = st.LastPass
			passes++
		}
		return passes >= 4, fmt.Sprintf("%d passes", passes)
	})
	if n := count(h.eventKinds(), "blocked"); n != 1 {
		t.Errorf("blocked notifications = %d, want exactly 1", n)
	}
	hist, _ := h.store.History(h.target(), 0)
	if n := countOutcome(hist, "blocked"); n != 1 {
		t.Errorf("blocked history entries = %d, want 1 (a repeated decision is written once)", n)
	}

	crash := h.push("demo/web:1.2.0", testenv.App{Version: "1.2.0", Mode: "crash", CrashAfter: time.Second, Health: testenv.FastHealth}, true)
	e := h.waitHistory("rolled-back", crash, 90*time.Second)
	if d, n := h.running(); d != good || n != 1 {
		t.Errorf("after the rollback: runs %s in %d containers, want %s in 1", d, n, good)
	}
	if _, ok, _ := h.store.IsQuarantined(h.target(), crash); !ok {
		t.Errorf("the crashing digest is not quarantined (history: %+v)", e)
	}
	testenv.Eventually(t, 30*time.Second, 200*time.Millisecond, func() (bool, string) {
		hist, _ := h.store.History(h.target(), 0)
		for _, x := range hist {
			if x.Outcome == "blocked" && strings.HasSuffix(x.To, crash) && strings.Contains(x.Reason, "quarantined") {
				return true, ""
			}
		}
		return false, "no pass has refused the quarantined digest yet"
	})
	hist, _ = h.store.History(h.target(), 0)
	if n := countOutcome(hist, "rolled-back"); n != 1 {
		t.Errorf("rolled-back entries = %d, want 1: a quarantined digest must not be retried", n)
	}
	testenv.Eventually(t, 10*time.Second, 100*time.Millisecond, func() (bool, string) {
		return slices.Contains(h.eventKinds(), "rolled-back"), fmt.Sprint("notifications: ", h.eventKinds())
	})
}

func count(list []string, s string) int {
	n := 0
	for _, x := range list {
		if x == s {
			n++
		}
	}
	return n
}

func countOutcome(hist []state.Entry, outcome string) int {
	n := 0
	for _, e := range hist {
		if e.Outcome == outcome {
			n++
		}
	}
	return n
}
