package faults

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// writeConfig writes the agent's configuration: the run's registry with its
// credentials, the API and the notification webhook with their planted
// canaries, and a verification policy for the run's registry.
func (e *Env) writeConfig() {
	t := e.T
	write := func(name, content string) string {
		p := filepath.Join(e.Dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keyPath, err := e.Trusted.WritePublicKey(e.Dir, "release.pub")
	if err != nil {
		t.Fatal(err)
	}
	scanKey, err := e.Scanner.WritePublicKey(e.Dir, "scanner.pub")
	if err != nil {
		t.Fatal(err)
	}
	passFile := write("registry-password", e.Canaries[CanaryRegistry]+"\n")
	tokenFile := write("api-token", e.Canaries[CanaryAPIToken]+"\n")
	apiPort := freePort(t)
	e.APIURL = fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	e.State = filepath.Join(e.Dir, "state.db")
	scan := ""
	if e.Opts.Scan {
		scan = "\n      scan: {signed_by: [scanner], max_severity: high, max_age: 7d, missing: block}"
	}
	// Only this run's target is enabled: the engine is shared with other
	// tests whose workloads carry shipwatch labels too.
	sel := "compose: " + strings.TrimPrefix(e.Target, "compose/")
	if e.Platform == Swarm {
		sel = "swarm: " + strings.TrimPrefix(e.Target, "swarm/")
	}
	swarmDeadline := ""
	if e.Opts.SwarmDeadline > 0 {
		swarmDeadline = ", swarm_deadline: " + e.Opts.SwarmDeadline.String()
	}
	cfg := fmt.Sprintf(`# fault suite agent (run %s)
schedule: "@every 3s"
state: {path: %s}
api: {listen: "127.0.0.1:%d", token_file: %s}
registries:
  - host: %q
    username: %s
    password_file: %s
notify:
  webhooks: [{url: %q}]
rollout: {health_timeout: %s, shutdown_grace: 2m, retry_backoff: 3s, retry_backoff_max: 20s%s}
targets:
  - %s
  - {compose: "*/*", enable: false}
  - {swarm: "*", enable: false}
verify:
  authorities:
    release: {key_file: %s}
    scanner: {key_file: %s}
  policies:
    - name: faults
      images: ["%s/**"]
      signed_by: [release]%s
`, e.ID, e.State, apiPort, tokenFile, e.Reg.Host, e.user, passFile, e.hookURL,
		e.Opts.HealthTimeout, swarmDeadline, sel, keyPath, scanKey, e.Reg.Host, scan)
	e.CfgPath = write("shipwatch.yaml", cfg)
}

// StartAgent starts an agent process on the run's configuration (through
// the engine proxy when the run has one).
func (e *Env) StartAgent() *Agent {
	e.T.Helper()
	var env []string
	if e.Proxy != nil {
		env = append(env, "DOCKER_HOST="+e.Proxy.Host())
	}
	a, err := StartAgent(e.Bin, e.CfgPath, env...)
	if err != nil {
		e.T.Fatal(err)
	}
	e.mu.Lock()
	e.agents = append(e.agents, a)
	e.mu.Unlock()
	e.T.Cleanup(func() {
		if !a.Exited() {
			a.Kill()
		}
	})
	return a
}

// Agents returns every agent process the run started.
func (e *Env) Agents() []*Agent {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]*Agent(nil), e.agents...)
}

func (e *Env) agentAlive() bool {
	for _, a := range e.Agents() {
		if !a.Exited() {
			return true
		}
	}
	return false
}

// API calls the agent's API with token ("" for none) and returns the
// status and body; the body is kept for the secret sweep.
func (e *Env) API(method, path, token, body string) (int, []byte, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.APIURL+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := &http.Client{Timeout: 2 * time.Minute}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	e.mu.Lock()
	key := fmt.Sprintf("api %s %s (%d)", method, path, resp.StatusCode)
	e.texts[key] = append(e.texts[key], data...)
	e.mu.Unlock()
	return resp.StatusCode, data, err
}

// HistoryEntry is a history entry as the API returns it.
type HistoryEntry struct {
	ID       uint64 `json:"id"`
	Mode     string `json:"mode"`
	From     string `json:"from"`
	To       string `json:"to"`
	Decision string `json:"decision"`
	Outcome  string `json:"outcome"`
	Reason   string `json:"reason"`
	Running  string `json:"running"`
	Duration int64  `json:"duration_ms"`
}

// History asks the running agent for the target's history (newest first);
// nil when the agent cannot answer.
func (e *Env) History() []HistoryEntry {
	c := &http.Client{Timeout: 5 * time.Second}
	req, _ := http.NewRequest(http.MethodGet, e.APIURL+"/v1/history?limit=0&target="+e.Target, nil)
	req.Header.Set("Authorization", "Bearer "+e.Canaries[CanaryAPIToken])
	resp, err := c.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var out []HistoryEntry
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&out) != nil {
		return nil
	}
	return out
}

// WaitHistory polls the agent's history until match accepts an entry and
// returns it; ok is false after timeout.
func (e *Env) WaitHistory(timeout time.Duration, match func(HistoryEntry) bool) (HistoryEntry, bool) {
	deadline := time.Now().Add(timeout)
	for {
		for _, h := range e.History() {
			if match(h) {
				return h, true
			}
		}
		if time.Now().After(deadline) || !e.agentAlive() {
			return HistoryEntry{}, false
		}
		time.Sleep(300 * time.Millisecond) // polling interval of a condition with a deadline
	}
}

// Outcome matches entries with outcome for digest ("" any digest).
func Outcome(outcome, digest string) func(HistoryEntry) bool {
	return func(h HistoryEntry) bool {
		return h.Outcome == outcome && (digest == "" || digestOf(h.To) == digest)
	}
}
