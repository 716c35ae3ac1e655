package faults

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shipwatch/shipwatch/internal/testenv"
)

func get(t *testing.T, url, ua string) (*http.Response, []byte, error) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("User-Agent", ua)
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

func TestClientOf(t *testing.T) {
	for ua, want := range map[string]Client{
		"docker/20.10.24 go/go1.19.8 git-commit/5d6db84 kernel/6.1 os/linux arch/amd64 UpstreamClient(Docker-Client/28.2.2)": Engine,
		"shipwatch":                                   Watcher,
		"go-containerregistry/v0.22.1":                Verifier,
		driverAgent + " go-containerregistry/v0.22.1": Driver,
	} {
		req, _ := http.NewRequest(http.MethodGet, "http://x/v2/", nil)
		req.Header.Set("User-Agent", ua)
		if got := ClientOf(req); got != want {
			t.Errorf("ClientOf(%q) = %s, want %s", ua, got, want)
		}
	}
}

// The injector answers with the configured faults, for the selected
// clients only, Times times after Skip, and spares the suite's own requests.
func TestInjectorFaults(t *testing.T) {
	reg := testenv.NewRegistry(t)
	d := reg.MustPush(t, "demo/app:1.0", testenv.App{Version: "1"}.MustImage(t))
	in := NewInjector()
	in.Attach(reg)
	manifest := reg.URL() + "/v2/demo/app/manifests/" + d

	in.Add(&Rule{Name: "429", Clients: []Client{Watcher}, Kinds: []string{"manifest"}, Skip: 1, Times: 2, Fault: Fault{Status: 429, RetryAfter: "2"}})
	codes := []int{}
	for i := 0; i < 4; i++ {
		resp, _, err := get(t, manifest, "shipwatch")
		if err != nil {
			t.Fatal(err)
		}
		codes = append(codes, resp.StatusCode)
		if resp.StatusCode == 429 && resp.Header.Get("Retry-After") != "2" {
			t.Errorf("Retry-After = %q, want 2", resp.Header.Get("Retry-After"))
		}
	}
	if got := fmt.Sprint(codes); got != "[200 429 429 200]" {
		t.Errorf("watcher answers = %s, want [200 429 429 200] (skip 1, fault 2)", got)
	}
	if resp, _, err := get(t, manifest, "docker/20.10"); err != nil || resp.StatusCode != 200 {
		t.Errorf("engine request faulted by a watcher rule: %v %v", resp, err)
	}
	in.Clear()

	in.Add(&Rule{Name: "reset", Kinds: []string{"manifest"}, Times: 1, Fault: Fault{Reset: true}})
	if _, _, err := get(t, manifest, driverAgent); err != nil {
		t.Errorf("the driver's request was faulted: %v", err)
	}
	if _, _, err := get(t, manifest, "shipwatch"); err == nil {
		t.Errorf("reset: got an answer, want a connection error")
	}
	in.Clear()

	in.Add(&Rule{Name: "cut", Kinds: []string{"blob"}, Times: 1, Fault: Fault{Truncate: true, TruncateAfter: -1}})
	img, _ := testenv.App{Version: "1"}.MustImage(t).Layers()
	ld, _ := img[0].Digest()
	resp, body, err := get(t, reg.URL()+"/v2/demo/app/blobs/"+ld.String(), "docker/20.10")
	if err == nil || !errors.Is(err, io.ErrUnexpectedEOF) && !strings.Contains(err.Error(), "reset") {
		t.Errorf("truncated blob: err = %v, want an unexpected EOF or reset", err)
	}
	if resp != nil && int64(len(body)) >= resp.ContentLength {
		t.Errorf("truncated blob: read %d of %d bytes, want fewer", len(body), resp.ContentLength)
	}
	in.Clear()

	var before, after atomic.Int32
	in.Add(&Rule{Name: "hooks", Clients: []Client{Verifier}, Times: 1, Before: func() { before.Add(1) }},
		&Rule{Name: "after", Clients: []Client{Engine}, Times: 1, After: func() { after.Add(1) }})
	for i := 0; i < 2; i++ {
		if resp, _, err := get(t, manifest, "go-containerregistry"); err != nil || resp.StatusCode != 200 {
			t.Fatalf("hooked request: %v %v", resp, err)
		}
		_, _, _ = get(t, manifest, "docker/20.10")
	}
	if before.Load() != 1 || after.Load() != 1 {
		t.Errorf("hooks ran %d/%d times, want once each", before.Load(), after.Load())
	}
	if n := len(in.Hits()); n != 6 {
		t.Errorf("hits = %d, want 6 (2 × 429, reset, cut, 2 hooks)", n)
	}
}

