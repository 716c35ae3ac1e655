package verify_test

import (
	"fmt"
	"testing"

	"github.com/shipwatch/shipwatch/internal/testenv"
	"github.com/shipwatch/shipwatch/verify"
	"github.com/shipwatch/shipwatch/verify/sigtest"
)

func TestKeyedSignaturesAllFormats(t *testing.T) {
	for _, alg := range []string{"ecdsa-p256", "ecdsa-p384", "rsa-2048", "ed25519"} {
		key := sigtest.MustKey(t, alg)
		for _, referrers := range []bool{true, false} {
			for _, format := range []sigtest.Format{sigtest.Bundle, sigtest.Legacy} {
				t.Run(fmt.Sprintf("%s/referrersAPI=%v/%s", alg, referrers, format), func(t *testing.T) {
					var opts []testenv.RegistryOption
					if referrers {
						opts = append(opts, testenv.WithReferrersAPI())
					}
					reg := testenv.NewRegistry(t, opts...)
					img := pushRandom(t, reg, "demo/app:1.0")
					sigtest.MustSign(t, reg, digestRef(img), key, format)
					v := newVerifier(t, reg, imagePolicy(reg, keyAuthority("release", key)))
					vd := v.Verify(ctx(t), img)
					wantDecision(t, vd, verify.Allowed, "signed by release")
					if vd.Signer == "" {
						t.Errorf("signer: got empty, want the release key")
					}
				})
			}
		}
	}
}
