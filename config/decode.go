package config

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// FieldError is one problem in a config file: where it is and what to do.
type FieldError struct {
	File string
	Line int
	Path string // "targets[0].policy.semver"
	Msg  string
}

func (e *FieldError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(":")
	}
	if e.Line > 0 {
		fmt.Fprintf(&b, "%d:", e.Line)
	}
	if b.Len() > 0 {
		b.WriteString(" ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// decoder turns a YAML node tree into Go values strictly: every key must be
// a known field, every scalar must convert to the field's type, and every
// error names the line and the field path. It is written out by hand (rather
// than yaml.v3's KnownFields) so that errors carry the path and list the
// allowed keys.
type decoder struct {
	file   string
	lookup func(string) (string, bool) // environment for ${VAR}
	errs   []error
	lines  map[string]int // field path → line, for validation errors
}

const maxErrors = 20

func (d *decoder) fail(node *yaml.Node, path, format string, args ...any) {
	if len(d.errs) >= maxErrors {
		return
	}
	line := 0
	if node != nil {
		line = node.Line
	}
	d.errs = append(d.errs, &FieldError{File: d.file, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

var (
	durationType = reflect.TypeOf(Duration(0))
	secretType   = reflect.TypeOf(Secret{})
)

func (d *decoder) decode(node *yaml.Node, v reflect.Value, path string) {
	if node.Kind == yaml.DocumentNode {
		if len(node.Content) == 0 {
			return
		}
		node = node.Content[0]
	}
	if node.Kind == yaml.AliasNode {
		node = node.Alias
	}
	d.lines[path] = node.Line
	if v.Kind() == reflect.Pointer {
		if isNull(node) {
			return
		}
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.decode(node, v.Elem(), path)
		return
	}
	switch v.Type() {
	case durationType:
		d.decodeDuration(node, v, path)
		return
	case secretType:
		if s, ok := d.scalar(node, path, "a string"); ok {
			v.Set(reflect.ValueOf(Secret{value: s}))
		}
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.decodeStruct(node, v, path)
	case reflect.Map:
		d.decodeMap(node, v, path)
	case reflect.Slice:
		d.decodeSlice(node, v, path)
	case reflect.String:
		if s, ok := d.scalar(node, path, "a string"); ok {
			v.SetString(s)
		}
	case reflect.Bool:
		if s, ok := d.scalar(node, path, "true or false"); ok {
			switch s {
			case "true":
				v.SetBool(true)
			case "false":
				v.SetBool(false)
			default:
				d.fail(node, path, "%q is not a boolean; write true or false", s)
			}
		}
	case reflect.Int:
		if s, ok := d.scalar(node, path, "a whole number"); ok {
			n, err := strconv.Atoi(s)
			if err != nil {
				d.fail(node, path, "%q is not a whole number", s)
				return
			}
			v.SetInt(int64(n))
		}
	case reflect.Float64:
		if s, ok := d.scalar(node, path, "a number"); ok {
			f, err := strconv.ParseFloat(s, 64)
			if err != nil {
				d.fail(node, path, "%q is not a number", s)
				return
			}
			v.SetFloat(f)
		}
	default:
		d.fail(node, path, "internal error: cannot decode into %s", v.Type())
	}
}

func isNull(node *yaml.Node) bool {
	return node.Kind == yaml.ScalarNode && node.Tag == "!!null"
}

// scalar returns the node's text with ${VAR} expanded, or records an error
// when the node is a mapping or a sequence.
func (d *decoder) scalar(node *yaml.Node, path, want string) (string, bool) {
	if node.Kind != yaml.ScalarNode {
		d.fail(node, path, "got a %s, want %s", kindName(node), want)
		return "", false
	}
	if isNull(node) && want != "a string" {
		d.fail(node, path, "no value, want %s", want)
		return "", false
	}
	if isNull(node) {
		return "", true
	}
	s, err := expand(node.Value, d.lookup)
	if err != nil {
		d.fail(node, path, "%v", err)
		return "", false
	}
	return s, true
}

func kindName(node *yaml.Node) string {
	switch node.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	}
	return "value"
}

func (d *decoder) decodeDuration(node *yaml.Node, v reflect.Value, path string) {
	s, ok := d.scalar(node, path, "a duration")
	if !ok {
		return
	}
	dur, err := parseDuration(s)
	if err != nil {
		d.fail(node, path, "%q is not a duration; write it like 30s, 5m, 2h or 7d", s)
		return
	}
	v.SetInt(int64(dur))
}

// parseDuration is time.ParseDuration plus whole days ("7d").
func parseDuration(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 || n > 3650 {
			return 0, errors.New("bad days")
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	dur, err := time.ParseDuration(s)
	if err != nil {
		return 0, err
	}
	if dur < 0 {
		return 0, errors.New("negative")
	}
	return dur, nil
}

type fieldInfo struct {
	key   string
	index int
}

func structFields(t reflect.Type) []fieldInfo {
	var out []fieldInfo
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if key == "" || key == "-" || !f.IsExported() {
			continue
		}
		out = append(out, fieldInfo{key: key, index: i})
	}
	return out
}

func (d *decoder) decodeStruct(node *yaml.Node, v reflect.Value, path string) {
	if isNull(node) {
		return
	}
	if node.Kind != yaml.MappingNode {
		d.fail(node, path, "got a %s, want a mapping of keys", kindName(node))
		return
	}
	fields := structFields(v.Type())
	seen := map[string]bool{}
	for i := 0; i+1 < len(node.Content); i += 2 {
		k, val := node.Content[i], node.Content[i+1]
		key := k.Value
		sub := join(path, key)
		if key == "<<" {
			d.fail(k, sub, "YAML merge keys are not supported; repeat the keys instead")
			continue
		}
		if seen[key] {
			d.fail(k, sub, "key %q appears twice", key)
			continue
		}
		seen[key] = true
		found := false
		for _, f := range fields {
			if f.key == key {
				d.decode(val, v.Field(f.index), sub)
				found = true
				break
			}
		}
		if !found {
			d.fail(k, sub, "unknown key %q%s; allowed here: %s", key, suggest(key, fields), allowed(fields))
		}
	}
}

func (d *decoder) decodeMap(node *yaml.Node, v reflect.Value, path string) {
	if isNull(node) {
		return
	}
	if node.Kind != yaml.MappingNode {
		d.fail(node, path, "got a %s, want a mapping", kindName(node))
		return
	}
	if v.IsNil() {
		v.Set(reflect.MakeMap(v.Type()))
	}
	for i := 0; i+1 < len(node.Content); i += 2 {
		k, val := node.Content[i], node.Content[i+1]
		sub := join(path, k.Value)
		if k.Kind != yaml.ScalarNode {
			d.fail(k, path, "keys must be plain strings")
			continue
		}
		if v.MapIndex(reflect.ValueOf(k.Value)).IsValid() {
			d.fail(k, sub, "key %q appears twice", k.Value)
			continue
		}
		elem := reflect.New(v.Type().Elem()).Elem()
		d.decode(val, elem, sub)
		v.SetMapIndex(reflect.ValueOf(k.Value), elem)
	}
}

func (d *decoder) decodeSlice(node *yaml.Node, v reflect.Value, path string) {
	if isNull(node) {
		return
	}
	if node.Kind != yaml.SequenceNode {
		d.fail(node, path, "got a %s, want a list (- item)", kindName(node))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(node.Content), len(node.Content))
	for i, item := range node.Content {
		d.decode(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
	}
	v.Set(s)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func allowed(fields []fieldInfo) string {
	keys := make([]string, len(fields))
	for i, f := range fields {
		keys[i] = f.key
	}
	sort.Strings(keys)
	return strings.Join(keys, ", ")
}

// suggest returns ` (did you mean "x"?)` for a near miss.
func suggest(key string, fields []fieldInfo) string {
	best, bestDist := "", 3
	for _, f := range fields {
		if dist := editDistance(strings.ToLower(key), f.key); dist < bestDist {
			best, bestDist = f.key, dist
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
