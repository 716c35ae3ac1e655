// Command registry serves the images of the Compose example on a loopback
// address, so that `shipwatch rollout` can be tried by hand without
// internet access or `docker build`:
//
//	example/web:1.0.0  healthy
//	example/web:1.1.0  healthy (the update shipwatch proposes)
//	example/web:1.2.0  crashes 2s after start (rolled back by the health gate)
//	example/web:1.3.0  never passes its healthcheck (rolled back too)
//
// All images carry a healthcheck. The registry keeps everything in memory
// and stops on Ctrl-C.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/shipwatch/shipwatch/internal/testenv"
)

// versions are the example's images, in push order.
var versions = []struct {
	tag string
	app testenv.App
}{
	{"1.0.0", testenv.App{Version: "1.0.0", Health: health}},
	{"1.1.0", testenv.App{Version: "1.1.0", Health: health}},
	{"1.2.0", testenv.App{Version: "1.2.0", Health: health, Mode: "crash", CrashAfter: 2 * time.Second}},
	{"1.3.0", testenv.App{Version: "1.3.0", Health: health, Mode: "unhealthy"}},
}

var health = &testenv.Health{Interval: time.Second, Timeout: 2 * time.Second, StartPeriod: 5 * time.Second, Retries: 3}

func main() {
	addr := flag.String("addr", "127.0.0.1:5000", "loopback address to listen on (the engine pulls from loopback registries over plain HTTP)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *addr, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "registry:", err)
		os.Exit(1)
	}
}

// run serves the registry on addr until ctx ends.
func run(ctx context.Context, addr string, out io.Writer) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s (is another registry running there? pick another -addr and set REGISTRY in .env): %w", addr, err)
	}
	return serve(ctx, l, out)
}

// serve pushes the example's images and serves them on l until ctx ends.
func serve(ctx context.Context, l net.Listener, out io.Writer) error {
	srv := &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0))), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	host := l.Addr().String()
	if err := push(host, out); err != nil {
		_ = srv.Close()
		return err
	}
	fmt.Fprintf(out, "serving %s/example/web; Ctrl-C to stop\n", host)
	select {
	case <-ctx.Done():
	case err := <-errc:
		return err
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(shutdown)
}

// push builds the example's images and pushes them to the registry at host.
func push(host string, out io.Writer) error {
	for _, v := range versions {
		img, err := v.app.Image()
		if err != nil {
			return fmt.Errorf("build image %s: %w", v.tag, err)
		}
		ref, err := name.ParseReference(host+"/example/web:"+v.tag, name.Insecure)
		if err != nil {
			return err
		}
		if err := remote.Write(ref, img); err != nil {
			return fmt.Errorf("push %s: %w", ref, err)
		}
		d, _ := img.Digest()
		fmt.Fprintf(out, "pushed %s@%s (%s)\n", ref, d, describe(v.app))
	}
	return nil
}

func describe(app testenv.App) string {
	switch app.Mode {
	case "crash":
		return "crashes after start"
	case "unhealthy":
		return "never healthy"
	}
	return "healthy"
}
