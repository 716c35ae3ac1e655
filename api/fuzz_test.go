package api

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/shipwatch/shipwatch/imageref"
)

// checkHints asserts what every parser promises of the hints it returns.
func checkHints(t *testing.T, hints []Hint, err error) {
	if err != nil {
		if len(hints) != 0 {
			t.Fatalf("got hints %+v with error %v, want none", hints, err)
		}
		if len(err.Error()) > 2000 {
			t.Fatalf("error message of %d bytes, want a bounded message", len(err.Error()))
		}
		return
	}
	for _, h := range hints {
		ref, perr := imageref.Parse(h.Repository)
		if perr != nil || ref.Repo() != h.Repository || ref.Domain != h.Registry {
			t.Fatalf("hint %+v: repository is not a normalized repository of its registry (%v)", h, perr)
		}
		if h.Tag != "" && !imageref.ValidTag(h.Tag) {
			t.Fatalf("hint %+v: invalid tag", h)
		}
		if h.Digest != "" && !imageref.ValidDigest(h.Digest) {
			t.Fatalf("hint %+v: invalid digest", h)
		}
		if h.Source == "" {
			t.Fatalf("hint %+v: no source", h)
		}
	}
}

func seedPayloads(f *testing.F, files ...string) {
	for _, name := range files {
		f.Add(readPayload(f, name))
	}
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`[]`))
}

func FuzzParseDockerHub(f *testing.F) {
	seedPayloads(f, "dockerhub.json")
	f.Fuzz(func(t *testing.T, body []byte) {
		hints, err := parseDockerHub(body)
		checkHints(t, hints, err)
	})
}

func FuzzParseDistribution(f *testing.F) {
	seedPayloads(f, "distribution.json")
	f.Fuzz(func(t *testing.T, body []byte) {
		hints, err := parseDistribution(body, "")
		checkHints(t, hints, err)
	})
}

func FuzzParseHarbor(f *testing.F) {
	seedPayloads(f, "harbor.json", "harbor-cloudevents.json")
	f.Fuzz(func(t *testing.T, body []byte) {
		hints, err := parseHarbor(body, "")
		checkHints(t, hints, err)
	})
}

func FuzzParseGitHub(f *testing.F) {
	seedPayloads(f, "github-registry-package.json", "github-package.json")
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, event := range []string{"registry_package", "package"} {
			hints, err := parseGitHub(event, body)
			checkHints(t, hints, err)
		}
	})
}

// FuzzRequestBodies sends arbitrary bodies to every endpoint that takes
// one: the answer is 200 after a backend call, or a JSON error without a
// backend call, and never a panic.
func FuzzRequestBodies(f *testing.F) {
	for _, seed := range []string{
		`{"targets":["a","b"]}`, `{"target":"a","to":"1.2","dry_run":true,"allow_drift":false}`,
		`{"target":"a","candidate":"docker.io/acme/shop:1.5@` + appDigest + `"}`, `{"target":"a","to":"` + appDigest + `"}`,
		`{"target":"a","x":1}`, `{"targets":null}`, `{"target":"\u0000"}`, ``, `[]`, `{"target":1e999}`,
	} {
		f.Add(seed)
	}
	fake := &fakeBackend{}
	s, err := New(fake, Options{Token: testToken, WebhookSecret: testSecret})
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	paths := []string{"/v1/check", "/v1/rollouts", "/v1/rollbacks", "/v1/approvals"}
	f.Fuzz(func(t *testing.T, body string) {
		for _, path := range paths {
			req := httptest.NewRequest("POST", path, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+testToken)
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			before := len(fake.called())
			s.Handler().ServeHTTP(rec, req)
			called := len(fake.called()) > before
			switch {
			case rec.Code == 200 && called:
			case rec.Code >= 400 && rec.Code < 500 && !called:
				var e struct{ Error string }
				if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error == "" {
					t.Fatalf("POST %s %q: error body %q is not {\"error\": ...}", path, body, rec.Body.String())
				}
				if strings.Contains(e.Error, testToken) {
					t.Fatalf("POST %s: error echoes the token", path)
				}
			default:
				t.Fatalf("POST %s %q: got %d (backend called: %t), want 200 with a call or 4xx without", path, body, rec.Code, called)
			}
		}
	})
}
