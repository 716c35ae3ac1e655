// Command shipwatch watches registries for new image versions, verifies their
// signatures and scans, and rolls them out to Docker Compose and Swarm
// services with a health gate and rollback.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := runApp(ctx, os.Args[1:], &app{stdout: os.Stdout, stderr: os.Stderr, lookup: os.LookupEnv, execAgent: true})
	stop()
	os.Exit(code)
}
