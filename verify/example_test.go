package verify_test

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/shipwatch/shipwatch/imageref"
	"github.com/shipwatch/shipwatch/internal/testenv"
	"github.com/shipwatch/shipwatch/verify"
	"github.com/shipwatch/shipwatch/verify/sigtest"
)

// Example verifies a signed and an unsigned digest against a policy that
// trusts one key.
func Example() {
	reg, err := testenv.StartRegistry(testenv.WithReferrersAPI())
	if err != nil {
		panic(err)
	}
	defer reg.Close()
	key, _ := sigtest.NewKey("ecdsa-p256")
	push := func(tag string) imageref.Ref {
		img, _ := random.Image(64, 1)
		d, err := reg.Push("demo/app:"+tag, img)
		if err != nil {
			panic(err)
		}
		return imageref.MustParse(reg.Ref("demo/app:" + tag)).WithDigest(d)
	}
	signed, unsigned := push("1.0"), push("1.1")
	if err := sigtest.Sign(context.Background(), reg, signed.Repo()+"@"+signed.Digest, key, sigtest.Bundle); err != nil {
		panic(err)
	}

	v, err := verify.New(verify.Options{
		Policies: []verify.PolicySpec{{
			Name:        "demo",
			Images:      []string{reg.Host + "/demo/*"},
			Authorities: []verify.AuthoritySpec{{Name: "release", Key: key.PublicKeyPEM()}},
		}},
		Transport: reg.Transport(),
	})
	if err != nil {
		panic(err)
	}
	for _, img := range []imageref.Ref{signed, unsigned} {
		vd := v.Verify(context.Background(), img)
		fmt.Println(img.Tag, vd.Decision, vd.Deployable())
	}
	fmt.Println(v.Verify(context.Background(), signed.Tagged()).Decision)
	// Output:
	// 1.0 allowed true
	// 1.1 blocked false
	// undecided
}
