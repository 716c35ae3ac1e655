package config

import (
	"io"

	"go.yaml.in/yaml/v3"
)

// Print writes the effective configuration (defaults applied, variables
// expanded, secret files read) as YAML. Secrets print as Redacted.
func Print(w io.Writer, c *Config) error {
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return err
	}
	return enc.Close()
}
