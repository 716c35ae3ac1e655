package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
)

// MaxFileSize bounds config and secret files.
const MaxFileSize = 1 << 20

// Load reads the config file at path, expands ${VAR} from lookup (usually
// os.LookupEnv), reads *_file secrets and validates the result. Every problem
// found is returned, joined, each naming the file, line and field path.
func Load(path string, lookup func(string) (string, bool)) (*Config, error) {
	data, err := readBounded(path, MaxFileSize)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(data, path, lookup)
}

// Parse is Load for a config held in memory; file names it in errors.
func Parse(data []byte, file string, lookup func(string) (string, bool)) (*Config, error) {
	cfg := Default()
	lines, err := decodeInto(data, file, lookup, &cfg)
	if err != nil {
		return nil, err
	}
	v := validator{file: file, lines: lines}
	dir, err := filepath.Abs(filepath.Dir(file))
	if err != nil {
		return nil, fmt.Errorf("config directory: %w", err)
	}
	resolvePaths(&cfg, dir)
	v.resolveSecrets(&cfg)
	v.config(&cfg)
	if len(v.errs) > 0 {
		return nil, errors.Join(v.errs...)
	}
	return &cfg, nil
}

func decodeInto(data []byte, file string, lookup func(string) (string, bool), cfg *Config) (map[string]int, error) {
	if len(data) > MaxFileSize {
		return nil, &FieldError{File: file, Msg: fmt.Sprintf("larger than %d bytes; is this the right file?", MaxFileSize)}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return map[string]int{}, nil // an empty file is the default config
		}
		line, msg := yamlError(err)
		return nil, &FieldError{File: file, Line: line, Msg: "not valid YAML: " + msg}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, &FieldError{File: file, Line: extra.Line, Msg: "more than one YAML document; keep one configuration per file"}
	}
	d := decoder{file: file, lookup: lookup, lines: map[string]int{}}
	d.decode(&root, reflect.ValueOf(cfg).Elem(), "")
	if len(d.errs) > 0 {
		return nil, errors.Join(d.errs...)
	}
	return d.lines, nil
}

// yamlError splits a yaml.v3 syntax error into its line and message.
func yamlError(err error) (int, string) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	var n int
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if _, err := fmt.Sscanf(rest, "%d:", &n); err == nil {
			msg = strings.TrimSpace(rest[strings.IndexByte(rest, ':')+1:])
		}
	}
	return n, msg
}

func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return data, nil
}
