package watcher

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/opencontainers/go-digest"
)

// Registry answers are outside input: a hostile or broken registry must
// never make the watcher panic, and what the parsers accept must be
// well-formed. CI runs each target briefly (make fuzz-short); see
// docs/faults.md for the longer run.

// FuzzParseManifest: a manifest body with the Content-Type the registry sent.
func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3b","size":7,"platform":{"os":"linux","architecture":"amd64"}}]}`), MediaTypeOCIIndex)
	f.Add([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"digest":"sha256:6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3b"},"layers":[]}`), "")
	f.Add([]byte(`{"schemaVersion":1}`), "application/json")
	f.Add([]byte(`{"schemaVersion":2,"manifests":[]}`), "application/octet-stream")
	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		info, err := parseManifest(body, normalizeMediaType(contentType))
		if err != nil {
			return
		}
		if !isKnownManifest(info.mediaType) {
			t.Fatalf("accepted media type %q", info.mediaType)
		}
		if isIndex(info.mediaType) {
			if len(info.children) == 0 {
				t.Fatalf("accepted an index without manifests")
			}
			for _, c := range info.children {
				if _, err := digest.Parse(c.Digest); err != nil {
					t.Fatalf("accepted child digest %q: %v", c.Digest, err)
				}
			}
		} else if info.children != nil {
			t.Fatalf("image manifest with children %v", info.children)
		}
	})
}

// FuzzNextLink: the Link header of a tag list page. The next link must
// stay on the registry (its token must not travel elsewhere).
func FuzzNextLink(f *testing.F) {
	f.Add(`</v2/demo/app/tags/list?n=2&last=1.1>; rel="next"`)
	f.Add(`<https://evil.example/v2/x/tags/list>; rel="next"`)
	f.Add(`<//evil.example/x>; rel=next, </a>; rel="prev"`)
	f.Add(`<http://registry.example:5000/x>; rel="next"`)
	f.Add(`<`)
	base, _ := url.Parse("https://registry.example:5000/v2/demo/app/tags/list?n=1000")
	f.Fuzz(func(t *testing.T, link string) {
		next, err := nextLink([]string{link}, base)
		if err != nil || next == "" {
			return
		}
		u, err := url.Parse(next)
		if err != nil {
			t.Fatalf("next link %q does not parse: %v", next, err)
		}
		if u.Scheme != base.Scheme || u.Host != base.Host {
			t.Fatalf("next link %q leaves the registry %s", next, base.Host)
		}
	})
}

// FuzzParseChallenges: WWW-Authenticate headers.
func FuzzParseChallenges(f *testing.F) {
	f.Add(`Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"`)
	f.Add(`Basic realm="Registry Realm"`)
	f.Add(`Basic realm="a", Bearer realm="b,c",service=x`)
	f.Add(`Bearer realm="unterminated`)
	f.Add(`, ,=,"`)
	f.Fuzz(func(t *testing.T, h string) {
		c := parseChallenges([]string{h})
		switch c.scheme {
		case "", "basic", "bearer":
		default:
			t.Fatalf("preferred challenge has scheme %q", c.scheme)
		}
		if c.scheme == "" && (c.realm != "" || c.service != "") {
			t.Fatalf("no challenge but realm %q service %q", c.realm, c.service)
		}
	})
}

// FuzzParseToken: a token endpoint's answer.
func FuzzParseToken(f *testing.F) {
	f.Add([]byte(`{"token":"abc","expires_in":300,"issued_at":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"access_token":"abc"}`))
	f.Add([]byte(`{"token":""}`))
	f.Add([]byte(`{"expires_in":-5,"token":"x"}`))
	f.Add([]byte(`{"expires_in":9999999999,"token":"x"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		tok, expires, err := parseToken(body)
		if err != nil {
			return
		}
		if tok == "" {
			t.Fatalf("accepted an empty token")
		}
		if d := tokenLifetime(expires); d < 0 {
			t.Fatalf("token lifetime %s for expires_in %d", d, expires)
		}
	})
}

// FuzzRegistryErrors: error bodies and Retry-After headers. Only
// distribution error codes may come out of an error body (messages are free
// text a registry or proxy could fill with anything), and a Retry-After is
// never negative.
func FuzzRegistryErrors(f *testing.F) {
	f.Add([]byte(`{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}`), "120")
	f.Add([]byte(`{"errors":[{"code":"token=secret","message":"x"}]}`), "Wed, 21 Oct 2015 07:28:00 GMT")
	f.Add([]byte(`not json`), "-1")
	f.Fuzz(func(t *testing.T, body []byte, retry string) {
		codes := registryCodes(body)
		for _, c := range strings.Split(strings.TrimPrefix(codes, " "), ", ") {
			for _, r := range c {
				if !(r >= 'A' && r <= 'Z') && r != '_' {
					t.Fatalf("registry code %q let through free text", c)
				}
			}
		}
		if !utf8.ValidString(codes) {
			t.Fatalf("codes %q not UTF-8", codes)
		}
		h := http.Header{}
		h.Set("Retry-After", retry)
		if d, ok := retryAfter(h, time.Unix(1_700_000_000, 0)); ok && d < 0 {
			t.Fatalf("Retry-After %q gave %s", retry, d)
		}
	})
}
