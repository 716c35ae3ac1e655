package compose

import (
	"fmt"
	"strings"
)

// token is one piece of a Compose interpolation template
// ("registry/app:${TAG:-1.0}"): a literal or a variable reference. Offsets
// are byte offsets into the template as written.
type token struct {
	start, end int    // the token's span in the template
	literal    string // literal tokens: the text it stands for ("$$" → "$")
	escaped    bool   // a "$$" literal: not editable in place
	name       string // variable tokens: the variable name
	op         string // "", ":-", "-", ":?", "?", ":+", "+"
	arg        string // the default, alternative or error text after op
	argStart   int    // offset of arg in the template
}

func (t token) isVar() bool { return t.name != "" }

// parseTemplate splits a Compose interpolation template into tokens. Nested
// references inside a default ("${A:-${B}}") are refused: shipwatch only
// rewrites what it can follow exactly.
func parseTemplate(s string) ([]token, error) {
	var toks []token
	lit := -1 // start of the literal being collected
	flush := func(end int) {
		if lit >= 0 && end > lit {
			toks = append(toks, token{start: lit, end: end, literal: s[lit:end]})
		}
		lit = -1
	}
	for i := 0; i < len(s); {
		if s[i] != '$' {
			if lit < 0 {
				lit = i
			}
			i++
			continue
		}
		flush(i)
		if i+1 >= len(s) {
			return nil, fmt.Errorf("%q: a lone $ at the end", s)
		}
		switch c := s[i+1]; {
		case c == '$':
			toks = append(toks, token{start: i, end: i + 2, literal: "$", escaped: true})
			i += 2
		case c == '{':
			closing := strings.IndexByte(s[i+2:], '}')
			if closing < 0 {
				return nil, fmt.Errorf("%q: unclosed ${", s)
			}
			body := s[i+2 : i+2+closing]
			if strings.ContainsAny(body, "${") {
				return nil, fmt.Errorf("%q: nested variable references", s)
			}
			n := nameLen(body)
			if n == 0 {
				return nil, fmt.Errorf("%q: invalid variable name in ${%s}", s, body)
			}
			t := token{start: i, end: i + 3 + closing, name: body[:n]}
			rest := body[n:]
			for _, op := range []string{":-", ":?", ":+", "-", "?", "+"} {
				if strings.HasPrefix(rest, op) {
					t.op, t.arg, t.argStart = op, rest[len(op):], i+2+n+len(op)
					break
				}
			}
			if t.op == "" && rest != "" {
				return nil, fmt.Errorf("%q: unsupported form ${%s}", s, body)
			}
			toks = append(toks, t)
			i = t.end
		default:
			n := nameLen(s[i+1:])
			if n == 0 {
				return nil, fmt.Errorf("%q: a $ not followed by a variable name", s)
			}
			toks = append(toks, token{start: i, end: i + 1 + n, name: s[i+1 : i+1+n]})
			i += 1 + n
		}
	}
	flush(len(s))
	return toks, nil
}

// nameLen returns the length of the variable name at the start of s.
func nameLen(s string) int {
	for i := 0; i < len(s); i++ {
		c := s[i]
		letter := c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
		if !letter && (i == 0 || c < '0' || c > '9') {
			return i
		}
	}
	return len(s)
}

// expand returns what the token stands for in env, and whether the value
// came from the token's own default text (arg) rather than from env.
func (t token) expand(env map[string]string) (value string, fromArg bool) {
	if !t.isVar() {
		return t.literal, false
	}
	v, set := env[t.name]
	switch t.op {
	case ":-":
		if v == "" {
			return t.arg, true
		}
	case "-":
		if !set {
			return t.arg, true
		}
	case ":+":
		if v != "" {
			return t.arg, true
		}
		return "", false
	case "+":
		if set {
			return t.arg, true
		}
		return "", false
	}
	return v, false
}
