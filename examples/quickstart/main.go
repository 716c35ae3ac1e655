// Command quickstart shows shipwatch's whole loop on one machine, offline:
// a loopback registry, a demo app in four versions (signed v1.0.0 and
// v1.1.0, unsigned v1.2.0, signed but crashing v1.3.0, with signed
// vulnerability scans), a Compose project running v1.0.0, and the real
// shipwatch agent rolling it to v1.1.0, refusing v1.2.0 and rolling v1.3.0
// back. It cleans up everything it made.
//
//	go run ./examples/quickstart
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := Run(ctx, Options{Out: os.Stdout})
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}
