package compose

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/shipwatch/shipwatch/deployer"
)

// scalar is where a YAML scalar value is written in a file: the bytes
// file[start:end] are exactly the value text (without quotes).
type scalar struct {
	file       string
	content    []byte
	start, end int
	line       int
}

func (s scalar) raw() string { return string(s.content[s.start:s.end]) }

type yamlFile struct {
	path    string
	content []byte
	root    *yaml.Node
}

func readYAML(path string) (*yamlFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	return &yamlFile{path: path, content: b, root: &root}, nil
}

func deref(n *yaml.Node) *yaml.Node {
	for n != nil && (n.Kind == yaml.AliasNode || n.Kind == yaml.DocumentNode) {
		if n.Kind == yaml.AliasNode {
			n = n.Alias
		} else if len(n.Content) > 0 {
			n = n.Content[0]
		} else {
			return nil
		}
	}
	return n
}

// mapGet returns the value of key in mapping m, following aliases and
// merge keys ("<<: *base") the way YAML merges them: explicit keys win.
func mapGet(m *yaml.Node, key string) *yaml.Node {
	m = deref(m)
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	var merged []*yaml.Node
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if k.Value == key && k.Tag != "!!merge" {
			return v
		}
		if k.Tag == "!!merge" {
			if dv := deref(v); dv != nil && dv.Kind == yaml.SequenceNode {
				merged = append(merged, dv.Content...)
			} else {
				merged = append(merged, v)
			}
		}
	}
	for _, mm := range merged {
		if v := mapGet(mm, key); v != nil {
			return v
		}
	}
	return nil
}

// locateImage finds where the image: of service is written: the last of
// the compose files that sets it (override files win), following extends.
func locateImage(files []string, workingDir, service string) (scalar, error) {
	for i := len(files) - 1; i >= 0; i-- {
		f, err := readYAML(files[i])
		if err != nil {
			return scalar{}, err
		}
		node := mapGet(mapGet(f.root, "services"), service)
		if node == nil {
			continue
		}
		loc, found, err := locateInService(f, node, workingDir, service, 0)
		if err != nil || found {
			return loc, err
		}
	}
	return scalar{}, fmt.Errorf("%w: cannot find the image: of service %s in %s (defined through include:?); update it by hand",
		deployer.ErrUnsupported, service, strings.Join(files, ", "))
}

func locateInService(f *yamlFile, node *yaml.Node, workingDir, service string, depth int) (scalar, bool, error) {
	if img := mapGet(node, "image"); img != nil {
		loc, err := scalarAt(f, img)
		return loc, err == nil, err
	}
	ext := deref(mapGet(node, "extends"))
	if ext == nil {
		return scalar{}, false, nil
	}
	if depth > 10 {
		return scalar{}, false, fmt.Errorf("%w: extends chain of service %s is longer than 10", deployer.ErrUnsupported, service)
	}
	var base, file string
	switch ext.Kind {
	case yaml.ScalarNode:
		base = ext.Value
	case yaml.MappingNode:
		if s := deref(mapGet(ext, "service")); s != nil {
			base = s.Value
		}
		if fn := deref(mapGet(ext, "file")); fn != nil {
			file = fn.Value
		}
	}
	if base == "" {
		return scalar{}, false, fmt.Errorf("%w: service %s: extends without a service name", deployer.ErrUnsupported, service)
	}
	target := f
	if file != "" {
		if strings.Contains(file, "$") {
			return scalar{}, false, fmt.Errorf("%w: service %s extends an interpolated file %q", deployer.ErrUnsupported, service, file)
		}
		path := file
		if !filepath.IsAbs(path) {
			path = filepath.Join(filepath.Dir(f.path), path)
		}
		if !inside(workingDir, path) {
			return scalar{}, false, fmt.Errorf("%w: the image of service %s comes from %s (extends), outside the project directory %s; shipwatch only edits files of the project: update it by hand or move the image: into the project",
				deployer.ErrUnsupported, service, path, workingDir)
		}
		var err error
		if target, err = readYAML(path); err != nil {
			return scalar{}, false, err
		}
	}
	baseNode := mapGet(mapGet(target.root, "services"), base)
	if baseNode == nil {
		return scalar{}, false, fmt.Errorf("%w: service %s extends %s, which %s does not define", deployer.ErrUnsupported, service, base, target.path)
	}
	return locateInService(target, baseNode, workingDir, base, depth+1)
}

// inside reports whether path is dir or below it.
func inside(dir, path string) bool {
	rel, err := filepath.Rel(filepath.Clean(dir), filepath.Clean(path))
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}

// scalarAt returns the exact bytes of a single-line scalar node's value, so
// it can be replaced in place without touching anything else in the file.
func scalarAt(f *yamlFile, n *yaml.Node) (scalar, error) {
	n = deref(n)
	if n == nil || n.Kind != yaml.ScalarNode {
		return scalar{}, fmt.Errorf("%w: %s: image is not a plain value", deployer.ErrUnsupported, f.path)
	}
	if n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
		return scalar{}, fmt.Errorf("%w: %s:%d: image is a block scalar; write it on one line", deployer.ErrUnsupported, f.path, n.Line)
	}
	off, ok := offsetOf(f.content, n.Line, n.Column)
	if !ok {
		return scalar{}, fmt.Errorf("%w: %s:%d: cannot find the image value", deployer.ErrUnsupported, f.path, n.Line)
	}
	// The node starts at its anchor or tag, if it has any: "&img repo:1".
	c := f.content
	for off < len(c) && (c[off] == '&' || c[off] == '!') {
		for off < len(c) && c[off] != ' ' && c[off] != '\t' && c[off] != '\n' {
			off++
		}
		for off < len(c) && (c[off] == ' ' || c[off] == '\t') {
			off++
		}
	}
	start, end := off, off
	switch {
	case n.Style&yaml.DoubleQuotedStyle != 0, n.Style&yaml.SingleQuotedStyle != 0:
		q := byte('"')
		if n.Style&yaml.SingleQuotedStyle != 0 {
			q = '\''
		}
		if off >= len(c) || c[off] != q {
			return scalar{}, fmt.Errorf("%w: %s:%d: cannot find the quoted image value", deployer.ErrUnsupported, f.path, n.Line)
		}
		start = off + 1
		end = start + len(n.Value)
	default:
		end = start + len(n.Value)
	}
	if end > len(c) || string(c[start:end]) != n.Value || strings.ContainsAny(n.Value, "\n\\") {
		return scalar{}, fmt.Errorf("%w: %s:%d: the image value is written with escapes or over several lines; write it on one line", deployer.ErrUnsupported, f.path, n.Line)
	}
	if n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 && (end >= len(c) || c[end] != c[start-1]) {
		return scalar{}, fmt.Errorf("%w: %s:%d: the quoted image value has escapes; write it without", deployer.ErrUnsupported, f.path, n.Line)
	}
	return scalar{file: f.path, content: c, start: start, end: end, line: n.Line}, nil
}

// offsetOf converts a 1-based line and rune column into a byte offset.
func offsetOf(b []byte, line, col int) (int, bool) {
	off := 0
	for l := 1; l < line; l++ {
		i := indexByte(b[off:], '\n')
		if i < 0 {
			return 0, false
		}
		off += i + 1
	}
	for c := 1; c < col; c++ {
		if off >= len(b) || b[off] == '\n' {
			return 0, false
		}
		_, size := utf8.DecodeRune(b[off:])
		off += size
	}
	return off, true
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}
