package watcher

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
)

func TestParseChallenges(t *testing.T) {
	for _, tc := range []struct {
		headers []string
		want    challenge
	}{
		{[]string{`Bearer realm="https://auth.docker.io/token",service="registry.docker.io"`}, challenge{"bearer", "https://auth.docker.io/token", "registry.docker.io"}},
		{[]string{`Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:o/a:pull"`}, challenge{"bearer", "https://ghcr.io/token", "ghcr.io"}},
		{[]string{`Basic realm="Registry Realm"`}, challenge{"basic", "Registry Realm", ""}},
		{[]string{`Basic realm="x", Bearer realm="https://r/t", service="s"`}, challenge{"bearer", "https://r/t", "s"}},
		{[]string{`Basic realm="x"`, `Bearer realm=https://r/t,service=s`}, challenge{"bearer", "https://r/t", "s"}},
		{[]string{`bearer REALM="https://r/t\"q"`}, challenge{"bearer", `https://r/t"q`, ""}},
		{[]string{`Negotiate`}, challenge{}},
		{nil, challenge{}},
	} {
		if got := parseChallenges(tc.headers); got != tc.want {
			t.Errorf("parseChallenges(%q) = %+v, want %+v", tc.headers, got, tc.want)
		}
	}
}

func TestTokenLifetime(t *testing.T) {
	for _, tc := range []struct {
		expiresIn int
		want      time.Duration
	}{
		{0, 54 * time.Second},    // missing: 60 s by the token spec, renewed 6 s early
		{300, 270 * time.Second}, // testenv's 5 minutes
		{3600, 3570 * time.Second},
		{2, 1800 * time.Millisecond},
	} {
		if got := tokenLifetime(tc.expiresIn); got != tc.want {
			t.Errorf("tokenLifetime(%d) = %s, want %s", tc.expiresIn, got, tc.want)
		}
	}
}

func TestTokenRequest(t *testing.T) {
	ctx := context.Background()
	ch := challenge{scheme: "bearer", realm: "https://auth.example/token?x=1", service: "reg"}
	req, err := tokenRequest(ctx, ch, []string{"repository:o/a:pull"}, credentials{username: "u", password: "p"})
	if err != nil {
		t.Fatal(err)
	}
	if req.Method != http.MethodGet || req.URL.Query().Get("scope") != "repository:o/a:pull" || req.URL.Query().Get("service") != "reg" || req.URL.Query().Get("x") != "1" {
		t.Errorf("basic token request = %s %s, want GET with scope, service and the realm's query", req.Method, req.URL)
	}
	if u, p, ok := req.BasicAuth(); !ok || u != "u" || p != "p" {
		t.Errorf("basic token request auth = %q %q %v, want u p true", u, p, ok)
	}
	req, err = tokenRequest(ctx, ch, []string{"repository:o/a:pull"}, credentials{identityToken: "refresh"})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(req.Body)
	form, _ := url.ParseQuery(string(body))
	if req.Method != http.MethodPost || form.Get("grant_type") != "refresh_token" || form.Get("refresh_token") != "refresh" || form.Get("scope") != "repository:o/a:pull" {
		t.Errorf("identity token request = %s %s, want POST with the refresh-token grant", req.Method, body)
	}
	req, _ = tokenRequest(ctx, ch, []string{"repository:o/a:pull"}, credentials{})
	if req.Header.Get("Authorization") != "" {
		t.Errorf("anonymous token request sends Authorization")
	}
	req, _ = tokenRequest(ctx, ch, []string{"repository:o/a:pull", "repository:o/b:pull"}, credentials{})
	if got := req.URL.Query()["scope"]; len(got) != 2 || got[0] != "repository:o/a:pull" || got[1] != "repository:o/b:pull" {
		t.Errorf("batch token request scopes = %q, want the scope parameter once per scope, in order", got)
	}
	if _, err := tokenRequest(ctx, challenge{scheme: "bearer", realm: "file:///etc/passwd"}, []string{"s"}, credentials{}); err == nil {
		t.Errorf("tokenRequest accepted a file: realm")
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		v    string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"7", 7 * time.Second, true},
		{"0", 0, true},
		{"-3", 0, false},
		{"soon", 0, false},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0, true},
		{"999999999999", 24 * time.Hour, true},
	} {
		h := http.Header{}
		if tc.v != "" {
			h.Set("Retry-After", tc.v)
		}
		got, ok := retryAfter(h, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("retryAfter(%q) = %s %v, want %s %v", tc.v, got, ok, tc.want, tc.ok)
		}
	}
}

