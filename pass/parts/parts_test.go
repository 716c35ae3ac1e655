package parts

import (
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/shipwatch/shipwatch/config"
)

// The verifier must reach a registry with a private CA exactly like the
// watcher does: the registries' ca_file is trusted by its transport.
func TestVerifyTransportTrustsRegistryCA(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) }))
	defer srv.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]byte("registries:\n  - host: registry.internal:5000\n    ca_file: "+ca+"\n    insecure: false\n  - host: plain.internal\n    insecure: true\n"), filepath.Join(dir, "c.yaml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	opts, err := VerifyOptions(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: opts.Transport}).Get(srv.URL)
	if err != nil {
		t.Fatalf("GET through the verifier's transport: %v (the CA file is not trusted)", err)
	}
	resp.Body.Close()
	if got := strings.Join(opts.InsecureRegistries, ","); got != "plain.internal" {
		t.Errorf("insecure registries = %q, want plain.internal", got)
	}

	// Without the CA, the same server is refused: the test can fail.
	plain, _ := config.Parse(nil, "empty.yaml", nil)
	opts, _ = VerifyOptions(plain, zerolog.Nop())
	if _, err := (&http.Client{Transport: opts.Transport}).Get(srv.URL); err == nil {
		t.Errorf("a self-signed registry was trusted without its CA")
	}

	if err := os.WriteFile(ca, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyOptions(cfg, zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "holds no PEM certificate") {
		t.Errorf("a bad ca_file: %v", err)
	}
}
