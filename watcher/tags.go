package watcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// Bounds on tag listing: a page body, the pages and the tags of one
// repository. Real repositories stay far below (a few thousand tags).
const (
	maxTagPageSize = 4 << 20
	maxTagPages    = 1000
	maxTags        = 100_000
	tagPageRequest = 1000 // n= asked per page; registries answer with at most their own maximum
)

// listTags lists every tag of repo, following Link pagination (RFC 8288,
// distribution spec "Listing Tags"). Links must stay on this registry.
func (e *endpoint) listTags(ctx context.Context, repo string) ([]string, error) {
	subject := e.host + "/" + repo + " (tag list)"
	next := fmt.Sprintf("/v2/%s/tags/list?n=%d", repo, tagPageRequest)
	seen := map[string]bool{}
	var tags []string
	bad := func(status int, kind error, detail string, cause error) ([]string, error) {
		e.stats.errors.Add(1)
		return nil, &Error{Registry: e.host, Subject: subject, Status: status, Kind: kind, Detail: detail, Cause: cause, Hint: hintFor(kind, e.host, repo)}
	}
	for next != "" {
		if len(seen) >= maxTagPages {
			return bad(0, ErrTooLarge, fmt.Sprintf("more than %d pages", maxTagPages), nil)
		}
		seen[next] = true
		resp, err := e.do(ctx, call{method: http.MethodGet, url: next, repo: repo, kind: "tags", subject: subject,
			maxBody: maxTagPageSize, header: map[string]string{"Accept": "application/json"}})
		if err != nil {
			var re *Error
			if errors.As(err, &re) && re.Kind == ErrNotFound {
				re.Hint = fmt.Sprintf("repository %s/%s does not exist or the credentials for %s cannot see it; check the image name", e.host, repo, e.host)
			}
			return nil, err
		}
		var page struct {
			Tags []string `json:"tags"`
		}
		if err := json.Unmarshal(resp.body, &page); err != nil {
			return bad(resp.status, ErrInvalidResponse, "tag list is not valid JSON (truncated?)", err)
		}
		tags = append(tags, page.Tags...)
		if len(tags) > maxTags {
			return bad(resp.status, ErrTooLarge, fmt.Sprintf("more than %d tags", maxTags), nil)
		}
		next, err = nextLink(resp.header.Values("Link"), resp.url)
		if err != nil {
			return bad(resp.status, ErrInvalidResponse, "bad Link header", err)
		}
		if next != "" && seen[next] {
			return bad(resp.status, ErrInvalidResponse, "tag pagination loops", nil)
		}
	}
	return tags, nil
}

// nextLink returns the absolute URL of the rel="next" link, "" when there
// is none. A link to another host or scheme is an error: the registry's
// token must not travel elsewhere.
func nextLink(links []string, base *url.URL) (string, error) {
	for _, h := range links {
		for _, l := range strings.Split(h, ",") {
			l = strings.TrimSpace(l)
			if !strings.HasPrefix(l, "<") {
				continue
			}
			end := strings.IndexByte(l, '>')
			if end < 0 {
				return "", fmt.Errorf("unterminated link %q", oneLine(l))
			}
			target, params := l[1:end], l[end+1:]
			isNext := false
			for _, p := range strings.Split(params, ";") {
				k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
				if strings.EqualFold(strings.TrimSpace(k), "rel") {
					for _, r := range strings.Fields(strings.Trim(strings.TrimSpace(v), `"`)) {
						if strings.EqualFold(r, "next") {
							isNext = true
						}
					}
				}
			}
			if !isNext {
				continue
			}
			u, err := base.Parse(target)
			if err != nil {
				return "", fmt.Errorf("next link %q: %w", oneLine(target), err)
			}
			if u.Scheme != base.Scheme || u.Host != base.Host {
				return "", fmt.Errorf("next link goes to %s://%s, not to the registry", u.Scheme, u.Host)
			}
			return u.String(), nil
		}
	}
	return "", nil
}