func TestBackoffIsCappedWithJitter(t *testing.T) {
	p := retryPolicy{base: 100 * time.Millisecond, max: time.Second}
	for n, hi := range []time.Duration{100, 200, 400, 800, 1000, 1000, 1000} {
		hi *= time.Millisecond
		for range 50 {
			if d := p.backoff(n + 1); d < hi/2 || d > hi {
				t.Fatalf("backoff(%d) = %s, want %s..%s", n+1, d, hi/2, hi)
			}
		}
	}
}

func TestNextLink(t *testing.T) {
	base, _ := url.Parse("https://reg.example/v2/o/a/tags/list?n=1000")
	for _, tc := range []struct {
		links []string
		want  string
		err   bool
	}{
		{nil, "", false},
		{[]string{`</v2/o/a/tags/list?last=b&n=100>; rel="next"`}, "https://reg.example/v2/o/a/tags/list?last=b&n=100", false},
		{[]string{`<https://reg.example/v2/o/a/tags/list?last=c>; rel=next`}, "https://reg.example/v2/o/a/tags/list?last=c", false},
		{[]string{`</prev>; rel="prev", </next>; rel="next"`}, "https://reg.example/next", false},
		{[]string{`</doc>; rel="help"`}, "", false},
		{[]string{`<https://other.example/v2/o/a/tags/list>; rel="next"`}, "", true},
		{[]string{`<http://reg.example/v2/o/a/tags/list>; rel="next"`}, "", true},
		{[]string{`</v2/x; rel="next"`}, "", true},
	} {
		got, err := nextLink(tc.links, base)
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("nextLink(%q) = %q, %v; want %q, error %v", tc.links, got, err, tc.want, tc.err)
		}
	}
}

func TestNewValidatesOptions(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.txt")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"scheme in host", Options{Registries: []Registry{{Host: "https://ghcr.io"}}}, `registries[0].host: "https://ghcr.io" is not a registry host`},
		{"empty host", Options{Registries: []Registry{{}}}, "registries[0].host: empty"},
		{"duplicate", Options{Registries: []Registry{{Host: "docker.io"}, {Host: "index.docker.io"}}}, `registries[1].host: "index.docker.io" is configured twice`},
		{"token and password", Options{Registries: []Registry{{Host: "ghcr.io", Username: "u", Password: "p", Token: "t"}}}, "either token or username/password"},
		{"password without user", Options{Registries: []Registry{{Host: "ghcr.io", Password: "p"}}}, "registries[0].username: missing"},
		{"negative concurrency", Options{Registries: []Registry{{Host: "ghcr.io", Concurrency: -1}}}, "registries[0].concurrency: -1 is negative"},
		{"negative rate", Options{Registries: []Registry{{Host: "ghcr.io", RateLimit: -2}}}, "registries[0].rateLimit: -2"},
		{"bad mirror", Options{Registries: []Registry{{Host: "docker.io", Mirrors: []string{"ftp://m"}}}}, "registries[0].mirrors[0]: \"ftp://m\": scheme must be https or http"},
		{"mirror with user", Options{Registries: []Registry{{Host: "docker.io", Mirrors: []string{"https://u:p@m"}}}}, "registries[0].mirrors[0]: mirror"},
		{"missing CA", Options{Registries: []Registry{{Host: "r.example", CAFile: filepath.Join(dir, "none.pem")}}}, "registries[0].caFile: read CA file"},
		{"CA not PEM", Options{Registries: []Registry{{Host: "r.example", CAFile: notPEM}}}, "holds no PEM certificate"},
		{"platform", Options{Platform: "amd64"}, `platform "amd64": use os/arch`},
		{"global concurrency", Options{Concurrency: -3}, "concurrency: -3 is negative"},
		{"timeout", Options{Timeout: -time.Second}, "timeout: -1s is negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, err := New(tc.opts)
			if err == nil {
				t.Fatalf("New = %v, nil; want an error containing %q", w, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "u:p@") {
				t.Errorf("error %q repeats credentials", err)
			}
		})
	}
}

