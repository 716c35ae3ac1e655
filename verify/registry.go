package verify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Size limits of everything read from a registry (bounded reads: a hostile
// registry cannot make the agent allocate without limit).
const (
	maxManifestSize = 4 << 20
	maxBlobSize     = 16 << 20
	// maxReferrers bounds how many referrers or legacy layers are examined.
	maxReferrers = 32
	// noReferrersTTL is how long a registry that answered 404 on the
	// referrers API is assumed not to have one.
	noReferrersTTL = time.Hour
)

const (
	mediaOCIIndex        = "application/vnd.oci.image.index.v1+json"
	mediaOCIManifest     = "application/vnd.oci.image.manifest.v1+json"
	mediaDockerManifest  = "application/vnd.docker.distribution.manifest.v2+json"
	mediaDockerList      = "application/vnd.docker.distribution.manifest.list.v2+json"
	acceptManifestHeader = mediaOCIIndex + ", " + mediaOCIManifest + ", " + mediaDockerManifest + ", " + mediaDockerList
)

// errNotFound is returned when the registry answers 404: the thing does not
// exist, which is an answer (no evidence), not a failure.
var errNotFound = errors.New("not found")

// UnreachableError says the registry (or another source) could not answer:
// network failure, 5xx, 429, denied credentials. The verdict is undecided.
type UnreachableError struct {
	What string
	Err  error
}

func (e *UnreachableError) Error() string { return e.What + ": " + e.Err.Error() }
func (e *UnreachableError) Unwrap() error { return e.Err }

// invalidError says the registry answered with something unusable
// (oversized, malformed, wrong digest): the evidence is invalid.
type invalidError struct{ msg string }

func (e *invalidError) Error() string { return e.msg }

// registryClient reads manifests and blobs with one authenticated transport
// per repository, reused across verifications so that the ping and the token
// exchange happen once, not per request (ggcr's remote package redoes both
// on every call unless a Puller is reused).
type registryClient struct {
	keychain authn.Keychain
	base     http.RoundTripper

	mu          sync.Mutex
	transports  map[string]http.RoundTripper // "host/repo"
	noReferrers map[string]time.Time         // host → until
	now         func() time.Time
}

func newRegistryClient(kc authn.Keychain, base http.RoundTripper, now func() time.Time) *registryClient {
	return &registryClient{
		keychain:    kc,
		base:        base,
		transports:  map[string]http.RoundTripper{},
		noReferrers: map[string]time.Time{},
		now:         now,
	}
}

// repository names a repository for requests; insecure (plain HTTP) is
// allowed only for loopback registries, as Docker does.
type repository struct {
	repo name.Repository
	key  string
}

func parseRepository(s string, insecure bool) (repository, error) {
	var opts []name.Option
	if insecure {
		opts = append(opts, name.Insecure)
	}
	r, err := name.NewRepository(s, opts...)
	if err != nil {
		return repository{}, err
	}
	return repository{repo: r, key: r.RegistryStr() + "/" + r.RepositoryStr()}, nil
}

func (c *registryClient) transport(ctx context.Context, r repository) (http.RoundTripper, error) {
	c.mu.Lock()
	t, ok := c.transports[r.key]
	c.mu.Unlock()
	if ok {
		return t, nil
	}
	auth, err := authn.Resolve(ctx, c.keychain, r.repo)
	if err != nil {
		return nil, &UnreachableError{What: "resolve credentials for " + r.repo.RegistryStr(), Err: err}
	}
	t, err = transport.NewWithContext(ctx, r.repo.Registry, auth, c.base, []string{r.repo.Scope(transport.PullScope)})
	if err != nil {
		return nil, &UnreachableError{What: "connect to registry " + r.repo.RegistryStr(), Err: redact(err)}
	}
	c.mu.Lock()
	if prev, ok := c.transports[r.key]; ok {
		t = prev
	} else {
		c.transports[r.key] = t
	}
	c.mu.Unlock()
	return t, nil
}

// redact drops what an error might echo of credentials: ggcr's transport
// errors can include the token endpoint's response body.
func redact(err error) error {
	var te *transport.Error
	if errors.As(err, &te) {
		return fmt.Errorf("registry answered %d %s", te.StatusCode, http.StatusText(te.StatusCode))
	}
	return err
}

// get fetches /v2/<repo>/<kind>/<ref> with a bounded read. A 404 is
// errNotFound; other failures are *UnreachableError; an oversized body is
// *invalidError.
func (c *registryClient) get(ctx context.Context, r repository, path, accept string, limit int64) ([]byte, http.Header, error) {
	t, err := c.transport(ctx, r)
	if err != nil {
		return nil, nil, err
	}
	url := fmt.Sprintf("%s://%s/v2/%s/%s", r.repo.Scheme(), r.repo.RegistryStr(), r.repo.RepositoryStr(), path)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, nil, err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	what := "GET " + r.repo.RegistryStr() + "/" + r.repo.RepositoryStr() + "/" + path
	resp, err := (&http.Client{Transport: t}).Do(req)
	if err != nil {
		return nil, nil, &UnreachableError{What: what, Err: err}
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil, resp.Header, errNotFound
	case resp.StatusCode != http.StatusOK:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		hint := ""
		switch resp.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden:
			hint = "; check the registry credentials (docker login)"
		case http.StatusTooManyRequests:
			hint = "; rate limited"
		}
		return nil, resp.Header, &UnreachableError{What: what, Err: fmt.Errorf("status %d %s%s", resp.StatusCode, http.StatusText(resp.StatusCode), hint)}
	}
	if resp.ContentLength > limit {
		return nil, resp.Header, &invalidError{fmt.Sprintf("%s: %d bytes exceeds the limit of %d", what, resp.ContentLength, limit)}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, resp.Header, &UnreachableError{What: what, Err: err}
	}
	if int64(len(b)) > limit {
		return nil, resp.Header, &invalidError{fmt.Sprintf("%s: body exceeds the limit of %d bytes", what, limit)}
	}
	return b, resp.Header, nil
}

