package verify_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shipwatch/shipwatch/internal/testenv"
	"github.com/shipwatch/shipwatch/verify"
	"github.com/shipwatch/shipwatch/verify/sigtest"
)

// CosignVersion is the cosign CLI the interoperability test is written
// against; .ci installs it with
// go install github.com/sigstore/cosign/v2/cmd/cosign@v2.6.5
const CosignVersion = "v2.6.5"

// findCosign looks for cosign on PATH and in $(go env GOPATH)/bin. Without
// it the test fails under CI=true and skips otherwise.
func findCosign(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("cosign"); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", "cosign")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	msg := "cosign not found on PATH or in $(go env GOPATH)/bin; install it with: go install github.com/sigstore/cosign/v2/cmd/cosign@" + CosignVersion
	if testenv.InCI() {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// cosignCLI runs cosign offline: its own HOME and TUF cache, no network
// beyond the loopback registry.
type cosignCLI struct {
	bin, home string
}

func (c cosignCLI) run(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, args...)
	cmd.Dir = c.home
	cmd.Env = append(os.Environ(),
		"HOME="+c.home,
		"TUF_ROOT="+filepath.Join(c.home, "tuf"),
		"COSIGN_PASSWORD=interop-test",
		"SIGSTORE_NO_CACHE=true",
		"COSIGN_EXPERIMENTAL=1", // for --registry-referrers-mode=oci-1-1
	)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("cosign %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

func TestCosignInterop(t *testing.T) {
	cli := cosignCLI{bin: findCosign(t), home: t.TempDir()}
	for _, line := range strings.Split(cli.run(t, "version"), "\n") {
		if strings.HasPrefix(line, "GitVersion:") {
			t.Logf("cosign %s", strings.TrimSpace(strings.TrimPrefix(line, "GitVersion:")))
		}
	}
	cli.run(t, "generate-key-pair")
	pub, err := os.ReadFile(filepath.Join(cli.home, "cosign.pub"))
	if err != nil {
		t.Fatal(err)
	}
	scan := sigtest.Scan{Scanner: "pkg:github/aquasecurity/trivy@v0.58.0", FinishedAt: time.Now().Add(-time.Hour), Vulns: []sigtest.Vuln{{ID: "CVE-2024-1111", Severity: "HIGH"}, {ID: "CVE-2024-2222", Severity: "LOW"}}}
	predicate, err := json.Marshal(sigtest.VulnPredicate(scan))
	if err != nil {
		t.Fatal(err)
	}
	predPath := filepath.Join(cli.home, "vuln.json")
	if err := os.WriteFile(predPath, predicate, 0o644); err != nil {
		t.Fatal(err)
	}
	other := sigtest.MustKey(t, "")

	for _, tc := range []struct {
		name      string
		referrers bool
		bundle    bool
		oci11     bool // cosign sign's experimental --registry-referrers-mode=oci-1-1
	}{
		{"legacy tags", false, false, false},
		{"legacy formats in OCI 1.1 referrers", true, false, true},
		{"bundle, referrers API", true, true, false},
		{"bundle, fallback tag", false, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var opts []testenv.RegistryOption
			if tc.referrers {
				opts = append(opts, testenv.WithReferrersAPI())
			}
			reg := testenv.NewRegistry(t, opts...)
			img := pushRandom(t, reg, "interop/app:1.0")
			common := []string{"--key", "cosign.key", "--tlog-upload=false", "--allow-http-registry", "--yes"}
			if tc.bundle {
				common = append(common, "--new-bundle-format")
			}
			sign := append([]string{"sign"}, common...)
			if tc.oci11 {
				// Only "cosign sign" has the mode; attestations stay in .att.
				sign = append(sign, "--registry-referrers-mode=oci-1-1")
			}
			cli.run(t, append(sign, digestRef(img))...)
			cli.run(t, append(append([]string{"attest", "--type", "vuln", "--predicate", predPath}, common...), digestRef(img))...)

			p := imagePolicy(reg, verify.AuthoritySpec{Name: "cosign", Key: string(pub)})
			p.Scan = &verify.ScanSpec{Authorities: []verify.AuthoritySpec{{Name: "scanner", Key: string(pub)}}, MaxSeverity: "high"}
			vd := newVerifier(t, reg, p).Verify(ctx(t), img)
			format := "cosign signature from tag"
			switch {
			case tc.bundle:
				format = "sigstore bundle from referrers"
			case tc.oci11:
				format = "cosign signature from referrers API"
			}
			wantDecision(t, vd, verify.Allowed, "signed by cosign", format, "1 high, 1 low")
			if vd.Scan == nil || vd.Scan.Scanner != scan.Scanner || vd.Scan.Counts["high"] != 1 {
				t.Errorf("scan: got %+v, want the cosign-attested trivy scan with 1 high", vd.Scan)
			}

			// The same signatures under another key: blocked.
			p.Authorities = []verify.AuthoritySpec{keyAuthority("other", other)}
			wantDecision(t, newVerifier(t, reg, p).Verify(ctx(t), img), verify.Blocked, "rejected")

			// The attestation is not a signature, even for cosign's key.
			unsigned := pushRandom(t, reg, "interop/app:2.0")
			cli.run(t, append(append([]string{"attest", "--type", "vuln", "--predicate", predPath}, common...), digestRef(unsigned))...)
			p.Authorities = []verify.AuthoritySpec{{Name: "cosign", Key: string(pub)}}
			wantDecision(t, newVerifier(t, reg, p).Verify(ctx(t), unsigned), verify.Blocked, "no signature")
		})
	}

	// The other way round: cosign verifies what sigtest signs, so the
	// fixtures the other tests rely on are real cosign formats.
	key := sigtest.MustKey(t, "")
	keyPath, err := key.WritePublicKey(cli.home, "sigtest.pub")
	if err != nil {
		t.Fatal(err)
	}
	for _, format := range []sigtest.Format{sigtest.Legacy, sigtest.Bundle} {
		t.Run("cosign verifies sigtest "+string(format), func(t *testing.T) {
			reg := testenv.NewRegistry(t, testenv.WithReferrersAPI())
			img := pushRandom(t, reg, "interop/fixture:1.0")
			sigtest.MustSign(t, reg, digestRef(img), key, format)
			if err := sigtest.AttestVuln(context.Background(), reg, digestRef(img), key, format, scan); err != nil {
				t.Fatal(err)
			}
			args := []string{"--key", keyPath, "--insecure-ignore-tlog", "--allow-http-registry"}
			if format == sigtest.Bundle {
				// cosign wants a trusted root with bundles even for a key;
				// an empty one keeps it offline.
				root := filepath.Join(cli.home, "empty_root.json")
				if err := os.WriteFile(root, []byte(`{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}`), 0o644); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--new-bundle-format", "--trusted-root", root)
			}
			cli.run(t, append(append([]string{"verify"}, args...), digestRef(img))...)
			cli.run(t, append(append([]string{"verify-attestation", "--type", "vuln"}, args...), digestRef(img))...)
		})
	}
}
