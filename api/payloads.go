package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/shipwatch/shipwatch/imageref"
)

// Webhook payload parsers. Each returns the hints of one delivery: none
// (and no error) for a well-formed event that is not a push, an error for
// a body that is not that registry's payload. Only the fields shipwatch
// needs are read; unknown fields are ignored (registries add fields).

// maxEvents bounds the events of one delivery that are looked at.
const maxEvents = 256

// errPayload marks a malformed payload; its text is safe to send back.
var errPayload = errors.New("malformed payload")

func payloadError(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errPayload}, args...)...)
}

func decodePayload(body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		var syntax *json.SyntaxError
		if errors.As(err, &syntax) {
			return payloadError("not valid JSON (at byte %d)", syntax.Offset)
		}
		return payloadError("not a JSON object of the expected shape")
	}
	return nil
}

// parseDockerHub reads a Docker Hub repository webhook
// (https://docs.docker.com/docker-hub/repos/manage/webhooks/): one push of
// push_data.tag to repository.repo_name on docker.io.
func parseDockerHub(body []byte) ([]Hint, error) {
	var p struct {
		PushData *struct {
			Tag string `json:"tag"`
		} `json:"push_data"`
		Repository *struct {
			RepoName  string `json:"repo_name"`
			Namespace string `json:"namespace"`
			Name      string `json:"name"`
		} `json:"repository"`
	}
	if err := decodePayload(body, &p); err != nil {
		return nil, err
	}
	if p.PushData == nil || p.Repository == nil {
		return nil, payloadError("not a Docker Hub push: push_data and repository are required")
	}
	repo := p.Repository.RepoName
	if repo == "" && p.Repository.Name != "" {
		repo = p.Repository.Namespace + "/" + p.Repository.Name
	}
	h, err := newHint("dockerhub", "docker.io", repo, p.PushData.Tag, "")
	if err != nil {
		return nil, err
	}
	return []Hint{h}, nil
}

// parseDistribution reads a CNCF distribution notification envelope
// (https://distribution.github.io/distribution/about/notifications/):
// events[] with action "push" of a manifest (blob pushes are skipped) to
// target.repository on request.host, or on registry when it is set (the
// ?registry= override for registries that see themselves under another
// name than the one in image references).
func parseDistribution(body []byte, registry string) ([]Hint, error) {
	var env struct {
		Events *[]struct {
			Action string `json:"action"`
			Target struct {
				MediaType  string `json:"mediaType"`
				Digest     string `json:"digest"`
				Repository string `json:"repository"`
				Tag        string `json:"tag"`
			} `json:"target"`
			Request struct {
				Host string `json:"host"`
			} `json:"request"`
		} `json:"events"`
	}
	if err := decodePayload(body, &env); err != nil {
		return nil, err
	}
	if env.Events == nil {
		return nil, payloadError("not a distribution notification: the events array is missing")
	}
	var hints []Hint
	for i, ev := range *env.Events {
		if i == maxEvents {
			break
		}
		if ev.Action != "push" || (ev.Target.Tag == "" && !isManifestType(ev.Target.MediaType)) {
			continue
		}
		host := registry
		if host == "" {
			host = ev.Request.Host
		}
		if host == "" {
			return nil, payloadError("events[%d]: request.host is empty; add ?registry=<host> to the webhook URL", i)
		}
		h, err := newHint("distribution", host, ev.Target.Repository, ev.Target.Tag, ev.Target.Digest)
		if err != nil {
			return nil, fmt.Errorf("events[%d]: %w", i, err)
		}
		hints = append(hints, h)
	}
	return hints, nil
}

// isManifestType tells manifest and index pushes from blob pushes.
func isManifestType(mt string) bool {
	return strings.Contains(mt, "manifest") || strings.Contains(mt, "image.index")
}

// parseHarbor reads a Harbor webhook in the Default format (type
// PUSH_ARTIFACT, event_data) or the CloudEvents format (type
// harbor.artifact.pushed, data): event_data.resources[] of
// repository.repo_full_name, the registry host taken from each
// resource_url unless registry is set.
func parseHarbor(body []byte, registry string) ([]Hint, error) {
	type data struct {
		Resources []struct {
			Digest      string `json:"digest"`
			Tag         string `json:"tag"`
			ResourceURL string `json:"resource_url"`
		} `json:"resources"`
		Repository *struct {
			Name         string `json:"name"`
			Namespace    string `json:"namespace"`
			RepoFullName string `json:"repo_full_name"`
		} `json:"repository"`
	}
	var p struct {
		Type      string `json:"type"`
		EventData *data  `json:"event_data"`
		Data      *data  `json:"data"`
	}
	if err := decodePayload(body, &p); err != nil {
		return nil, err
	}
	if p.Type == "" {
		return nil, payloadError("not a Harbor event: type is missing")
	}
	if p.Type != "PUSH_ARTIFACT" && p.Type != "harbor.artifact.pushed" {
		return nil, nil
	}
	d := p.EventData
	if d == nil {
		d = p.Data
	}
	if d == nil || d.Repository == nil {
		return nil, payloadError("Harbor push without event_data.repository")
	}
	repo := d.Repository.RepoFullName
	if repo == "" && d.Repository.Name != "" {
		repo = d.Repository.Namespace + "/" + d.Repository.Name
	}
	if len(d.Resources) == 0 {
		return nil, payloadError("Harbor push without resources")
	}
	var hints []Hint
	for i, res := range d.Resources {
		if i == maxEvents {
			break
		}
		host := registry
		if host == "" {
			ref, err := imageref.Parse(res.ResourceURL)
			if err != nil {
				return nil, payloadError("resources[%d]: resource_url is not an image reference; add ?registry=<host> to the webhook URL", i)
			}
			host = ref.Domain
		}
		tag := res.Tag
		if tag == res.Digest || imageref.ValidDigest(tag) {
			tag = "" // pushed by digest: Harbor repeats the digest as the tag
		}
		h, err := newHint("harbor", host, repo, tag, res.Digest)
		if err != nil {
			return nil, fmt.Errorf("resources[%d]: %w", i, err)
		}
		hints = append(hints, h)
	}
	return hints, nil
}