// manifest fetches a manifest by tag or digest; by digest its content must
// hash to the digest.
func (c *registryClient) manifest(ctx context.Context, r repository, ref string) ([]byte, error) {
	b, _, err := c.get(ctx, r, "manifests/"+ref, acceptManifestHeader, maxManifestSize)
	if err != nil {
		return nil, err
	}
	if strings.HasPrefix(ref, "sha256:") {
		if err := checkDigest(b, ref); err != nil {
			return nil, &invalidError{fmt.Sprintf("manifest %s: %v", ref, err)}
		}
	}
	return b, nil
}

// blob fetches a blob and checks it against its digest.
func (c *registryClient) blob(ctx context.Context, r repository, digest string, size int64) ([]byte, error) {
	if size > maxBlobSize {
		return nil, &invalidError{fmt.Sprintf("blob %s: %d bytes exceeds the limit of %d", digest, size, maxBlobSize)}
	}
	if !strings.HasPrefix(digest, "sha256:") {
		return nil, &invalidError{fmt.Sprintf("blob %q: only sha256 digests are supported", digest)}
	}
	b, _, err := c.get(ctx, r, "blobs/"+digest, "", maxBlobSize)
	if err != nil {
		return nil, err
	}
	if err := checkDigest(b, digest); err != nil {
		return nil, &invalidError{fmt.Sprintf("blob %s: %v", digest, err)}
	}
	return b, nil
}

func checkDigest(b []byte, want string) error {
	sum := sha256.Sum256(b)
	if got := "sha256:" + hex.EncodeToString(sum[:]); got != want {
		return fmt.Errorf("content hashes to %s", got)
	}
	return nil
}

// noReferrersAPI says whether r's registry is remembered as having no
// referrers API (it answered 404, 400 or 405 within noReferrersTTL).
func (c *registryClient) noReferrersAPI(r repository) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now().Before(c.noReferrers[r.repo.RegistryStr()])
}

// forgetNoReferrersAPI makes the next referrers call ask r's registry's
// referrers API again.
func (c *registryClient) forgetNoReferrersAPI(r repository) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.noReferrers, r.repo.RegistryStr())
}

// sourceReferrersAPI is the source of what the OCI referrers API listed.
const sourceReferrersAPI = "referrers API"

// referrers lists the manifests that refer to digest: the OCI 1.1 referrers
// API, or the "sha256-<hex>" fallback tag on registries without it
// (remembered per registry for noReferrersTTL). source says which answered.
// With apiOnly, a registry without the API gives errNotFound instead of the
// fallback tag.
func (c *registryClient) referrers(ctx context.Context, r repository, digest string, apiOnly bool) (idx *indexManifest, source string, err error) {
	host := r.repo.RegistryStr()
	if !c.noReferrersAPI(r) {
		b, _, err := c.get(ctx, r, "referrers/"+digest, mediaOCIIndex, maxManifestSize)
		switch {
		case err == nil:
			idx, err := parseIndex(b)
			if err != nil {
				return nil, sourceReferrersAPI, &invalidError{"referrers of " + digest + ": " + err.Error()}
			}
			return idx, sourceReferrersAPI, nil
		case errors.Is(err, errNotFound):
			c.mu.Lock()
			c.noReferrers[host] = c.now().Add(noReferrersTTL)
			c.mu.Unlock()
		default:
			var ue *UnreachableError
			// Some registries answer 400 or 405 where they have no such API.
			if errors.As(err, &ue) && (strings.Contains(ue.Err.Error(), "status 400") || strings.Contains(ue.Err.Error(), "status 405")) {
				c.mu.Lock()
				c.noReferrers[host] = c.now().Add(noReferrersTTL)
				c.mu.Unlock()
				break
			}
			return nil, sourceReferrersAPI, err
		}
	}
	if apiOnly {
		return nil, sourceReferrersAPI, errNotFound
	}
	tag := strings.Replace(digest, ":", "-", 1)
	b, err := c.manifest(ctx, r, tag)
	if err != nil {
		return nil, "referrers tag " + tag, err
	}
	idx, err = parseIndex(b)
	if err != nil {
		return nil, "referrers tag " + tag, &invalidError{"referrers tag " + tag + ": " + err.Error()}
	}
	return idx, "referrers tag " + tag, nil
}

// descriptor is an OCI content descriptor.
type descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	Platform     *struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
		Variant      string `json:"variant,omitempty"`
	} `json:"platform,omitempty"`
}

type indexManifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []descriptor `json:"manifests"`
}

type imageManifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	ArtifactType  string       `json:"artifactType,omitempty"`
	Config        descriptor   `json:"config"`
	Layers        []descriptor `json:"layers"`
	Subject       *descriptor  `json:"subject,omitempty"`
	Manifests     []descriptor `json:"manifests"`
}

func parseIndex(b []byte) (*indexManifest, error) {
	var idx indexManifest
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("not an image index: %w", err)
	}
	if idx.SchemaVersion != 2 {
		return nil, fmt.Errorf("image index schemaVersion %d, want 2", idx.SchemaVersion)
	}
	return &idx, nil
}

func parseManifest(b []byte) (*imageManifest, error) {
	var m imageManifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("not an image manifest: %w", err)
	}
	if m.SchemaVersion != 2 {
		return nil, fmt.Errorf("manifest schemaVersion %d, want 2", m.SchemaVersion)
	}
	return &m, nil
}
