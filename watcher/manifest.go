package watcher

import (
	"context"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"
)

// Manifest media types the watcher accepts (and sends in Accept): OCI
// index and manifest, Docker manifest list and schema 2. Schema 1 is not
// accepted; registries convert or refuse.
const (
	MediaTypeOCIIndex       = "application/vnd.oci.image.index.v1+json"
	MediaTypeDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeOCIManifest    = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
)

var acceptManifests = strings.Join([]string{MediaTypeOCIIndex, MediaTypeDockerList, MediaTypeOCIManifest, MediaTypeDockerManifest}, ", ")

// maxManifestSize caps manifest bodies (containerd uses the same 4 MiB).
const maxManifestSize = 4 << 20

func isIndex(mt string) bool { return mt == MediaTypeOCIIndex || mt == MediaTypeDockerList }

func isKnownManifest(mt string) bool {
	return isIndex(mt) || mt == MediaTypeOCIManifest || mt == MediaTypeDockerManifest
}

// normalizeMediaType drops parameters ("; charset=utf-8").
func normalizeMediaType(ct string) string {
	if mt, _, err := mime.ParseMediaType(ct); err == nil {
		return mt
	}
	return strings.TrimSpace(ct)
}

// platform is an OCI platform.
type platform struct {
	OS           string `json:"os"`
	Architecture string `json:"architecture"`
	Variant      string `json:"variant,omitempty"`
}

func (p platform) String() string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// matches reports whether p (from an index) runs on want; an empty variant
// in want matches any variant ("linux/arm64" matches "linux/arm64/v8").
func (p platform) matches(want platform) bool {
	return p.OS == want.OS && p.Architecture == want.Architecture && (want.Variant == "" || p.Variant == want.Variant)
}

func parsePlatform(s string) (platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" || (len(parts) == 3 && parts[2] == "") {
		return platform{}, fmt.Errorf("platform %q: use os/arch or os/arch/variant, such as linux/amd64 or linux/arm/v7", s)
	}
	p := platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

type descriptor struct {
	MediaType string    `json:"mediaType"`
	Digest    string    `json:"digest"`
	Size      int64     `json:"size"`
	Platform  *platform `json:"platform,omitempty"`
}

// manifestHead is what a HEAD says about a tag.
type manifestHead struct {
	digest    string
	mediaType string
}

// manifestInfo is what the watcher keeps of a manifest it fetched: enough
// to tell a platform manifest inside an index and to validate a candidate.
type manifestInfo struct {
	digest    string
	mediaType string
	children  []descriptor // index entries; nil for an image manifest
}

func (m manifestInfo) child(d string) (descriptor, bool) {
	for _, c := range m.children {
		if c.Digest == d {
			return c, true
		}
	}
	return descriptor{}, false
}

func (m manifestInfo) hasPlatform(p platform) bool {
	for _, c := range m.children {
		if c.Platform != nil && c.Platform.matches(p) {
			return true
		}
	}
	return false
}

// head resolves ref (a tag or digest) of repo to a digest with a HEAD
// request: no manifest GET, which Docker Hub counts against pull quota.
func (e *endpoint) head(ctx context.Context, repo, ref, subject string) (manifestHead, error) {
	resp, err := e.do(ctx, call{method: http.MethodHead, url: "/v2/" + repo + "/manifests/" + ref, repo: repo, kind: "head", subject: subject,
		header: map[string]string{"Accept": acceptManifests}})
	if err != nil {
		return manifestHead{}, err
	}
	bad := func(detail string) (manifestHead, error) {
		e.stats.errors.Add(1)
		return manifestHead{}, &Error{Registry: e.host, Subject: subject, Status: resp.status, Kind: ErrInvalidResponse, Detail: detail, Hint: hintFor(ErrInvalidResponse, e.host, repo)}
	}
	if resp.status != http.StatusOK {
		return bad(fmt.Sprintf("HTTP %d to a manifest HEAD", resp.status))
	}
	if cl := resp.header.Get("Content-Length"); cl != "" {
		var n int64
		if _, err := fmt.Sscan(cl, &n); err == nil && n > maxManifestSize {
			e.stats.errors.Add(1)
			return manifestHead{}, &Error{Registry: e.host, Subject: subject, Status: resp.status, Kind: ErrTooLarge,
				Detail: fmt.Sprintf("manifest of %d bytes, the limit is %d", n, maxManifestSize), Hint: "this is not an image manifest shipwatch can deploy"}
		}
	}
	mt := normalizeMediaType(resp.header.Get("Content-Type"))
	if mt != "" && !isKnownManifest(mt) {
		return bad(fmt.Sprintf("unsupported manifest media type %q (want an OCI or Docker v2 manifest or index)", mt))
	}
	d := resp.header.Get("Docker-Content-Digest")
	if d == "" {
		// Some registries do not send the digest on HEAD: read the manifest
		// (by reference) and hash it.
		info, err := e.fetch(ctx, repo, ref, "", subject)
		if err != nil {
			return manifestHead{}, err
		}
		return manifestHead{digest: info.digest, mediaType: info.mediaType}, nil
	}
	if _, err := digest.Parse(d); err != nil {
		return bad(fmt.Sprintf("Docker-Content-Digest %q is not a digest", oneLine(d)))
	}
	return manifestHead{digest: d, mediaType: mt}, nil
}

