package watcher

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"net/url"
	"strings"
	"sync"
)

// Bounds on tag listing: a page body, all the pages, the pages and the
// tags of one repository. Real repositories stay far below (a few
// thousand tags).
const (
	maxTagPageSize = 4 << 20
	maxTagBytes    = 16 << 20
	maxTagPages    = 1000
	maxTags        = 100_000
	tagPageRequest = 1000 // n= asked per page; registries answer with at most their own maximum
)

// tagList is a repository's tag list as the registry sent it: the page
// bodies and a digest of them. The pages are decoded on first use, so a
// check whose list is byte for byte the one its previous selection came
// from (see selections) neither decodes nor selects again.
type tagList struct {
	sum   [sha256.Size]byte
	pages []tagPage
	bad   func(status int, kind error, detail string, cause error) error

	once sync.Once
	tags []string
	err  error
}

type tagPage struct {
	status int
	body   []byte
}

// decode returns the tags of every page, in order.
func (l *tagList) decode() ([]string, error) {
	l.once.Do(func() {
		var tags []string
		var page struct {
			Tags []string `json:"tags"`
		}
		for _, p := range l.pages {
			page.Tags = page.Tags[:0]
			if err := json.Unmarshal(p.body, &page); err != nil {
				l.err = l.bad(p.status, ErrInvalidResponse, "tag list is not valid JSON (truncated?)", err)
				return
			}
			tags = append(tags, page.Tags...)
			if len(tags) > maxTags {
				l.err = l.bad(p.status, ErrTooLarge, fmt.Sprintf("more than %d tags", maxTags), nil)
				return
			}
		}
		l.tags, l.pages = tags, nil
	})
	return l.tags, l.err
}

// addPage adds one page's body to the list's digest, length first so
// that no two sequences of pages hash alike.
func addPage(h hash.Hash, body []byte) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(body)))
	h.Write(n[:])
	h.Write(body)
}

// listTags fetches every page of repo's tag list, following Link
// pagination (RFC 8288, distribution spec "Listing Tags"). Links must stay
// on this registry. The pages are decoded by the tagList, when needed.
func (e *endpoint) listTags(ctx context.Context, repo string) (*tagList, error) {
	subject := e.host + "/" + repo + " (tag list)"
	next := fmt.Sprintf("/v2/%s/tags/list?n=%d", repo, tagPageRequest)
	seen := map[string]bool{}
	list := &tagList{bad: func(status int, kind error, detail string, cause error) error {
		e.stats.errors.Add(1)
		return &Error{Registry: e.host, Subject: subject, Status: status, Kind: kind, Detail: detail, Cause: cause, Hint: hintFor(kind, e.host, repo)}
	}}
	bad := func(status int, kind error, detail string, cause error) (*tagList, error) {
		return nil, list.bad(status, kind, detail, cause)
	}
	sum := sha256.New()
	size := 0
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
		if size += len(resp.body); size > maxTagBytes {
			return bad(resp.status, ErrTooLarge, fmt.Sprintf("more than %d MiB of tags", maxTagBytes>>20), nil)
		}
		addPage(sum, resp.body)
		list.pages = append(list.pages, tagPage{status: resp.status, body: resp.body})
		next, err = nextLink(resp.header.Values("Link"), resp.url)
		if err != nil {
			return bad(resp.status, ErrInvalidResponse, "bad Link header", err)
		}
		if next != "" && seen[next] {
			return bad(resp.status, ErrInvalidResponse, "tag pagination loops", nil)
		}
	}
	sum.Sum(list.sum[:0])
	return list, nil
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
