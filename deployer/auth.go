package deployer

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/moby/moby/api/pkg/authconfig"
	"github.com/moby/moby/api/types/registry"

	"github.com/shipwatch/shipwatch/imageref"
)

// dockerHubAuthServer is the server address the Docker CLI stores Docker Hub
// credentials under, and the one the engine expects for them.
const dockerHubAuthServer = "https://index.docker.io/v1/"

// EncodedRegistryAuth returns the X-Registry-Auth value that lets the
// engine (or a Swarm's nodes) pull ref, or "" when the keychain (nil: none)
// has no credentials for its registry: the engine then pulls anonymously, or
// a Swarm service keeps the credentials stored in it. The value holds a
// secret: it must never be logged or put in an error.
func EncodedRegistryAuth(ctx context.Context, kc authn.Keychain, ref imageref.Ref) (string, error) {
	if kc == nil {
		return "", nil
	}
	reg, err := name.NewRegistry(ref.Domain, name.WeakValidation)
	if err != nil {
		return "", fmt.Errorf("registry of %s: %w", ref.Repo(), err)
	}
	auth, err := authn.Resolve(ctx, kc, reg)
	if err != nil {
		return "", fmt.Errorf("registry credentials for %s: %w", ref.Domain, err)
	}
	if auth == nil || auth == authn.Anonymous {
		return "", nil
	}
	cfg, err := authn.Authorization(ctx, auth)
	if err != nil {
		return "", fmt.Errorf("registry credentials for %s: %w", ref.Domain, err)
	}
	if *cfg == (authn.AuthConfig{}) {
		return "", nil
	}
	server := ref.Domain
	if ref.IsDockerHub() {
		server = dockerHubAuthServer
	}
	enc, err := authconfig.Encode(registry.AuthConfig{
		Username:      cfg.Username,
		Password:      cfg.Password,
		Auth:          cfg.Auth,
		IdentityToken: cfg.IdentityToken,
		RegistryToken: cfg.RegistryToken,
		ServerAddress: server,
	})
	if err != nil {
		return "", fmt.Errorf("encode registry credentials for %s: %w", ref.Domain, err)
	}
	return enc, nil
}
