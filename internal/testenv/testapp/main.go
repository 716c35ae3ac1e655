// Command testapp is the tiny workload that shipwatch's tests and the quickstart
// put into images. It is built as a static binary and is the only file in its
// image, so it doubles as its own healthcheck probe ("/app health").
//
// Its behaviour comes from environment variables baked into the image config,
// so every version of a test image is the same binary with a different config
// (and therefore a different digest):
//
//	APP_VERSION     reported on / and in the log
//	APP_MODE        ok | crash | unhealthy | slow
//	APP_CRASH_AFTER how long a "crash" app runs before exiting 1 (default 300ms)
//	APP_SLOW        how long a "slow" app reports unhealthy after start (default 5s)
//	APP_PORT        HTTP port (default 8080)
package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	port := env("APP_PORT", "8080")
	if len(os.Args) > 1 && os.Args[1] == "health" {
		os.Exit(probe(port))
	}
	os.Exit(serve(port))
}

func env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func duration(key string, def time.Duration) time.Duration {
	d, err := time.ParseDuration(os.Getenv(key))
	if err != nil {
		return def
	}
	return d
}

// probe asks the running server for its health and turns the answer into an
// exit code, as a Docker HEALTHCHECK expects.
func probe(port string) int {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://127.0.0.1:" + port + "/healthz")
	if err != nil {
		fmt.Fprintln(os.Stderr, "health:", err)
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(os.Stderr, "health: status", resp.StatusCode)
		return 1
	}
	return 0
}

func serve(port string) int {
	version := env("APP_VERSION", "dev")
	mode := env("APP_MODE", "ok")
	start := time.Now()
	fmt.Printf("testapp %s starting in mode %s on :%s\n", version, mode, port)

	if mode == "crash" {
		time.Sleep(duration("APP_CRASH_AFTER", 300*time.Millisecond))
		fmt.Printf("testapp %s: simulated crash\n", version)
		return 1
	}

	healthy := func() bool {
		switch mode {
		case "unhealthy":
			return false
		case "slow":
			return time.Since(start) >= duration("APP_SLOW", 5*time.Second)
		}
		return true
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "testapp %s\n", version)
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if !healthy() {
			http.Error(w, "not healthy", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	srv := &http.Server{Addr: ":" + port, Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		fmt.Fprintln(os.Stderr, "testapp:", err)
		return 1
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdown)
	fmt.Printf("testapp %s stopped\n", version)
	return 0
}
