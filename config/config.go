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
	Concurrency int      `yaml:"concurrency,omitempty"`
	State       State    `yaml:"state,omitempty"`
	API         API      `yaml:"api,omitempty"`
	Webhooks    Webhooks `yaml:"webhooks,omitempty"`
	Notify      Notify   `yaml:"notify,omitempty"`
	Rollout     Rollout  `yaml:"rollout,omitempty"`
}

// State is where the agent keeps history, quarantine and its journal.
type State struct {
	Path string `yaml:"path,omitempty"`
	// History is how many history entries are kept (oldest dropped first).
	History int `yaml:"history,omitempty"`
}

// API is the agent's HTTP API (off unless Listen is set).
type API struct {
	Listen    string `yaml:"listen,omitempty"` // "127.0.0.1:8080"
	Token     Secret `yaml:"token,omitempty"`
	TokenFile string `yaml:"token_file,omitempty"`
	TLSCert   string `yaml:"tls_cert,omitempty"`
	TLSKey    string `yaml:"tls_key,omitempty"`
	// URL is where the CLI reaches a running agent (rollout, rollback,
	// approve, status); default http(s)://Listen.
	URL string `yaml:"url,omitempty"`
}

// Webhooks authenticates registry webhooks (served by the API).
type Webhooks struct {
	Secret     Secret `yaml:"secret,omitempty"`
	SecretFile string `yaml:"secret_file,omitempty"`
}

// Notify says who hears about updates, rollbacks, blocked images and failures.
type Notify struct {
	// URLs are shoutrrr service URLs (slack://, discord://, smtp://, …). They
	// usually embed tokens, so they are secrets.
	URLs     []Secret        `yaml:"urls,omitempty"`
	URLsFile string          `yaml:"urls_file,omitempty"` // one URL per line
	Webhooks []NotifyWebhook `yaml:"webhooks,omitempty"`
	Template string          `yaml:"template,omitempty"`
	// Events limits what is sent: updated, rolled-back, blocked, failed, approval-needed.
	Events []string `yaml:"events,omitempty"`
}

// NotifyWebhook is a generic JSON webhook.
type NotifyWebhook struct {
	URL     Secret            `yaml:"url,omitempty"`
	Headers map[string]Secret `yaml:"headers,omitempty"`
}

// Rollout tunes how updates are rolled out and gated.
type Rollout struct {
	// HealthTimeout overrides the health-gate deadline derived from the
	// healthcheck (0 = derive).
	HealthTimeout Duration `yaml:"health_timeout,omitempty"`
	// HealthSamples is how many consecutive healthy samples prove a version.
	HealthSamples int `yaml:"health_samples,omitempty"`
	// CleanupOldImages removes the replaced image after a successful update.
	CleanupOldImages bool `yaml:"cleanup_old_images,omitempty"`
	// SwarmDeadline bounds how long a Swarm update may take (0 = derive).
	SwarmDeadline Duration `yaml:"swarm_deadline,omitempty"`
	// ShutdownGrace bounds how long a stopping agent lets an in-flight
	// rollout finish (or roll back) before it exits.
	ShutdownGrace Duration `yaml:"shutdown_grace,omitempty"`
	// RetryBackoff is how long the agent waits before it tries a candidate
	// again after a rollout that failed for a reason that is not the
	// image's (a pull that failed, an engine that restarted); the wait
	// doubles with every further failure, up to RetryBackoffMax.
	RetryBackoff    Duration `yaml:"retry_backoff,omitempty"`
	RetryBackoffMax Duration `yaml:"retry_backoff_max,omitempty"`
	// StackFiles maps a Swarm stack name to the stack file it is deployed
	// from, so that a semver update is written back into it.
	StackFiles map[string]string `yaml:"stack_files,omitempty"`
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
	// Approval is "auto" (deploy when verified) or "manual" (wait for
	// shipwatch approve / the API).
	Approval *string `yaml:"approval,omitempty"`
	// Levels sets the approval per semver level: auto, manual or never.
	Levels *Levels `yaml:"levels,omitempty"`
	// Schedule is a cron spec for this target's passes (default: the global one).
	Schedule *string `yaml:"schedule,omitempty"`
	// Windows are maintenance windows: updates are found and reported at any
	// time but deployed only inside one. None = any time.
	Windows []Window `yaml:"windows,omitempty"`
	// Cooldown is how long a new digest must have been seen before it is
	// deployed (a new release often gets a quick fix).
	Cooldown *Duration `yaml:"cooldown,omitempty"`
	// Wave orders rollouts in a pass: wave 0 first (canaries), then wave 1
	// only if every wave-0 rollout succeeded, and so on.
	Wave *int `yaml:"wave,omitempty"`
}

// Levels are approval modes per semver level of a tag change.
type Levels struct {
	Patch string `yaml:"patch,omitempty"`
	Minor string `yaml:"minor,omitempty"`
	Major string `yaml:"major,omitempty"`
}

// Window is a maintenance window: it opens at each time Cron names and
// stays open for Duration.
type Window struct {
	Cron     string   `yaml:"cron,omitempty"`
	Duration Duration `yaml:"duration,omitempty"`
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
	// Source is where scans come from: "attestation" (default: signed
	// vulnerability attestations) or "harbor" (Harbor's scan overview API).
	Source    string `yaml:"source,omitempty"`
	HarborURL string `yaml:"harbor_url,omitempty"` // default https://<registry host>
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
		State:       State{Path: "/var/lib/shipwatch/state.db", History: 1000},
		Rollout: Rollout{
			HealthSamples: 3, ShutdownGrace: Duration(5 * time.Minute),
			RetryBackoff: Duration(time.Minute), RetryBackoffMax: Duration(time.Hour),
		},
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
