// Package config is shipwatch's configuration as plain data: the YAML schema,
// its defaults, strict decoding (unknown keys and wrong types are errors with
// the file, line and field path), ${VAR} expansion, *_file secrets, container
// labels as a second source of per-target policy, and validation. It performs
// no I/O beyond reading the config file and the secret files it names.
package config

import (
	"fmt"
	"time"
)

// Config is the whole configuration file.
type Config struct {
	Engine     Engine     `yaml:"engine,omitempty"`
	Registries []Registry `yaml:"registries,omitempty"`
	Defaults   Defaults   `yaml:"defaults,omitempty"`
	Targets    []Target   `yaml:"targets,omitempty"`
	Verify     Verify     `yaml:"verify,omitempty"`
	// Schedule is the cron spec of the agent's passes (seconds field
	// optional, descriptors like "@every 5m" allowed).
	Schedule string `yaml:"schedule,omitempty"`
	// Jitter delays each scheduled pass by a random duration up to this.
	Jitter Duration `yaml:"jitter,omitempty"`
	// Concurrency bounds how many targets are checked or rolled out at once.
	Concurrency int `yaml:"concurrency,omitempty"`
}

// Engine says where the Docker engine is.
type Engine struct {
	// Host is a DOCKER_HOST-style address; empty means DOCKER_HOST or the
	// default socket.
	Host string `yaml:"host,omitempty"`
}

// Registry holds the settings and credentials for one registry host.
type Registry struct {
	Host         string   `yaml:"host,omitempty"`
	Username     string   `yaml:"username,omitempty"`
	Password     Secret   `yaml:"password,omitempty"`
	PasswordFile string   `yaml:"password_file,omitempty"`
	Token        Secret   `yaml:"token,omitempty"`
	TokenFile    string   `yaml:"token_file,omitempty"`
	Mirrors      []string `yaml:"mirrors,omitempty"`
	Insecure     bool     `yaml:"insecure,omitempty"`
	CAFile       string   `yaml:"ca_file,omitempty"`
	Concurrency  int      `yaml:"concurrency,omitempty"`
	RateLimit    float64  `yaml:"rate_limit,omitempty"`
}

// Defaults apply to every target unless a label or a targets entry says otherwise.
type Defaults struct {
	// Enable watches every discovered target. When false (the default) only
	// targets labelled shipwatch.enable=true or selected by a targets entry
	// are watched.
	Enable bool   `yaml:"enable,omitempty"`
	Policy Policy `yaml:"policy,omitempty"`
}

// Target selects discovered targets by name or by labels and sets their policy.
// The first entry that matches a target applies to it.
type Target struct {
	// Compose selects Compose services: "project/service", globs allowed ("shop/*").
	Compose string `yaml:"compose,omitempty"`
	// Swarm selects Swarm services by name, globs allowed.
	Swarm string `yaml:"swarm,omitempty"`
	// Labels selects targets carrying all these labels (value "*" = any value).
	Labels map[string]string `yaml:"labels,omitempty"`
	// Enable set to false excludes the selected targets.
	Enable *bool  `yaml:"enable,omitempty"`
	Policy Policy `yaml:"policy,omitempty"`
}

// Policy is the update policy of a target. Nil fields are unset and inherit
// (defaults < container/service labels < targets entry).
type Policy struct {
	// Update is "digest" (follow the digest of the running tag), "semver"
	// (newest tag in Semver) or "none" (watch nothing).
	Update *string `yaml:"update,omitempty"`
	// Semver is the allowed range for Update "semver": "~1.4", "^1", ">=1.2 <2".
	Semver *string `yaml:"semver,omitempty"`
	// Prerelease allows pre-release versions (1.5.0-rc.1).
	Prerelease *bool `yaml:"prerelease,omitempty"`
	// Include and Exclude are regular expressions on tags.
	Include []string `yaml:"include,omitempty"`
	Exclude []string `yaml:"exclude,omitempty"`
	// Freeze keeps the target exactly as it is: found, never proposed.
	Freeze *bool `yaml:"freeze,omitempty"`
}

