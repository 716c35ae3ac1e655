// Package imageref parses and prints container image references the way the
// Docker CLI does ("nginx" means docker.io/library/nginx:latest), keeping the
// tag and the digest apart so that shipwatch can pin exactly what it verified.
package imageref

import (
	"errors"
	"fmt"
	"strings"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
)

// DefaultTag is the tag a reference without tag or digest means.
const DefaultTag = "latest"

// Ref is a normalized image reference. Domain and Path are always set;
// Tag and Digest may each be empty (but Parse sets Tag to "latest" when both
// are missing, as Docker does).
type Ref struct {
	Domain string // "docker.io", "ghcr.io", "127.0.0.1:5000"
	Path   string // "library/nginx", "org/app"
	Tag    string // "1.27", "" when pinned by digest only
	Digest string // "sha256:…" or ""
}

// ErrInvalid is wrapped by every parse error.
var ErrInvalid = errors.New("invalid image reference")

// Parse normalizes s ("nginx:1.27", "ghcr.io/o/a:v1@sha256:…").
func Parse(s string) (Ref, error) {
	if s == "" {
		return Ref{}, fmt.Errorf("%w: empty", ErrInvalid)
	}
	if len(s) > 4096 {
		return Ref{}, fmt.Errorf("%w: longer than 4096 characters", ErrInvalid)
	}
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return Ref{}, fmt.Errorf("%w %q: %v", ErrInvalid, s, err)
	}
	r := Ref{Domain: reference.Domain(named), Path: reference.Path(named)}
	if t, ok := named.(reference.Tagged); ok {
		r.Tag = t.Tag()
	}
	if d, ok := named.(reference.Digested); ok {
		r.Digest = d.Digest().String()
	}
	if r.Tag == "" && r.Digest == "" {
		r.Tag = DefaultTag
	}
	return r, nil
}

// MustParse is Parse for constants and tests; it panics on error.
func MustParse(s string) Ref {
	r, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return r
}

// ValidDigest reports whether d is a well-formed "algorithm:hex" digest.
func ValidDigest(d string) bool {
	return digest.Digest(d).Validate() == nil
}

// ValidTag reports whether t is a valid tag per the distribution spec.
func ValidTag(t string) bool {
	return len(t) <= 128 && reference.TagRegexp.MatchString(t) && reference.TagRegexp.FindString(t) == t
}

// Repo is the repository without tag or digest: "docker.io/library/nginx".
func (r Ref) Repo() string { return r.Domain + "/" + r.Path }

// String prints the normalized reference with whatever of tag and digest it has.
func (r Ref) String() string {
	s := r.Repo()
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + r.Digest
	}
	return s
}

// Familiar prints the reference as a user would type it ("nginx:1.27").
// A parsed reference is already normalized, so this is the inverse of
// Docker's normalization (as reference.FamiliarString does it) without
// parsing the reference again: Docker Hub's domain and the "library/" of
// its official images are left out.
func (r Ref) Familiar() string {
	if r.Domain != "docker.io" {
		return r.String()
	}
	f := r.String()[len("docker.io/"):]
	if rest, ok := strings.CutPrefix(f, "library/"); ok && !strings.Contains(r.Path[len("library/"):], "/") {
		f = rest
	}
	return f
}

// Tagged is the reference with its tag and without digest: "repo:tag".
func (r Ref) Tagged() Ref { r.Digest = ""; return r }

// WithTag returns the reference with tag t and no digest.
func (r Ref) WithTag(t string) Ref { r.Tag, r.Digest = t, ""; return r }

// WithDigest returns the reference pinned to d, keeping the tag:
// "repo:tag@sha256:…", the form shipwatch deploys (rule 1 of the design).
func (r Ref) WithDigest(d string) Ref { r.Digest = d; return r }

// SameRepo reports whether both references name the same repository.
func (r Ref) SameRepo(o Ref) bool { return r.Domain == o.Domain && r.Path == o.Path }

// IsDockerHub reports whether the reference is on Docker Hub.
func (r Ref) IsDockerHub() bool { return r.Domain == "docker.io" }

// Host is the registry host to talk to: Docker Hub's API host for docker.io.
func (r Ref) Host() string {
	if r.IsDockerHub() {
		return "index.docker.io"
	}
	return r.Domain
}

// IsLoopback reports whether the registry is on a loopback address, which
// Docker (and shipwatch) treat as plain-HTTP-allowed.
func (r Ref) IsLoopback() bool {
	host := r.Domain
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.HasSuffix(host, "]") {
		host = host[:i]
	}
	return host == "localhost" || strings.HasPrefix(host, "127.") || host == "[::1]"
}