// fakeHelper is a credential helper for one registry that counts its runs.
type fakeHelper struct {
	host, user, secret string
	calls              *atomic.Int32
}

func (h fakeHelper) Get(server string) (string, string, error) {
	h.calls.Add(1)
	if server != h.host {
		return "", "", fmt.Errorf("credentials not found in native keychain")
	}
	return h.user, h.secret, nil
}

func TestCredentialsFromKeychain(t *testing.T) {
	reg := tokenRegistry(t)
	d := reg.MustPush(t, "demo/app:1", testImage(t, "x"))
	var reqs []Request
	for i := range 20 {
		name := fmt.Sprintf("demo/app%02d:1", i)
		reg.MustPush(t, name, testImage(t, "x"))
		reqs = append(reqs, Request{Key: name, Image: ref(t, reg.Ref(name)), Running: d, Policy: digestPolicy})
	}
	var calls atomic.Int32
	w := newWatcher(t, reg, func(o *Options) {
		o.Registries = nil
		o.Keychain = authn.NewKeychainFromHelper(fakeHelper{host: reg.Host, user: testUser, secret: testPass, calls: &calls})
	})
	for _, r := range w.Check(ctxT(t), reqs) {
		if r.Err != nil || r.Change != ChangeNone {
			t.Fatalf("credential helper: %s: change %s, err %v; want none, nil", r.Key, r.Change, r.Err)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("credential helper ran %d times for 20 repositories, want 1", n)
	}
}

func TestCredentialsFromDockerConfig(t *testing.T) {
	reg := tokenRegistry(t)
	d := reg.MustPush(t, "demo/app:1", testImage(t, "x"))
	home, cfgDir := t.TempDir(), t.TempDir()
	cfg, _ := json.Marshal(map[string]any{"auths": map[string]any{reg.Host: map[string]string{
		"auth": base64.StdEncoding.EncodeToString([]byte(testUser + ":" + testPass))}}})
	if err := os.WriteFile(filepath.Join(cfgDir, "config.json"), cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HOME", home)
	t.Setenv("DOCKER_CONFIG", cfgDir)
	w := newWatcher(t, reg, func(o *Options) { o.Registries, o.Keychain = nil, nil }) // nil: authn.DefaultKeychain
	if r := checkOne(t, w, reg.Ref("demo/app:1"), d, digestPolicy); r.Err != nil || r.Change != ChangeNone {
		t.Fatalf("Docker config.json: change %s, err %v; want none, nil", r.Change, r.Err)
	}
	// Without credentials the same registry refuses.
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	anon := newWatcher(t, reg, func(o *Options) { o.Registries, o.Keychain = nil, nil })
	wantFailed(t, checkOne(t, anon, reg.Ref("demo/app:1"), d, digestPolicy), ErrUnauthorized)
}

func TestStaticRegistryToken(t *testing.T) {
	reg := tokenRegistry(t)
	d := reg.MustPush(t, "demo/app:1", testImage(t, "x"))
	// Get a token the way a CI system would hand one out.
	req, _ := http.NewRequest(http.MethodGet, reg.URL()+"/token?scope=repository:demo/app:pull", nil)
	req.SetBasicAuth(testUser, testPass)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var tr tokenResponse
	_ = json.NewDecoder(resp.Body).Decode(&tr)
	resp.Body.Close()
	w := newWatcher(t, reg, func(o *Options) { o.Registries = []Registry{{Host: reg.Host, Token: tr.Token}} })
	reg.Reset()
	if r := checkOne(t, w, reg.Ref("demo/app:1"), d, digestPolicy); r.Err != nil || r.Change != ChangeNone {
		t.Fatalf("static token: change %s, err %v; want none, nil", r.Change, r.Err)
	}
	if n := reg.Count("", "token"); n != 0 {
		t.Errorf("token requests = %d, want 0 with a static token", n)
	}
}
