package compose

import (
	"fmt"
	"maps"
	"os"
	"strings"

	"github.com/compose-spec/compose-go/v2/dotenv"

	"github.com/shipwatch/shipwatch/deployer"
)

// locateEnvVar finds where name gets its value in the env files: the last
// definition in the last file that defines it, as Compose reads them.
// found is false when no file defines it.
func locateEnvVar(files []string, name string) (loc scalar, found bool, err error) {
	for i := len(files) - 1; i >= 0; i-- {
		b, err := os.ReadFile(files[i])
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return scalar{}, false, fmt.Errorf("read env file: %w", err)
		}
		if loc, ok, err := envLine(files[i], b, name); err != nil || ok {
			return loc, ok, err
		}
	}
	return scalar{}, false, nil
}

// envLine returns the span of the value of the last line that defines name
// in an env file, quotes excluded. Values that use escapes, variable
// expansion or several lines are refused: shipwatch rewrites only what it
// reads exactly.
func envLine(path string, b []byte, name string) (scalar, bool, error) {
	var last scalar
	found := false
	off := 0
	for lineNo := 1; off < len(b); lineNo++ {
		end := indexByte(b[off:], '\n')
		if end < 0 {
			end = len(b) - off
		}
		line := string(b[off : off+end])
		start := off
		off += end + 1

		i := len(line) - len(strings.TrimLeft(line, " \t"))
		rest := line[i:]
		if after, ok := strings.CutPrefix(rest, "export "); ok {
			i += len(rest) - len(strings.TrimLeft(after, " \t"))
			rest = line[i:]
		}
		sep := strings.IndexAny(rest, "=:")
		if sep < 0 || strings.TrimRight(rest[:sep], " \t") != name {
			continue
		}
		v := i + sep + 1
		for v < len(line) && (line[v] == ' ' || line[v] == '\t') {
			v++
		}
		val := line[v:]
		var s, e int
		switch {
		case strings.HasPrefix(val, `"`) || strings.HasPrefix(val, `'`):
			q := val[0]
			closing := strings.IndexByte(val[1:], q)
			if closing < 0 {
				return scalar{}, false, fmt.Errorf("%w: %s:%d: %s has a quoted value over several lines; write it on one line", deployer.ErrUnsupported, path, lineNo, name)
			}
			s, e = v+1, v+1+closing
		default:
			e = len(val)
			if c := strings.Index(val, " #"); c >= 0 {
				e = c
			}
			e = len(strings.TrimRight(val[:e], " \t\r"))
			s, e = v, v+e
		}
		if strings.ContainsAny(line[s:e], `$\`) {
			return scalar{}, false, fmt.Errorf("%w: %s:%d: %s is built from other variables or escapes; write a plain value", deployer.ErrUnsupported, path, lineNo, name)
		}
		last = scalar{file: path, content: b, start: start + s, end: start + e, line: lineNo}
		found = true
	}
	return last, found, nil
}

// checkEnvEdit proves that an env file edit sets name to want and changes
// nothing else, by parsing both versions as Compose does.
func checkEnvEdit(before, after []byte, name, want string) error {
	lookup := func(string) (string, bool) { return "", false }
	old, err := dotenv.UnmarshalBytesWithLookup(before, lookup)
	if err != nil {
		return fmt.Errorf("parse env file: %w", err)
	}
	got, err := dotenv.UnmarshalBytesWithLookup(after, lookup)
	if err != nil {
		return fmt.Errorf("parse rewritten env file: %w", err)
	}
	if got[name] != want {
		return fmt.Errorf("rewritten env file sets %s=%q, want %q", name, got[name], want)
	}
	old[name] = want
	if !maps.Equal(old, got) {
		return fmt.Errorf("rewriting %s would change other variables of the env file", name)
	}
	return nil
}
