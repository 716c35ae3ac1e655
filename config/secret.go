package config

import (
	"encoding/json"
	"fmt"
)

// Redacted is what a set secret prints as, everywhere.
const Redacted = "[redacted]"

// Secret is a credential read from the config, the environment or a file.
// It never prints its value: fmt, YAML and JSON all see Redacted. Only
// Value returns it, for the one place that sends it to a registry.
type Secret struct {
	value    string
	fromFile bool // read from a *_file: config print shows the file, not this
}

// NewSecret wraps s.
func NewSecret(s string) Secret { return Secret{value: s} }

// Value returns the secret itself. Call it only where the secret is used.
func (s Secret) Value() string { return s.value }

// IsSet reports whether the secret has a value.
func (s Secret) IsSet() bool { return s.value != "" }

func (s Secret) String() string {
	if s.value == "" {
		return ""
	}
	return Redacted
}

// Format keeps every fmt verb (%v, %+v, %#v, %s, %q, %x) from printing the value.
func (s Secret) Format(f fmt.State, verb rune) { fmt.Fprint(f, s.String()) }

// MarshalYAML prints Redacted (config print).
func (s Secret) MarshalYAML() (any, error) { return s.String(), nil }

// MarshalJSON prints Redacted (API responses).
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// IsZero lets YAML's omitempty leave out unset secrets and secrets read
// from a *_file (the file name is printed instead).
func (s Secret) IsZero() bool { return s.value == "" || s.fromFile }
