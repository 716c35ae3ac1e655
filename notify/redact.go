package notify

import (
	"net/url"
	"regexp"
	"sort"
	"strings"
)

const redacted = "[redacted]"

// redactor removes the secrets of the configured services from text that
// is logged or returned: every URL in full, its user, password, path
// segments, query values and fragment (tokens hide in all of them, e.g.
// Slack's hooks.slack.com/services/T…/B…/X…), in plain and escaped form, and
// the values of webhook headers. Any other URL is removed whole, since
// errors of HTTP clients quote the URL they called.
type redactor struct {
	secrets []string // longest first, so that a secret containing another goes first
}

// minSecret: shorter fragments ("a", "en") are not worth redacting and
// would mangle every message.
const minSecret = 4

var anyURL = regexp.MustCompile(`[a-zA-Z][a-zA-Z0-9+.-]*://[^\s"'<>]+`)

func newRedactor(opts Options) *redactor {
	set := map[string]bool{}
	add := func(s string) {
		if len(s) < minSecret {
			return
		}
		set[s] = true
		set[url.QueryEscape(s)] = true
		set[url.PathEscape(s)] = true
	}
	addURL := func(raw string) {
		add(raw)
		u, err := url.Parse(raw)
		if err != nil {
			return
		}
		if u.User != nil {
			add(u.User.String())
			add(u.User.Username())
			if p, ok := u.User.Password(); ok {
				add(p)
			}
		}
		add(u.Path)
		add(u.RawPath)
		for _, seg := range strings.Split(u.Path, "/") {
			add(seg)
		}
		add(u.RawQuery)
		for _, vs := range u.Query() {
			for _, v := range vs {
				add(v)
			}
		}
		add(u.Fragment)
	}
	for _, raw := range opts.URLs {
		addURL(raw)
	}
	for _, w := range opts.Webhooks {
		addURL(w.URL)
		for _, v := range w.Headers {
			add(v)
		}
	}
	r := &redactor{}
	for s := range set {
		r.secrets = append(r.secrets, s)
	}
	sort.Slice(r.secrets, func(i, j int) bool { return len(r.secrets[i]) > len(r.secrets[j]) })
	return r
}

// String returns s without secrets.
func (r *redactor) String(s string) string {
	for _, secret := range r.secrets {
		s = strings.ReplaceAll(s, secret, redacted)
	}
	return anyURL.ReplaceAllString(s, "[url "+redacted+"]")
}
