package api

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func readPayload(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "webhooks", name))
	if err != nil {
		t.Fatalf("read payload: %v", err)
	}
	return data
}

const (
	appDigest     = "sha256:b8f2f1d1c7d6b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7"
	harborDigest  = "sha256:954b378c375d852eb3c63ab88978f640b4348b01c1b3456a024a81536dafbbf4"
	ghcrDigest    = "sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
	dockerHubRepo = "docker.io/acme/shop"
)

func TestParsersReadDocumentedPayloads(t *testing.T) {
	tests := []struct {
		name  string
		parse func([]byte) ([]Hint, error)
		file  string
		want  []Hint
	}{
		{"docker hub", parseDockerHub, "dockerhub.json",
			[]Hint{{Source: "dockerhub", Registry: "docker.io", Repository: dockerHubRepo, Tag: "1.4.2"}}},
		{"distribution: manifest push kept, blob push and pull skipped",
			func(b []byte) ([]Hint, error) { return parseDistribution(b, "") }, "distribution.json",
			[]Hint{{Source: "distribution", Registry: "registry.example.com:5000", Repository: "registry.example.com:5000/team/app", Tag: "2.1.0", Digest: appDigest}}},
		{"distribution with ?registry= override",
			func(b []byte) ([]Hint, error) { return parseDistribution(b, "registry.internal:443") }, "distribution.json",
			[]Hint{{Source: "distribution", Registry: "registry.internal:443", Repository: "registry.internal:443/team/app", Tag: "2.1.0", Digest: appDigest}}},
		{"harbor default format",
			func(b []byte) ([]Hint, error) { return parseHarbor(b, "") }, "harbor.json",
			[]Hint{{Source: "harbor", Registry: "harbor.example.com", Repository: "harbor.example.com/library/billing", Tag: "v3.2.0", Digest: harborDigest}}},
		{"harbor cloudevents, pushed by digest (tag repeats the digest)",
			func(b []byte) ([]Hint, error) { return parseHarbor(b, "") }, "harbor-cloudevents.json",
			[]Hint{{Source: "harbor", Registry: "harbor.example.com:8443", Repository: "harbor.example.com:8443/team/worker", Digest: harborDigest}}},
		{"github registry_package",
			func(b []byte) ([]Hint, error) { return parseGitHub("registry_package", b) }, "github-registry-package.json",
			[]Hint{{Source: "github", Registry: "ghcr.io", Repository: "ghcr.io/acme-corp/api-server", Tag: "v2.3.1", Digest: ghcrDigest}}},
		{"github package (no package_url: namespace lowercased)",
			func(b []byte) ([]Hint, error) { return parseGitHub("package", b) }, "github-package.json",
			[]Hint{{Source: "github", Registry: "ghcr.io", Repository: "ghcr.io/acme-corp/api-server", Tag: "v2.3.1", Digest: ghcrDigest}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.parse(readPayload(t, tt.file))
			if err != nil {
				t.Fatalf("parse: got error %v, want none", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("hints:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParsersIgnoreWhatIsNotAPush(t *testing.T) {
	tests := []struct {
		name  string
		parse func([]byte) ([]Hint, error)
		body  string
	}{
		{"distribution pull", func(b []byte) ([]Hint, error) { return parseDistribution(b, "") },
			`{"events":[{"action":"pull","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","repository":"a/b","tag":"1"},"request":{"host":"r.example.com"}}]}`},
		{"distribution delete", func(b []byte) ([]Hint, error) { return parseDistribution(b, "") },
			`{"events":[{"action":"delete","target":{"repository":"a/b","digest":"` + appDigest + `"},"request":{"host":"r.example.com"}}]}`},
		{"distribution blob push", func(b []byte) ([]Hint, error) { return parseDistribution(b, "") },
			`{"events":[{"action":"push","target":{"mediaType":"application/octet-stream","repository":"a/b","digest":"` + appDigest + `"},"request":{"host":"r.example.com"}}]}`},
		{"distribution empty envelope", func(b []byte) ([]Hint, error) { return parseDistribution(b, "") }, `{"events":[]}`},
		{"harbor pull", func(b []byte) ([]Hint, error) { return parseHarbor(b, "") },
			`{"type":"PULL_ARTIFACT","event_data":{"resources":[{"tag":"1","resource_url":"h.example.com/a/b:1"}],"repository":{"repo_full_name":"a/b"}}}`},
		{"harbor scan", func(b []byte) ([]Hint, error) { return parseHarbor(b, "") }, `{"type":"harbor.scan.completed","data":{}}`},
		{"github npm package", func(b []byte) ([]Hint, error) { return parseGitHub("package", b) },
			`{"action":"published","package":{"name":"lib","namespace":"acme","package_type":"npm"}}`},
		{"github deleted", func(b []byte) ([]Hint, error) { return parseGitHub("registry_package", b) },
			`{"action":"deleted","registry_package":{"name":"app","namespace":"acme","package_type":"CONTAINER"}}`},
		{"github other event", func(b []byte) ([]Hint, error) { return parseGitHub("push", b) }, `{"ref":"refs/heads/main"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.parse([]byte(tt.body))
			if err != nil {
				t.Fatalf("parse: got error %v, want none", err)
			}
			if len(got) != 0 {
				t.Errorf("hints: got %+v, want none", got)
			}
		})
	}
}

func TestParsersRejectMalformedPayloads(t *testing.T) {
	dist := func(b []byte) ([]Hint, error) { return parseDistribution(b, "") }
	harbor := func(b []byte) ([]Hint, error) { return parseHarbor(b, "") }
	gh := func(b []byte) ([]Hint, error) { return parseGitHub("registry_package", b) }
	tests := []struct {
		name    string
		parse   func([]byte) ([]Hint, error)
		body    string
		wantMsg string
	}{
		{"not json", parseDockerHub, `{"push_data":`, "not valid JSON"},
		{"json array", parseDockerHub, `[1,2]`, "expected shape"},
		{"docker hub without repository", parseDockerHub, `{"push_data":{"tag":"1"}}`, "push_data and repository are required"},
		{"docker hub bad tag", parseDockerHub, `{"push_data":{"tag":"-bad tag"},"repository":{"repo_name":"a/b"}}`, "not a valid tag"},
		{"docker hub repository with a tag", parseDockerHub, `{"push_data":{"tag":"1"},"repository":{"repo_name":"a/b:evil"}}`, "not a repository name"},
		{"docker hub uppercase repository", parseDockerHub, `{"push_data":{"tag":"1"},"repository":{"repo_name":"Acme/Shop"}}`, "not a valid repository"},
		{"distribution without events", dist, `{"foo":1}`, "events array is missing"},
		{"distribution without host", dist,
			`{"events":[{"action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","repository":"a/b","tag":"1"}}]}`, "?registry="},
		{"distribution host that is not a registry domain", dist,
			`{"events":[{"action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","repository":"a/b","tag":"1"},"request":{"host":"registry"}}]}`, "cannot appear in an image reference"},
		{"distribution host with a path", dist,
			`{"events":[{"action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","repository":"a/b","tag":"1"},"request":{"host":"evil.example.com/x"}}]}`, "not a host"},
		{"distribution bad digest", dist,
			`{"events":[{"action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","repository":"a/b","digest":"sha256:xyz"},"request":{"host":"r.example.com"}}]}`, "not a valid digest"},
		{"harbor without type", harbor, `{"event_data":{}}`, "type is missing"},
		{"harbor push without repository", harbor, `{"type":"PUSH_ARTIFACT","event_data":{"resources":[]}}`, "without event_data.repository"},
		{"harbor push without resources", harbor, `{"type":"PUSH_ARTIFACT","event_data":{"repository":{"repo_full_name":"a/b"}}}`, "without resources"},
		{"harbor resource_url unusable", harbor,
			`{"type":"PUSH_ARTIFACT","event_data":{"resources":[{"tag":"1","resource_url":"::::"}],"repository":{"repo_full_name":"a/b"}}}`, "?registry="},
		{"github without the package object", gh, `{"action":"published"}`, "without registry_package"},
		{"github without url, namespace or name", gh, `{"action":"published","registry_package":{"package_type":"CONTAINER"}}`, "without namespace and name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.parse([]byte(tt.body))
			if err == nil {
				t.Fatalf("parse: got hints %+v and no error, want an error", got)
			}
			if !errors.Is(err, errPayload) {
				t.Errorf("error %q: got no errPayload in its chain, want it", err)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error: got %q, want it to contain %q", err, tt.wantMsg)
			}
		})
	}
}

func TestNewHintNormalizes(t *testing.T) {
	tests := []struct {
		registry, repo string
		want           string
	}{
		{"docker.io", "nginx", "docker.io/library/nginx"},
		{"index.docker.io", "library/nginx", "docker.io/library/nginx"},
		{"127.0.0.1:5000", "demo/app", "127.0.0.1:5000/demo/app"},
		{"localhost", "demo/app", "localhost/demo/app"},
		{"[::1]:5000", "demo/app", "[::1]:5000/demo/app"},
	}
	for _, tt := range tests {
		h, err := newHint("test", tt.registry, tt.repo, "", "")
		if err != nil {
			t.Errorf("newHint(%q, %q): got error %v, want none", tt.registry, tt.repo, err)
			continue
		}
		if h.Repository != tt.want {
			t.Errorf("newHint(%q, %q): got repository %q, want %q", tt.registry, tt.repo, h.Repository, tt.want)
		}
	}
}
