package swarm_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/rs/zerolog"

	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/deployer/swarm"
	"github.com/shipwatch/shipwatch/imageref"
)

// Roll a verified digest into a service found by discovery, and say what
// happened. (Needs a swarm manager: not run as a test.)
func ExampleDeployer_Deploy() {
	ctx := context.Background()
	d, err := swarm.New(ctx, swarm.Options{Keychain: authn.DefaultKeychain, Logger: zerolog.Nop()})
	if err != nil {
		fmt.Println(err) // not a manager, not a swarm: what to do is in the error
		return
	}
	defer d.Close()

	var target deployer.Target // from discovery.Discover
	to := imageref.MustParse("ghcr.io/acme/web:1.4.2@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
	res := d.Deploy(ctx, deployer.Plan{Target: target, To: to}, func(s deployer.Step) {
		fmt.Printf("%-16s %6s %s\n", s.Name, s.Took, s.Detail)
	})
	switch res.Outcome {
	case deployer.Updated:
		fmt.Println("now runs", res.Running)
	case deployer.RolledBack:
		fmt.Println("rolled back, still runs", res.Running, "because", res.Cause, "; quarantine", res.FailedDigest)
	default:
		fmt.Println("failed:", res.Cause, "manual action needed:", res.ManualAction)
	}
	if errors.Is(res.Cause, deployer.ErrConflict) {
		fmt.Println("someone else changed the service; try again later")
	}
}

// Keep a stack file's tag in step with a semver update: only the tag
// changes, the rest of the file stays as written.
func ExampleRewriteStackFile() {
	dir, _ := os.MkdirTemp("", "stack")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "stack.yml")
	_ = os.WriteFile(path, []byte("services:\n  web:\n    image: ghcr.io/acme/web:1.4.1   # the front end\n"), 0o644)

	from := imageref.MustParse("ghcr.io/acme/web:1.4.1")
	to := imageref.MustParse("ghcr.io/acme/web:1.4.2@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
	changed, err := swarm.RewriteStackFile(path, "web", from, to)
	fmt.Println(changed, err)
	b, _ := os.ReadFile(path)
	fmt.Print(string(b))
	// Output:
	// true <nil>
	// services:
	//   web:
	//     image: ghcr.io/acme/web:1.4.2   # the front end
}