// A hang holds the request until the client gives up.
func TestInjectorHang(t *testing.T) {
	reg := testenv.NewRegistry(t)
	in := NewInjector()
	in.Attach(reg)
	in.Add(&Rule{Name: "hang", Times: 1, Fault: Fault{Hang: true, HangMax: time.Minute}})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, reg.URL()+"/v2/", nil)
	start := time.Now()
	_, err := http.DefaultClient.Do(req)
	if err == nil || time.Since(start) < 250*time.Millisecond {
		t.Errorf("hang: err %v after %s, want the client's timeout", err, time.Since(start))
	}
}

// The engine proxy forwards requests, reports their request lines, cuts
// live connections and refuses new ones while "down".
func TestEngineProxy(t *testing.T) {
	dir, err := os.MkdirTemp("", "swfp")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	upSock := filepath.Join(dir, "up.sock")
	ln, err := net.Listen("unix", upSock)
	if err != nil {
		t.Fatal(err)
	}
	slow := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/events" {
			w.WriteHeader(200)
			http.NewResponseController(w).Flush()
			<-slow
			return
		}
		io.WriteString(w, "pong")
	})}
	go srv.Serve(ln)
	defer srv.Close()
	defer close(slow)

	p, err := NewEngineProxy(dir, upSock)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var seen atomic.Value
	p.OnRequest(func(method, path string) { seen.Store(method + " " + path) })
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", strings.TrimPrefix(p.Host(), "unix://"))
	}}, Timeout: 5 * time.Second}
	resp, err := c.Get("http://docker/v1.41/_ping")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "pong" || seen.Load() != "GET /v1.41/_ping" {
		t.Errorf("through the proxy: %q, request line %v", b, seen.Load())
	}

	// A stream in flight is cut.
	resp, err = c.Get("http://docker/events")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := io.ReadAll(resp.Body); done <- err }()
	p.Cut(500 * time.Millisecond)
	select {
	case err := <-done:
		if err == nil {
			t.Errorf("events stream ended cleanly, want it cut")
		}
	case <-time.After(3 * time.Second):
		t.Fatal("events stream not cut")
	}
	// While down, new connections are refused; then they work again.
	if _, err := c.Get("http://docker/v1.41/_ping"); err == nil {
		t.Errorf("request while the engine is down: want an error")
	}
	time.Sleep(600 * time.Millisecond) // the down window itself is the fault under test
	if resp, err := c.Get("http://docker/v1.41/_ping"); err != nil {
		t.Errorf("after the down window: %v", err)
	} else {
		resp.Body.Close()
	}
	if _, refused := p.Stats(); refused == 0 {
		t.Errorf("no refused connection counted")
	}
}

func TestLongestOutage(t *testing.T) {
	t0 := time.Unix(0, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	probes := []probe{{at(0), true}, {at(50), false}, {at(100), false}, {at(150), true}, {at(200), false}, {at(250), false}, {at(300), false}, {at(350), false}, {at(400), true}}
	if got := longestOutage(probes); got != 200*time.Millisecond {
		t.Errorf("longest outage = %s, want 200ms", got)
	}
	if got := longestOutage(probes[:3]); got != 50*time.Millisecond {
		t.Errorf("outage still open at the end = %s, want 50ms", got)
	}
	if got := longestOutage([]probe{{at(0), true}, {at(50), true}}); got != 0 {
		t.Errorf("no failure: %s, want 0", got)
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i)*time.Second)
	}
	if p := Percentile(ds, 50); p != 50*time.Second {
		t.Errorf("p50 = %s, want 50s", p)
	}
	if p := Percentile(ds, 99); p != 99*time.Second {
		t.Errorf("p99 = %s, want 99s", p)
	}
	if p := Percentile(ds[:1], 99); p != time.Second {
		t.Errorf("p99 of one = %s, want 1s", p)
	}
}
