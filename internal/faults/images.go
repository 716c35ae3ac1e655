package faults

import (
	"context"
	"fmt"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/moby/moby/api/pkg/authconfig"
	"github.com/moby/moby/api/types/registry"

	"github.com/shipwatch/shipwatch/internal/testenv"
	"github.com/shipwatch/shipwatch/verify/sigtest"
)

// Version is one image of the workload.
type Version struct {
	App     testenv.App
	Sign    *sigtest.Key // nil: unsigned
	Scan    ScanKind
	Digest  string
	Tag     string
	Allowed bool
	extra   v1.Layer // a layer of its own (PushCandidate)
}

// ScanKind is the vulnerability scan attested for a version.
type ScanKind string

// Scans.
const (
	ScanNone   ScanKind = ""         // no scan attestation
	ScanFresh  ScanKind = "fresh"    // clean, finished an hour ago, signed by the scanner
	ScanStale  ScanKind = "stale"    // clean but 30 days old
	ScanBad    ScanKind = "critical" // fresh, with a critical finding
	ScanWrong  ScanKind = "wrongkey" // fresh and clean, signed by a stranger
	scanMaxAge          = 7 * 24 * time.Hour
)

// App returns the workload's app for version with this run's label (so
// that its digests are the run's own) and a fast healthcheck.
func (e *Env) App(version string) testenv.App {
	return testenv.App{Version: version, Health: testenv.FastHealth, Labels: map[string]string{"org.shipwatch.faults.run": e.ID}}
}

// Push builds, pushes, signs and attests v as repo:tag and records whether
// the policy allows it.
func (e *Env) Push(tag string, v Version) Version {
	e.T.Helper()
	img := v.App.MustImage(e.T)
	if v.extra != nil {
		var err error
		if img, err = mutate.AppendLayers(img, v.extra); err != nil {
			e.T.Fatal(err)
		}
	}
	ref, err := name.ParseReference(e.Reg.Ref(e.Repo+":"+tag), name.Insecure)
	if err != nil {
		e.T.Fatal(err)
	}
	if err := remote.Write(ref, img, e.driverOptions()...); err != nil {
		e.T.Fatalf("push %s: %v", ref, err)
	}
	d, _ := img.Digest()
	v.Digest, v.Tag = d.String(), tag
	pinned := e.Reg.Ref(e.Repo + "@" + v.Digest)
	if v.Sign != nil {
		sigtest.MustSign(e.T, e.Reg, pinned, v.Sign, sigtest.Bundle)
	}
	if v.Scan != ScanNone {
		scan := sigtest.Scan{FinishedAt: time.Now().Add(-time.Hour)}
		signer := e.Scanner
		switch v.Scan {
		case ScanStale:
			scan.FinishedAt = time.Now().Add(-30 * 24 * time.Hour)
		case ScanBad:
			scan.Vulns = []sigtest.Vuln{{ID: "CVE-2099-0001", Severity: "CRITICAL"}}
		case ScanWrong:
			signer = e.Stranger
		}
		if err := sigtest.AttestVuln(context.Background(), e.Reg, pinned, signer, sigtest.Bundle, scan); err != nil {
			e.T.Fatalf("attest scan of %s: %v", pinned, err)
		}
	}
	v.Allowed = v.Sign == e.Trusted && (!e.Opts.Scan || v.Scan == ScanFresh)
	e.mu.Lock()
	e.allowed[v.Digest] = v.Allowed
	e.pushed[v.Digest] = fmt.Sprintf("%s %s signed=%v scan=%s", tag, v.App.Version, v.Sign != nil, v.Scan)
	e.mu.Unlock()
	return v
}

// Good is a version the policy allows: signed by the trusted key, with a
// fresh clean scan when the policy wants one.
func (e *Env) Good(app testenv.App) Version {
	v := Version{App: app, Sign: e.Trusted}
	if e.Opts.Scan {
		v.Scan = ScanFresh
	}
	return v
}

// Allowed returns the digests the policy allows (ground truth).
func (e *Env) Allowed() map[string]bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]bool{}
	for d, ok := range e.allowed {
		if ok {
			out[d] = true
		}
	}
	return out
}

// driverOptions are the suite's own registry options: its User-Agent keeps
// the fault rules off its requests.
func (e *Env) driverOptions() []remote.Option {
	return []remote.Option{remote.WithAuth(e.Reg.Auth()), remote.WithTransport(e.Reg.Transport()), remote.WithUserAgent(driverAgent)}
}

// MoveTag points repo:tag at digest (already in the registry), as a
// re-push of the tag would.
func (e *Env) MoveTag(tag, digest string) error {
	src, err := name.NewDigest(e.Reg.Ref(e.Repo+"@"+digest), name.Insecure)
	if err != nil {
		return err
	}
	desc, err := remote.Get(src, e.driverOptions()...)
	if err != nil {
		return fmt.Errorf("get %s: %w", digest, err)
	}
	dst, err := name.NewTag(e.Reg.Ref(e.Repo+":"+tag), name.Insecure)
	if err != nil {
		return err
	}
	return remote.Tag(dst, desc, e.driverOptions()...)
}

// DeleteRef removes repo:tag or repo@digest from the registry.
func (e *Env) DeleteRef(ref string) error {
	r, err := name.ParseReference(e.Reg.Ref(e.Repo+ref), name.Insecure)
	if err != nil {
		return err
	}
	return remote.Delete(r, e.driverOptions()...)
}

func (e *Env) registryAuth() string {
	auth, err := authconfig.Encode(registry.AuthConfig{Username: e.user, Password: e.Canaries[CanaryRegistry], ServerAddress: e.Reg.Host})
	if err != nil {
		e.T.Fatal(err)
	}
	return auth
}