// Verify configures signature, attestation and scan verification.
type Verify struct {
	// Authorities are named trust anchors that policies refer to.
	Authorities map[string]Authority `yaml:"authorities,omitempty"`
	// Policies are tried in order; the first whose images match applies. An
	// image that matches none is blocked.
	Policies []VerifyPolicy `yaml:"policies,omitempty"`
}

// Authority is a public key or a keyless (Fulcio) identity.
type Authority struct {
	Key     string   `yaml:"key,omitempty"`      // PEM public key
	KeyFile string   `yaml:"key_file,omitempty"` // or its path
	Keyless *Keyless `yaml:"keyless,omitempty"`
}

// Keyless is a Fulcio certificate identity with its trust root.
type Keyless struct {
	Issuer           string `yaml:"issuer,omitempty"`
	IssuerRegex      string `yaml:"issuer_regex,omitempty"`
	Subject          string `yaml:"subject,omitempty"`
	SubjectRegex     string `yaml:"subject_regex,omitempty"`
	TrustedRoot      string `yaml:"trusted_root,omitempty"` // path to trusted_root.json
	RequireTlog      *bool  `yaml:"require_tlog,omitempty"` // default true
	RequireTimestamp bool   `yaml:"require_timestamp,omitempty"`
}

// VerifyPolicy says what evidence images matching Images need.
type VerifyPolicy struct {
	Name   string   `yaml:"name,omitempty"`
	Images []string `yaml:"images,omitempty"`
	// Mode "enforce" (default) blocks; "warn" reports and lets the update through.
	Mode string `yaml:"mode,omitempty"`
	// AllowUnsigned lets images through without a signature. Logged loudly.
	AllowUnsigned bool `yaml:"allow_unsigned,omitempty"`
	// SignedBy names the authorities of which any one must have signed.
	SignedBy     []string            `yaml:"signed_by,omitempty"`
	Attestations []AttestationPolicy `yaml:"attestations,omitempty"`
	Scan         *ScanPolicy         `yaml:"scan,omitempty"`
	Provenance   *ProvenancePolicy   `yaml:"provenance,omitempty"`
	// PlatformSignatures also accepts signatures on the per-platform
	// manifests of the platforms that run here.
	PlatformSignatures bool `yaml:"platform_signatures,omitempty"`
}

// AttestationPolicy requires an attestation of a predicate type.
type AttestationPolicy struct {
	Type     string   `yaml:"type,omitempty"`
	SignedBy []string `yaml:"signed_by,omitempty"`
}

// ScanPolicy gates on a signed vulnerability scan.
type ScanPolicy struct {
	SignedBy    []string `yaml:"signed_by,omitempty"`
	MaxSeverity string   `yaml:"max_severity,omitempty"` // none, low, medium, high, critical
	MaxAge      Duration `yaml:"max_age,omitempty"`
	Ignore      []string `yaml:"ignore,omitempty"`  // CVE ids
	Missing     string   `yaml:"missing,omitempty"` // block (default) or wait
}

// ProvenancePolicy requires SLSA v1 provenance from a builder.
type ProvenancePolicy struct {
	BuilderID string   `yaml:"builder_id,omitempty"`
	SignedBy  []string `yaml:"signed_by,omitempty"`
}

// Duration is a time.Duration written as "30s", "5m", "2h" or "7d".
type Duration time.Duration

// Std returns the value as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// Update policies.
const (
	UpdateDigest = "digest"
	UpdateSemver = "semver"
	UpdateNone   = "none"
)

// Default returns the configuration used when no file is given: every
// labelled target followed by digest, checked every five minutes, nothing
// trusted (so nothing is deployed until verification is configured).
func Default() Config {
	update := UpdateDigest
	return Config{
		Defaults:    Defaults{Policy: Policy{Update: &update}},
		Schedule:    "@every 5m",
		Concurrency: 4,
	}
}

// MarshalYAML prints the duration the way it is written: "7d", "30s", "1h30m0s".
func (d Duration) MarshalYAML() (any, error) {
	std := d.Std()
	if std > 0 && std%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", std/(24*time.Hour)), nil
	}
	return std.String(), nil
}
