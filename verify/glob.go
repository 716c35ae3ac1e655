package verify

import (
	"fmt"
	"regexp"
	"strings"
)

// compileGlob turns an image pattern into an anchored regexp over the
// normalized repository ("docker.io/library/nginx"). "**" matches any
// characters, "*" any characters but "/", "?" one character but "/".
func compileGlob(pattern string) (*regexp.Regexp, error) {
	if pattern == "" {
		return nil, fmt.Errorf("empty pattern")
	}
	if strings.ContainsAny(pattern, "@ \t\n") {
		return nil, fmt.Errorf("pattern %q: patterns match repositories; remove the digest or whitespace", pattern)
	}
	if strings.Contains(pattern, "***") {
		return nil, fmt.Errorf("pattern %q: use * or **", pattern)
	}
	pattern = normalizePattern(pattern)
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(pattern); i++ {
		switch c := pattern[i]; c {
		case '*':
			if i+1 < len(pattern) && pattern[i+1] == '*' {
				b.WriteString(".*")
				i++
			} else {
				b.WriteString("[^/]*")
			}
		case '?':
			b.WriteString("[^/]")
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString("$")
	return regexp.Compile(b.String())
}

// normalizePattern applies Docker's normalization to a pattern without a
// registry host: "nginx" → "docker.io/library/nginx", "org/app" →
// "docker.io/org/app". A first segment with a glob character is left alone,
// so "**" still matches everything.
func normalizePattern(p string) string {
	first, rest, hasSlash := strings.Cut(p, "/")
	if strings.ContainsAny(first, "*?") {
		return p
	}
	if hasSlash && (strings.ContainsAny(first, ".:") || first == "localhost") {
		if first == "index.docker.io" || first == "registry-1.docker.io" {
			first = "docker.io"
		}
		if first == "docker.io" && !strings.Contains(rest, "/") && !strings.ContainsAny(rest, "*?") {
			rest = "library/" + rest
		}
		return first + "/" + rest
	}
	if !hasSlash {
		return "docker.io/library/" + p
	}
	return "docker.io/" + p
}
