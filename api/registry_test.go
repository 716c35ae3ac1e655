package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/shipwatch/shipwatch/imageref"
	"github.com/shipwatch/shipwatch/internal/testenv"
)

// TestDistributionWebhookFromARealPush pushes an image to the in-process
// registry, turns the manifest PUT it receives into the notification a
// distribution registry sends (host, repository, tag, media type and the
// digest of the bytes), posts it to a running API over TCP, and checks that
// the hint names the repository exactly as image references on that
// registry do, with the digest the registry serves for the tag.
func TestDistributionWebhookFromARealPush(t *testing.T) {
	reg := testenv.NewRegistry(t)
	var mu sync.Mutex
	var envelope []byte
	reg.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		repo, ref, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v2/"), "/manifests/")
		if r.Method != http.MethodPut || !ok {
			return false
		}
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		sum := sha256.Sum256(body)
		ev := map[string]any{"events": []any{map[string]any{
			"action": "push",
			"target": map[string]any{"mediaType": r.Header.Get("Content-Type"), "digest": "sha256:" + hex.EncodeToString(sum[:]),
				"repository": repo, "tag": ref, "size": len(body)},
			"request": map[string]any{"host": r.Host, "method": r.Method},
		}}}
		mu.Lock()
		envelope, _ = json.Marshal(ev)
		mu.Unlock()
		return false // let the registry store it
	})
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	pushed := reg.MustPush(t, "demo/app:1.0", img)

	fake := &fakeBackend{trigger: make(chan Hint, 1)}
	s := newTestServer(t, fake, func(o *Options) { o.Listen = "127.0.0.1:0" })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, ln) }()
	defer func() { cancel(); <-served }()

	mu.Lock()
	body := envelope
	mu.Unlock()
	if body == nil {
		t.Fatalf("the registry saw no manifest PUT")
	}
	req, _ := http.NewRequest("POST", "http://"+ln.Addr().String()+"/v1/webhooks/distribution", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testSecret)
	req.Header.Set("Content-Type", "application/vnd.docker.distribution.events.v2+json")
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("POST webhook: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST webhook: got %d, want 202", resp.StatusCode)
	}
	var h Hint
	select {
	case h = <-fake.trigger:
	case <-time.After(5 * time.Second):
		t.Fatalf("Trigger: not called within 5s")
	}
	want := imageref.MustParse(reg.Ref("demo/app:1.0"))
	if h.Repository != want.Repo() || h.Registry != reg.Host || h.Tag != "1.0" {
		t.Errorf("hint: got %+v, want repository %s on %s, tag 1.0", h, want.Repo(), reg.Host)
	}
	if h.Digest != pushed {
		t.Errorf("hint digest: got %s, want the pushed digest %s", h.Digest, pushed)
	}
}