// fetch GETs the manifest ref of repo and validates it: size cap, digest
// of the content (want, or ref when it is a digest), JSON structure and
// media type.
func (e *endpoint) fetch(ctx context.Context, repo, ref, want, subject string) (manifestInfo, error) {
	resp, err := e.do(ctx, call{method: http.MethodGet, url: "/v2/" + repo + "/manifests/" + ref, repo: repo, kind: "get", subject: subject,
		maxBody: maxManifestSize, header: map[string]string{"Accept": acceptManifests}})
	if err != nil {
		return manifestInfo{}, err
	}
	bad := func(detail string, cause error) (manifestInfo, error) {
		e.stats.errors.Add(1)
		return manifestInfo{}, &Error{Registry: e.host, Subject: subject, Status: resp.status, Kind: ErrInvalidResponse, Detail: detail, Cause: cause,
			Hint: "the registry sent a broken manifest; try again, and if it persists check the image in " + e.host}
	}
	if want == "" && strings.Contains(ref, ":") {
		want = ref
	}
	got := digest.FromBytes(resp.body).String()
	if want != "" {
		wd, err := digest.Parse(want)
		if err != nil {
			return bad(fmt.Sprintf("%q is not a digest", want), nil)
		}
		if wd.Algorithm() != digest.SHA256 {
			if !wd.Algorithm().Available() {
				return bad(fmt.Sprintf("digest algorithm %s is not supported", wd.Algorithm()), nil)
			}
			got = wd.Algorithm().FromBytes(resp.body).String()
		}
		if got != want {
			return bad(fmt.Sprintf("content of %d bytes does not match digest %s: truncated or corrupted response", len(resp.body), shortDigest(want)), nil)
		}
	}
	info, err := parseManifest(resp.body, normalizeMediaType(resp.header.Get("Content-Type")))
	if err != nil {
		return bad("invalid manifest", err)
	}
	info.digest = got
	return info, nil
}

// parseManifest validates a manifest body. contentType may be "" (the
// body's mediaType field decides then).
func parseManifest(body []byte, contentType string) (manifestInfo, error) {
	var m struct {
		SchemaVersion int          `json:"schemaVersion"`
		MediaType     string       `json:"mediaType"`
		Manifests     []descriptor `json:"manifests"`
		Config        *descriptor  `json:"config"`
		Layers        []descriptor `json:"layers"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return manifestInfo{}, fmt.Errorf("not valid JSON: %w", err)
	}
	if m.SchemaVersion != 2 {
		return manifestInfo{}, fmt.Errorf("schemaVersion is %d, want 2", m.SchemaVersion)
	}
	mt := contentType
	if mt == "" || mt == "application/json" || mt == "application/octet-stream" {
		mt = m.MediaType
	}
	if mt == "" {
		switch {
		case m.Manifests != nil:
			mt = MediaTypeOCIIndex
		case m.Config != nil:
			mt = MediaTypeOCIManifest
		}
	}
	if m.MediaType != "" && m.MediaType != mt {
		return manifestInfo{}, fmt.Errorf("body says media type %q but the registry sent %q", m.MediaType, mt)
	}
	if !isKnownManifest(mt) {
		return manifestInfo{}, fmt.Errorf("unsupported media type %q", mt)
	}
	info := manifestInfo{mediaType: mt}
	if isIndex(mt) {
		if len(m.Manifests) == 0 {
			return manifestInfo{}, fmt.Errorf("index lists no manifests")
		}
		for i, c := range m.Manifests {
			if _, err := digest.Parse(c.Digest); err != nil {
				return manifestInfo{}, fmt.Errorf("manifests[%d].digest %q is not a digest", i, oneLine(c.Digest))
			}
		}
		info.children = m.Manifests
		return info, nil
	}
	if m.Config == nil {
		return manifestInfo{}, fmt.Errorf("image manifest has no config")
	}
	if _, err := digest.Parse(m.Config.Digest); err != nil {
		return manifestInfo{}, fmt.Errorf("config.digest %q is not a digest", oneLine(m.Config.Digest))
	}
	for i, l := range m.Layers {
		if _, err := digest.Parse(l.Digest); err != nil {
			return manifestInfo{}, fmt.Errorf("layers[%d].digest %q is not a digest", i, oneLine(l.Digest))
		}
	}
	return info, nil
}

// parseErrorCodes reads the codes of a distribution error body.
func parseErrorCodes(body []byte) []string {
	var eb struct {
		Errors []struct {
			Code string `json:"code"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &eb) != nil {
		return nil
	}
	var out []string
	for _, e := range eb.Errors {
		out = append(out, e.Code)
	}
	return out
}

// manifestCache keeps validated manifests by digest. Content under a
// digest never changes, so an entry never goes stale; the cache only has a
// size bound (oldest out first).
type manifestCache struct {
	mu    sync.Mutex
	max   int
	m     map[string]manifestInfo
	order []string
}

func newManifestCache(max int) *manifestCache {
	return &manifestCache{max: max, m: map[string]manifestInfo{}}
}

func (c *manifestCache) get(d string) (manifestInfo, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, ok := c.m[d]
	return m, ok
}

func (c *manifestCache) put(m manifestInfo) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[m.digest]; ok {
		return
	}
	if len(c.order) >= c.max {
		delete(c.m, c.order[0])
		c.order = c.order[1:]
	}
	c.m[m.digest] = m
	c.order = append(c.order, m.digest)
}
