package compose

import (
	"context"
	"errors"
	"fmt"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/imageref"
)

// pullByDigest makes the engine pull repo@digest with credentials and
// returns the local image ID once the image is there and its RepoDigests
// prove it is exactly the verified digest (rule 1 of the design).
func (d *Deployer) pullByDigest(ctx context.Context, ref imageref.Ref) (string, error) {
	pinned := ref.Repo() + "@" + ref.Digest
	auth, err := deployer.EncodedRegistryAuth(ctx, d.opts.Keychain, ref)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, d.opts.PullTimeout)
	defer cancel()
	resp, err := d.engine.ImagePull(ctx, pinned, client.ImagePullOptions{RegistryAuth: auth})
	if err == nil {
		err = resp.Wait(ctx)
		_ = resp.Close()
	}
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return "", fmt.Errorf("pull %s: no result within %s: %w", pinned, d.opts.PullTimeout, err)
		}
		// The engine verifies content it pulls by digest; a registry that
		// serves other bytes for the digest fails here, not later.
		if isDigestVerificationError(err) {
			return "", fmt.Errorf("pull %s: %w: %v", pinned, deployer.ErrDigestMismatch, err)
		}
		return "", fmt.Errorf("pull %s: %w", pinned, err)
	}
	return d.checkLocalDigest(ctx, ref)
}

// checkLocalDigest returns the ID of the local image repo@digest after
// checking that its RepoDigests list that exact digest for the repository.
func (d *Deployer) checkLocalDigest(ctx context.Context, ref imageref.Ref) (string, error) {
	pinned := ref.Repo() + "@" + ref.Digest
	img, err := d.engine.ImageInspect(ctx, pinned)
	if err != nil {
		return "", fmt.Errorf("inspect %s: %w", pinned, err)
	}
	if !hasRepoDigest(img.RepoDigests, ref) {
		return "", fmt.Errorf("%w: the engine has %s as %v, want %s", deployer.ErrDigestMismatch, pinned, img.RepoDigests, ref.Digest)
	}
	return img.ID, nil
}

// hasRepoDigest reports whether repoDigests ("repo@sha256:…", familiar or
// not) hold ref's repository at ref's digest.
func hasRepoDigest(repoDigests []string, ref imageref.Ref) bool {
	for _, rd := range repoDigests {
		r, err := imageref.Parse(rd)
		if err == nil && r.SameRepo(ref) && r.Digest == ref.Digest {
			return true
		}
	}
	return false
}

// repoDigestOf returns the digest under which repoDigests list ref's
// repository ("" if none).
func repoDigestOf(repoDigests []string, ref imageref.Ref) string {
	for _, rd := range repoDigests {
		r, err := imageref.Parse(rd)
		if err == nil && r.SameRepo(ref) && r.Digest != "" {
			return r.Digest
		}
	}
	return ""
}

func isDigestVerificationError(err error) bool {
	s := strings.ToLower(err.Error())
	return strings.Contains(s, "verification failed") || strings.Contains(s, "digest mismatch") ||
		strings.Contains(s, "digest did not match") || strings.Contains(s, "unexpected commit digest")
}

// tag points target (a reference without digest) at the local image id.
func (d *Deployer) tag(ctx context.Context, id, target string) error {
	if _, err := d.engine.ImageTag(ctx, client.ImageTagOptions{Source: id, Target: target}); err != nil {
		return fmt.Errorf("tag %s as %s: %w", shortID(id), target, err)
	}
	return nil
}

// imageID returns the ID of the local image ref, or "" when the engine does
// not have it.
func (d *Deployer) imageID(ctx context.Context, ref string) (string, error) {
	img, err := d.engine.ImageInspect(ctx, ref)
	if cerrdefs.IsNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("inspect image %s: %w", ref, err)
	}
	return img.ID, nil
}

func shortID(id string) string {
	id = strings.TrimPrefix(id, "sha256:")
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func isNotFound(err error) bool { return cerrdefs.IsNotFound(err) }