// parseGitHub reads GitHub's "registry_package" and "package" webhook
// events (event is the X-GitHub-Event header) for container packages on
// GHCR: action published or updated; other package types and actions are
// not pushes of images.
func parseGitHub(event string, body []byte) ([]Hint, error) {
	type pkg struct {
		Name           string `json:"name"`
		Namespace      string `json:"namespace"`
		PackageType    string `json:"package_type"`
		Ecosystem      string `json:"ecosystem"`
		PackageVersion *struct {
			Version           string `json:"version"`
			PackageURL        string `json:"package_url"`
			ContainerMetadata *struct {
				Tag struct {
					Name   string `json:"name"`
					Digest string `json:"digest"`
				} `json:"tag"`
			} `json:"container_metadata"`
		} `json:"package_version"`
		Registry *struct {
			URL string `json:"url"`
		} `json:"registry"`
	}
	var p struct {
		Action          string `json:"action"`
		RegistryPackage *pkg   `json:"registry_package"`
		Package         *pkg   `json:"package"`
	}
	if err := decodePayload(body, &p); err != nil {
		return nil, err
	}
	var k *pkg
	switch event {
	case "registry_package":
		k = p.RegistryPackage
	case "package":
		k = p.Package
	default:
		return nil, nil
	}
	if k == nil {
		return nil, payloadError("GitHub %s event without %s", event, event)
	}
	if p.Action != "published" && p.Action != "updated" {
		return nil, nil
	}
	if !strings.EqualFold(k.PackageType, "container") && !strings.EqualFold(k.Ecosystem, "container") {
		return nil, nil
	}
	var tag, digest string
	var ref imageref.Ref
	var refErr = errors.New("no package_url")
	if v := k.PackageVersion; v != nil {
		if m := v.ContainerMetadata; m != nil {
			tag, digest = m.Tag.Name, m.Tag.Digest
		}
		if digest == "" && imageref.ValidDigest(v.Version) {
			digest = v.Version
		}
		if v.PackageURL != "" {
			ref, refErr = imageref.Parse(v.PackageURL)
		}
	}
	host, repo := "", ""
	if refErr == nil {
		host, repo = ref.Domain, ref.Path
	} else {
		if k.Namespace == "" || k.Name == "" {
			return nil, payloadError("GitHub package without namespace and name")
		}
		host = "ghcr.io"
		if k.Registry != nil && k.Registry.URL != "" {
			if u, err := url.Parse(k.Registry.URL); err == nil && u.Host != "" {
				host = u.Host
			}
		}
		repo = strings.ToLower(k.Namespace) + "/" + strings.ToLower(k.Name)
	}
	h, err := newHint("github", host, repo, tag, digest)
	if err != nil {
		return nil, err
	}
	return []Hint{h}, nil
}

// newHint checks and normalizes what a payload says. The repository must be
// a plain name on registry (no tag, digest or other host smuggled in).
func newHint(source, registry, repository, tag, digest string) (Hint, error) {
	if !validHost(registry) {
		return Hint{}, payloadError("registry host %s is not a host[:port]", quote(registry))
	}
	if repository == "" || strings.ContainsAny(repository, ":@") || strings.HasPrefix(repository, "/") {
		return Hint{}, payloadError("repository %s is not a repository name", quote(repository))
	}
	ref, err := imageref.Parse(registry + "/" + repository)
	if err != nil {
		return Hint{}, payloadError("%s/%s is not a valid repository", quote(registry), quote(repository))
	}
	if !sameRegistry(ref.Domain, registry) {
		return Hint{}, payloadError("registry host %s cannot appear in an image reference (use a name with a dot or a port, or localhost); add ?registry=<host> to the webhook URL", quote(registry))
	}
	if tag != "" && !imageref.ValidTag(tag) {
		return Hint{}, payloadError("tag %s is not a valid tag", quote(tag))
	}
	if digest != "" && !imageref.ValidDigest(digest) {
		return Hint{}, payloadError("digest %s is not a valid digest", quote(digest))
	}
	return Hint{Source: source, Registry: ref.Domain, Repository: ref.Repo(), Tag: tag, Digest: digest}, nil
}

// validHost accepts host, host:port and [v6]:port, nothing else.
func validHost(h string) bool {
	if h == "" || len(h) > 255 {
		return false
	}
	for _, c := range h {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune(".-:[]", c)) {
			return false
		}
	}
	return true
}

// sameRegistry compares the domain imageref found with the host given,
// knowing Docker Hub's aliases.
func sameRegistry(domain, host string) bool {
	host = strings.ToLower(host)
	if domain == "docker.io" {
		return host == "docker.io" || host == "index.docker.io" || host == "registry-1.docker.io"
	}
	return strings.EqualFold(domain, host)
}
