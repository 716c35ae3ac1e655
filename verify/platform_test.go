package verify_test

import (
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/shipwatch/shipwatch/imageref"
	"github.com/shipwatch/shipwatch/internal/testenv"
	"github.com/shipwatch/shipwatch/verify"
	"github.com/shipwatch/shipwatch/verify/sigtest"
)

// pushIndex pushes a two-platform index (linux/amd64, linux/arm64) and
// returns its reference and the platform manifests' digests.
func pushIndex(t *testing.T, reg *testenv.Registry) (index imageref.Ref, amd64, arm64 string) {
	t.Helper()
	idx := v1.ImageIndex(empty.Index)
	digests := map[string]string{}
	for _, arch := range []string{"amd64", "arm64"} {
		img, err := random.Image(64, 1)
		if err != nil {
			t.Fatal(err)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		digests[arch] = d.String()
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	d, err := reg.PushIndex("demo/multi:1.0", idx)
	if err != nil {
		t.Fatal(err)
	}
	return imageref.MustParse(reg.Ref("demo/multi:1.0")).WithDigest(d), digests["amd64"], digests["arm64"]
}

func TestMultiPlatform(t *testing.T) {
	key := sigtest.MustKey(t, "")
	tests := []struct {
		name               string
		sign               []string // "index", "amd64", "arm64"
		deploy             string   // "index" or "amd64"
		platformSignatures bool
		platforms          []string
		want               verify.Decision
		frag               string
	}{
		{"index signed, index deployed", []string{"index"}, "index", false, nil, verify.Allowed, "signed by release"},
		{"index signed, platform digest deployed", []string{"index"}, "amd64", false, nil, verify.Blocked, "no signature"},
		{"platform signed, index deployed", []string{"amd64"}, "index", false, []string{"linux/amd64"}, verify.Blocked, "no signature"},
		{"platform signed, index deployed, per-platform accepted", []string{"amd64"}, "index", true, []string{"linux/amd64"}, verify.Allowed, "every platform that runs does: linux/amd64"},
		{"one of two running platforms signed", []string{"amd64"}, "index", true, []string{"linux/amd64", "linux/arm64"}, verify.Blocked, "linux/arm64: no signature"},
		{"both running platforms signed", []string{"amd64", "arm64"}, "index", true, []string{"linux/amd64", "linux/arm64"}, verify.Allowed, "linux/arm64"},
		{"running platform not in the index", []string{"amd64", "arm64"}, "index", true, []string{"linux/s390x"}, verify.Blocked, "linux/s390x: the index has no manifest for it"},
	}
	for _, tc := range tests {
		for _, format := range []sigtest.Format{sigtest.Bundle, sigtest.Legacy} {
			t.Run(tc.name+"/"+string(format), func(t *testing.T) {
				reg := testenv.NewRegistry(t, testenv.WithReferrersAPI())
				index, amd64, arm64 := pushIndex(t, reg)
				refs := map[string]imageref.Ref{"index": index, "amd64": index.WithDigest(amd64), "arm64": index.WithDigest(arm64)}
				for _, s := range tc.sign {
					sigtest.MustSign(t, reg, digestRef(refs[s]), key, format)
				}
				p := imagePolicy(reg, keyAuthority("release", key))
				p.PlatformSignatures = tc.platformSignatures
				v := newVerifierOpts(t, reg, verify.Options{Policies: []verify.PolicySpec{p}, Platforms: tc.platforms})
				wantDecision(t, v.Verify(ctx(t), refs[tc.deploy]), tc.want, tc.frag)
			})
		}
	}
}

func TestPlatformSignaturesOnSinglePlatformImage(t *testing.T) {
	key := sigtest.MustKey(t, "")
	reg := testenv.NewRegistry(t)
	img := pushRandom(t, reg, "demo/app:1.0")
	p := imagePolicy(reg, keyAuthority("release", key))
	p.PlatformSignatures = true
	vd := newVerifier(t, reg, p).Verify(ctx(t), img)
	wantDecision(t, vd, verify.Blocked, "no signature", "per-platform evidence not used: the image is not a multi-platform index")
}
