package compose_test

import (
	"context"
	"fmt"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/deployer/compose"
	"github.com/shipwatch/shipwatch/imageref"
)

// Roll a verified digest into a Compose service found by discovery, print
// each step with its timing, and report the outcome. (Compiled, not run:
// it needs a Docker engine and a running project.)
func ExampleDeployer_Deploy() {
	ctx := context.Background()
	d, err := compose.New(ctx, compose.Options{Keychain: authn.DefaultKeychain})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer d.Close()

	var target deployer.Target // from discovery.Discover: "compose/shop/web"
	to := imageref.MustParse("ghcr.io/example/web:1.5.0@sha256:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
	res := d.Deploy(ctx, deployer.Plan{Target: target, To: to}, func(s deployer.Step) {
		fmt.Printf("%-24s %8s %s\n", s.Name, s.Took.Round(time.Millisecond), s.Detail)
	})
	switch res.Outcome {
	case deployer.Updated:
		fmt.Println("running", res.Running)
	case deployer.RolledBack:
		fmt.Println("rolled back:", res.Cause, "quarantine", res.FailedDigest)
	default:
		fmt.Println(res.Outcome, res.Cause, "manual action needed:", res.ManualAction)
	}
}

// Put back the version that ran before the last rollout, from the local
// rollback image. (Compiled, not run.)
func ExampleDeployer_Rollback() {
	ctx := context.Background()
	d, err := compose.New(ctx, compose.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer d.Close()
	var target deployer.Target
	res := d.Rollback(ctx, target, "", nil)
	fmt.Println(res.Outcome, res.Running)
}
