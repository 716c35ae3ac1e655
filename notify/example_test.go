package notify_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/shipwatch/shipwatch/notify"
)

// A generic JSON webhook receiving a rollback; shoutrrr URLs (slack://…,
// smtp://…) go in Options.URLs the same way.
func ExampleNew() {
	got := make(chan map[string]any, 1)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p map[string]any
		_ = json.NewDecoder(r.Body).Decode(&p)
		got <- p
	}))
	defer hook.Close()

	n, err := notify.New(notify.Options{
		Webhooks: []notify.Webhook{{URL: hook.URL, Headers: map[string]string{"Authorization": "Bearer s3cret"}}},
		Events:   []string{notify.KindRolledBack, notify.KindFailed},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	n.Notify(notify.Event{
		Kind: notify.KindRolledBack, Target: "compose:shop/web", Image: "ghcr.io/acme/web:1.5",
		From:   "sha256:1111111111111111111111111111111111111111111111111111111111111111",
		To:     "sha256:2222222222222222222222222222222222222222222222222222222222222222",
		Reason: "health gate: container unhealthy after 60s",
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Close(ctx); err != nil {
		fmt.Println(err)
	}
	p := <-got
	fmt.Println(p["kind"], p["target"])
	fmt.Println(p["message"])
	// Output:
	// rolled-back compose:shop/web
	// shipwatch: compose:shop/web rolled-back (ghcr.io/acme/web:1.5) from 111111111111 to 222222222222: health gate: container unhealthy after 60s
}
