package watcher_test

import (
	"context"
	"fmt"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/shipwatch/shipwatch/imageref"
	"github.com/shipwatch/shipwatch/internal/testenv"
	"github.com/shipwatch/shipwatch/watcher"
)

func ExamplePolicy_Select() {
	pol, err := watcher.CompilePolicy(watcher.PolicySpec{Mode: watcher.ModeSemver, Range: "~1.27"})
	if err != nil {
		fmt.Println(err)
		return
	}
	tags := []string{"1.27.3", "1.27.4", "1.27.4-alpine", "1.27.5-alpine", "1.28.0", "1.27", "latest"}
	for _, running := range []string{"1.27.3", "1.27.3-alpine", "1.27"} {
		sel, _ := pol.Select(running, tags)
		fmt.Printf("%s -> %s: %s\n", running, sel.Tag, sel.Reason)
	}
	// Output:
	// 1.27.3 -> 1.27.4: 1.27.4 is the newest tag in ~1.27 (running 1.27.3)
	// 1.27.3-alpine -> 1.27.5-alpine: 1.27.5-alpine is the newest tag in ~1.27 (running 1.27.3-alpine)
	// 1.27 -> 1.27: 1.27 is the newest tag in ~1.27
}

func ExampleWatcher_Check() {
	reg, err := testenv.StartRegistry() // an in-process registry on 127.0.0.1
	if err != nil {
		fmt.Println(err)
		return
	}
	defer reg.Close()
	image := func(version string) v1.Image {
		img, _ := mutate.Config(empty.Image, v1.Config{Labels: map[string]string{"version": version}})
		return img
	}
	running, _ := reg.Push("shop/web:1.4.0", image("1.4.0"))
	_, _ = reg.Push("shop/web:1.5.0", image("1.5.0"))
	_, _ = reg.Push("shop/web:2.0.0", image("2.0.0"))

	w, err := watcher.New(watcher.Options{Keychain: authn.NewMultiKeychain()})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	results := w.Check(ctx, []watcher.Request{{
		Key:     "compose/shop/web",
		Image:   imageref.MustParse(reg.Ref("shop/web:1.4.0")),
		Running: running,
		Policy:  watcher.MustCompilePolicy(watcher.PolicySpec{Mode: watcher.ModeSemver, Range: "^1"}),
	}})
	for _, r := range results {
		fmt.Println(r.Key, r.Change, r.Candidate.Tag, r.Err)
		fmt.Println(r.Reason)
	}
	// Output:
	// compose/shop/web tag 1.5.0 <nil>
	// 1.5.0 is the newest tag in ^1 (running 1.4.0)
}
