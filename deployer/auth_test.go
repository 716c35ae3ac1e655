package deployer

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/moby/moby/api/pkg/authconfig"

	"github.com/shipwatch/shipwatch/imageref"
)

// keychain answers fixed credentials for one registry and anonymous for the
// others, like a Docker config.json with one entry.
type keychain struct {
	registry string
	auth     authn.Authenticator
	err      error
}

func (k keychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if k.err != nil {
		return nil, k.err
	}
	if r.RegistryStr() == k.registry {
		return k.auth, nil
	}
	return authn.Anonymous, nil
}

func mustRef(t *testing.T, s string) imageref.Ref {
	t.Helper()
	ref, err := imageref.Parse(s)
	if err != nil {
		t.Fatalf("parse %s: %v", s, err)
	}
	return ref
}

func TestEncodedRegistryAuth(t *testing.T) {
	ctx := context.Background()
	basic := &authn.Basic{Username: "ci", Password: "canary-secret-7"}
	kc := keychain{registry: "registry.example:5000", auth: basic}

	enc, err := EncodedRegistryAuth(ctx, kc, mustRef(t, "registry.example:5000/team/app:1.2"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := authconfig.Decode(enc)
	if err != nil {
		t.Fatalf("the engine could not decode %q: %v", enc, err)
	}
	if got.Username != "ci" || got.Password != "canary-secret-7" || got.ServerAddress != "registry.example:5000" {
		t.Errorf("decoded %+v, want user ci, the password and server registry.example:5000", got)
	}

	for _, tc := range []struct {
		name string
		kc   authn.Keychain
		ref  string
	}{
		{"no keychain", nil, "registry.example:5000/team/app:1.2"},
		{"registry without credentials", kc, "other.example/team/app:1.2"},
		{"empty credentials", keychain{registry: "registry.example:5000", auth: &authn.Basic{}}, "registry.example:5000/team/app:1.2"},
	} {
		enc, err := EncodedRegistryAuth(ctx, tc.kc, mustRef(t, tc.ref))
		if err != nil || enc != "" {
			t.Errorf("%s: got %q, %v; want anonymous (\"\", nil)", tc.name, enc, err)
		}
	}
}

func TestEncodedRegistryAuthDockerHub(t *testing.T) {
	kc := keychain{registry: "index.docker.io", auth: &authn.Basic{Username: "u", Password: "p"}}
	enc, err := EncodedRegistryAuth(context.Background(), kc, mustRef(t, "nginx:1.27"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := authconfig.Decode(enc)
	if err != nil {
		t.Fatal(err)
	}
	if got.ServerAddress != "https://index.docker.io/v1/" {
		t.Errorf("Docker Hub server address %q, want the one the Docker CLI stores credentials under", got.ServerAddress)
	}
}

func TestEncodedRegistryAuthKeychainError(t *testing.T) {
	kc := keychain{err: errors.New("credential helper failed")}
	_, err := EncodedRegistryAuth(context.Background(), kc, mustRef(t, "registry.example:5000/team/app:1.2"))
	if err == nil || !strings.Contains(err.Error(), "registry.example:5000") {
		t.Fatalf("got %v, want an error naming the registry", err)
	}
}
