package config

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/Masterminds/semver/v3"
	"github.com/robfig/cron/v3"
)

// CronParser is the schedule syntax: standard five fields, an optional
// leading seconds field, and descriptors such as "@every 5m" or "@hourly".
var CronParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Severities in increasing order.
var Severities = []string{"none", "low", "medium", "high", "critical"}

type validator struct {
	file  string
	lines map[string]int
	errs  []error
}

func (v *validator) fail(path, format string, args ...any) {
	line := v.lines[path]
	for p := path; line == 0 && p != ""; {
		// a missing key: point at the closest enclosing value
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
		line = v.lines[p]
	}
	v.errs = append(v.errs, &FieldError{File: v.file, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// resolvePaths makes every relative file path in c relative to dir (the
// config file's directory), so that a config works from any working directory.
func resolvePaths(c *Config, dir string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	for i := range c.Registries {
		r := &c.Registries[i]
		abs(&r.PasswordFile)
		abs(&r.TokenFile)
		abs(&r.CAFile)
	}
	abs(&c.API.TokenFile)
	abs(&c.API.TLSCert)
	abs(&c.API.TLSKey)
	abs(&c.Webhooks.SecretFile)
	abs(&c.Notify.URLsFile)
	for name, a := range c.Verify.Authorities {
		abs(&a.KeyFile)
		if a.Keyless != nil {
			k := *a.Keyless
			abs(&k.TrustedRoot)
			a.Keyless = &k
		}
		c.Verify.Authorities[name] = a
	}
	for stack, f := range c.Rollout.StackFiles {
		abs(&f)
		c.Rollout.StackFiles[stack] = f
	}
}

// resolveSecrets reads every *_file secret into its field.
func (v *validator) resolveSecrets(c *Config) {
	for i := range c.Registries {
		r := &c.Registries[i]
		p := fmt.Sprintf("registries[%d]", i)
		v.secretFile(&r.Password, r.PasswordFile, p+".password")
		v.secretFile(&r.Token, r.TokenFile, p+".token")
	}
	v.secretFile(&c.API.Token, c.API.TokenFile, "api.token")
	v.secretFile(&c.Webhooks.Secret, c.Webhooks.SecretFile, "webhooks.secret")
	if f := c.Notify.URLsFile; f != "" {
		data, err := readBounded(f, 64<<10)
		if err != nil {
			v.fail("notify.urls_file", "cannot read the file: %v", err)
			return
		}
		for _, line := range strings.Split(string(data), "\n") {
			if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
				c.Notify.URLs = append(c.Notify.URLs, Secret{value: line, fromFile: true})
			}
		}
	}
}

func (v *validator) secretFile(dst *Secret, file, p string) {
	if file == "" {
		return
	}
	if dst.IsSet() {
		v.fail(p+"_file", "set either %s or %s_file, not both", lastElem(p), lastElem(p))
		return
	}
	data, err := readBounded(file, 64<<10)
	if err != nil {
		v.fail(p+"_file", "cannot read the secret file: %v", err)
		return
	}
	*dst = Secret{value: strings.TrimRight(string(data), "\r\n"), fromFile: true}
	if !dst.IsSet() {
		v.fail(p+"_file", "the secret file %s is empty", file)
	}
}

func lastElem(p string) string { return p[strings.LastIndexByte(p, '.')+1:] }

func (v *validator) config(c *Config) {
	if h := c.Engine.Host; h != "" && !hasAnyPrefix(h, "unix://", "tcp://", "ssh://", "npipe://", "http://", "https://") {
		v.fail("engine.host", "%q is not an engine address; write it like unix:///var/run/docker.sock or tcp://host:2376", h)
	}
	hosts := map[string]int{}
	for i, r := range c.Registries {
		v.registry(fmt.Sprintf("registries[%d]", i), r, hosts, i)
	}
	v.policy("defaults.policy", c.Defaults.Policy)
	for i, t := range c.Targets {
		v.target(fmt.Sprintf("targets[%d]", i), t)
	}
	v.verify(c.Verify)
	if _, err := CronParser.Parse(c.Schedule); err != nil {
		v.fail("schedule", "invalid cron spec %q: %v; write five fields (minute hour day month weekday), six with seconds first, or a descriptor like @every 5m", c.Schedule, err)
	}
	if c.Concurrency < 1 || c.Concurrency > 256 {
		v.fail("concurrency", "%d is out of range; use 1 to 256", c.Concurrency)
	}
	v.agent(c)
}

func (v *validator) agent(c *Config) {
	if c.State.Path == "" {
		v.fail("state.path", "missing; give the state file's path, like /var/lib/shipwatch/state.db")
	}
	if c.State.History < 0 {
		v.fail("state.history", "%d is negative; use 0 to keep everything", c.State.History)
	}
	if l := c.API.Listen; l != "" {
		host, port, err := net.SplitHostPort(l)
		if err != nil || port == "" {
			v.fail("api.listen", "%q is not host:port; write it like 127.0.0.1:8080 or :8080", l)
		} else if ip := net.ParseIP(host); (ip == nil || !ip.IsLoopback()) && host != "localhost" && !c.API.Token.IsSet() {
			v.fail("api.token", "the API listens on %s, beyond this machine, and controls rollouts: set api.token (or api.token_file)", l)
		}
		if c.API.Token.IsSet() && len(c.API.Token.Value()) < 16 {
			v.fail("api.token", "shorter than 16 characters; use a long random token (openssl rand -hex 32)")
		}
		if c.Webhooks.Secret.IsSet() && len(c.Webhooks.Secret.Value()) < 16 {
			v.fail("webhooks.secret", "shorter than 16 characters; use a long random secret (openssl rand -hex 32)")
		}
		if (c.API.TLSCert == "") != (c.API.TLSKey == "") {
			v.fail("api.tls_key", "set both tls_cert and tls_key, or neither")
		}
	}
	if u := c.API.URL; u != "" && !hasAnyPrefix(u, "http://", "https://") {
		v.fail("api.url", "%q: write the agent's URL like http://127.0.0.1:8080", u)
	}
	for i, u := range c.Notify.URLs {
		if !strings.Contains(u.Value(), "://") {
			// never print the URL: it usually embeds a token
			v.fail(fmt.Sprintf("notify.urls[%d]", i), "not a service URL (scheme://…), like slack://… or smtp://…")
		}
	}
	for i, w := range c.Notify.Webhooks {
		if !hasAnyPrefix(w.URL.Value(), "http://", "https://") {
			v.fail(fmt.Sprintf("notify.webhooks[%d].url", i), "missing or not an http(s) URL")
		}
	}
	events := []string{"updated", "rolled-back", "blocked", "failed", "approval-needed"}
	for i, e := range c.Notify.Events {
		if !contains(events, e) {
			v.fail(fmt.Sprintf("notify.events[%d]", i), "%q is not an event; use %s", e, strings.Join(events, ", "))
		}
	}
	if c.Rollout.HealthSamples < 1 || c.Rollout.HealthSamples > 100 {
		v.fail("rollout.health_samples", "%d is out of range; use 1 to 100", c.Rollout.HealthSamples)
	}
	switch r := c.Rollout; {
	case r.RetryBackoff.Std() < time.Second:
		v.fail("rollout.retry_backoff", "%s is too short: a failing registry or engine would be retried on every pass; use 1s or more (default 1m)", r.RetryBackoff.Std())
	case r.RetryBackoffMax.Std() < r.RetryBackoff.Std():
		v.fail("rollout.retry_backoff_max", "%s is shorter than rollout.retry_backoff (%s); use at least that (default 1h)", r.RetryBackoffMax.Std(), r.RetryBackoff.Std())
	}
}

func hasAnyPrefix(s string, prefixes ...string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// validHost accepts "registry.example.com", "host:5000", "127.0.0.1:5000", "[::1]:5000".
func validHost(h string) bool {
	if h == "" || strings.ContainsAny(h, "/ \t@") {
		return false
	}
	host := h
	if hh, port, err := net.SplitHostPort(h); err == nil {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return false
		}
		host = hh
	}
	if net.ParseIP(host) != nil {
		return true
	}
	return regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$`).MatchString(host)
}

func (v *validator) registry(p string, r Registry, hosts map[string]int, i int) {
	switch {
	case r.Host == "":
		v.fail(p+".host", "missing; name the registry host, like ghcr.io or registry.example.com:5000")
	case strings.Contains(r.Host, "://"):
		v.fail(p+".host", "%q: write the host without a scheme, like %s", r.Host, r.Host[strings.Index(r.Host, "://")+3:])
	case !validHost(r.Host):
		v.fail(p+".host", "%q is not a registry host; write it like ghcr.io or registry.example.com:5000", r.Host)
	default:
		if j, dup := hosts[r.Host]; dup {
			v.fail(p+".host", "%s is configured twice (also registries[%d]); merge the entries", r.Host, j)
		}
		hosts[r.Host] = i
	}
	if r.Password.IsSet() && r.Token.IsSet() {
		v.fail(p+".token", "set either password (with username) or token, not both")
	}
	if r.Username != "" && !r.Password.IsSet() {
		v.fail(p+".password", "username %q is set but no password; set password or password_file", r.Username)
	}
	if r.Password.IsSet() && r.Username == "" {
		v.fail(p+".username", "a password is set but no username")
	}
	for j, m := range r.Mirrors {
		if !validHost(m) {
			v.fail(fmt.Sprintf("%s.mirrors[%d]", p, j), "%q is not a registry host", m)
		}
	}
	if r.Concurrency < 0 || r.Concurrency > 1024 {
		v.fail(p+".concurrency", "%d is out of range; use 0 (default) to 1024", r.Concurrency)
	}
	if r.RateLimit < 0 {
		v.fail(p+".rate_limit", "%g is negative; use 0 for no limit or requests per second", r.RateLimit)
	}
}

func (v *validator) policy(p string, pol Policy) {
	if pol.Update != nil {
		switch *pol.Update {
		case UpdateDigest, UpdateSemver, UpdateNone:
		default:
			v.fail(p+".update", "%q is not an update policy; use digest, semver or none", *pol.Update)
		}
	}
	if pol.Semver != nil {
		if _, err := semver.NewConstraint(*pol.Semver); err != nil || strings.TrimSpace(*pol.Semver) == "" {
			v.fail(p+".semver", "invalid semver range %q; write a range like ~1.4, ^1, 1.x or \">=1.2 <2\"", *pol.Semver)
		}
		if pol.Update != nil && *pol.Update != UpdateSemver {
			v.fail(p+".semver", "a semver range only applies with update: semver (update is %q)", *pol.Update)
		}
	}
	for i, re := range pol.Include {
		v.regex(fmt.Sprintf("%s.include[%d]", p, i), re)
	}
	if pol.Approval != nil && *pol.Approval != "auto" && *pol.Approval != "manual" {
		v.fail(p+".approval", "%q: use auto (deploy when verified) or manual (wait for shipwatch approve)", *pol.Approval)
	}
	if l := pol.Levels; l != nil {
		for name, val := range map[string]string{"patch": l.Patch, "minor": l.Minor, "major": l.Major} {
			if val != "" && val != "auto" && val != "manual" && val != "never" {
				v.fail(p+".levels."+name, "%q: use auto, manual or never", val)
			}
		}
	}
	if pol.Schedule != nil {
		if _, err := CronParser.Parse(*pol.Schedule); err != nil {
			v.fail(p+".schedule", "invalid cron spec %q: %v", *pol.Schedule, err)
		}
	}
	for i, w := range pol.Windows {
		wp := fmt.Sprintf("%s.windows[%d]", p, i)
		if _, err := CronParser.Parse(w.Cron); err != nil {
			v.fail(wp+".cron", "invalid cron spec %q: %v; the window opens at each time it names", w.Cron, err)
		}
		if w.Duration <= 0 {
			v.fail(wp+".duration", "missing; how long the window stays open, like 2h")
		}
	}
	if pol.Wave != nil && (*pol.Wave < 0 || *pol.Wave > 100) {
		v.fail(p+".wave", "%d is out of range; use 0 (first) to 100", *pol.Wave)
	}
	for i, re := range pol.Exclude {
		v.regex(fmt.Sprintf("%s.exclude[%d]", p, i), re)
	}
}

func (v *validator) regex(p, re string) {
	if _, err := regexp.Compile(re); err != nil {
		v.fail(p, "invalid regular expression %q: %v (Go RE2 syntax)", re, strings.TrimPrefix(err.Error(), "error parsing regexp: "))
	}
}

func (v *validator) glob(p, pattern string) {
	if _, err := path.Match(pattern, ""); err != nil {
		v.fail(p, "invalid pattern %q: use * and ? wildcards and [a-z] classes", pattern)
	}
}

func (v *validator) target(p string, t Target) {
	if t.Compose == "" && t.Swarm == "" && len(t.Labels) == 0 {
		v.fail(p, "selects nothing; set compose: project/service, swarm: service, or labels")
	}
	if t.Compose != "" && t.Swarm != "" {
		v.fail(p+".swarm", "an entry selects either compose services or swarm services; split it in two")
	}
	if t.Compose != "" {
		v.glob(p+".compose", t.Compose)
		if !strings.Contains(t.Compose, "/") {
			v.fail(p+".compose", "%q: write project/service (globs allowed, like shop/* or */web)", t.Compose)
		}
	}
	if t.Swarm != "" {
		v.glob(p+".swarm", t.Swarm)
	}
	v.policy(p+".policy", t.Policy)
}

func (v *validator) verify(vc Verify) {
	for name, a := range vc.Authorities {
		v.authority("verify.authorities."+name, a)
	}
	names := map[string]bool{}
	for i, pol := range vc.Policies {
		p := fmt.Sprintf("verify.policies[%d]", i)
		switch {
		case pol.Name == "":
			v.fail(p+".name", "missing; name the policy (it is shown in every verdict)")
		case names[pol.Name]:
			v.fail(p+".name", "policy name %q is used twice", pol.Name)
		}
		names[pol.Name] = true
		if len(pol.Images) == 0 {
			v.fail(p+".images", "missing; list image patterns like ghcr.io/org/* or registry.example.com/**")
		}
		for j, img := range pol.Images {
			v.glob(fmt.Sprintf("%s.images[%d]", p, j), strings.ReplaceAll(img, "**", "*"))
		}
		switch pol.Mode {
		case "", "enforce", "warn":
		default:
			v.fail(p+".mode", "%q is not a mode; use enforce or warn", pol.Mode)
		}
		if !pol.AllowUnsigned && len(pol.SignedBy) == 0 {
			v.fail(p+".signed_by", "missing; name the authorities that must sign these images, or set allow_unsigned: true to let unsigned images through")
		}
		v.authorityRefs(p+".signed_by", pol.SignedBy, vc.Authorities)
		for j, a := range pol.Attestations {
			ap := fmt.Sprintf("%s.attestations[%d]", p, j)
			if a.Type == "" {
				v.fail(ap+".type", "missing; give the predicate type URI, like https://slsa.dev/provenance/v1")
			}
			if len(a.SignedBy) == 0 {
				v.fail(ap+".signed_by", "missing; name the authorities that must sign this attestation")
			}
			v.authorityRefs(ap+".signed_by", a.SignedBy, vc.Authorities)
		}
		if s := pol.Scan; s != nil {
			sp := p + ".scan"
			switch s.Source {
			case "", "attestation":
				if len(s.SignedBy) == 0 {
					v.fail(sp+".signed_by", "missing; name the scanner authorities whose vulnerability attestations count")
				}
			case "harbor":
				if s.HarborURL != "" && !hasAnyPrefix(s.HarborURL, "https://", "http://") {
					v.fail(sp+".harbor_url", "%q: write Harbor's base URL, like https://harbor.example.com", s.HarborURL)
				}
			default:
				v.fail(sp+".source", "%q: use attestation (signed vulnerability attestations) or harbor", s.Source)
			}
			v.authorityRefs(sp+".signed_by", s.SignedBy, vc.Authorities)
			if s.MaxSeverity != "" && !contains(Severities, s.MaxSeverity) {
				v.fail(sp+".max_severity", "%q is not a severity; use one of %s", s.MaxSeverity, strings.Join(Severities, ", "))
			}
			switch s.Missing {
			case "", "block", "wait":
			default:
				v.fail(sp+".missing", "%q: use block (no scan, no update) or wait (retry until a scan appears)", s.Missing)
			}
			for j, id := range s.Ignore {
				if !regexp.MustCompile(`^[A-Z]+-[0-9A-Za-z-]+(-[0-9A-Za-z]+)*$`).MatchString(id) {
					v.fail(fmt.Sprintf("%s.ignore[%d]", sp, j), "%q does not look like a vulnerability id (CVE-2024-1234, GHSA-xxxx-xxxx-xxxx)", id)
				}
			}
		}
		if pr := pol.Provenance; pr != nil {
			if pr.BuilderID == "" {
				v.fail(p+".provenance.builder_id", "missing; give the builder id the SLSA provenance must name")
			}
			if len(pr.SignedBy) == 0 {
				v.fail(p+".provenance.signed_by", "missing; name the authorities that sign provenance")
			}
			v.authorityRefs(p+".provenance.signed_by", pr.SignedBy, vc.Authorities)
		}
	}
}

func (v *validator) authorityRefs(p string, refs []string, known map[string]Authority) {
	for j, name := range refs {
		if _, ok := known[name]; !ok {
			v.fail(fmt.Sprintf("%s[%d]", p, j), "no authority named %q under verify.authorities", name)
		}
	}
}

func (v *validator) authority(p string, a Authority) {
	n := 0
	for _, set := range []bool{a.Key != "", a.KeyFile != "", a.Keyless != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		v.fail(p, "set exactly one of key, key_file or keyless")
		return
	}
	if a.Key != "" {
		if err := checkPublicKey([]byte(a.Key)); err != nil {
			v.fail(p+".key", "%v", err)
		}
	}
	if a.KeyFile != "" {
		data, err := readBounded(a.KeyFile, 64<<10)
		if err != nil {
			v.fail(p+".key_file", "cannot read the key: %v", err)
		} else if err := checkPublicKey(data); err != nil {
			v.fail(p+".key_file", "%s: %v", a.KeyFile, err)
		}
	}
	if k := a.Keyless; k != nil {
		if k.Issuer == "" && k.IssuerRegex == "" {
			v.fail(p+".keyless.issuer", "missing; set issuer (or issuer_regex), like https://token.actions.githubusercontent.com")
		}
		if k.Subject == "" && k.SubjectRegex == "" {
			v.fail(p+".keyless.subject", "missing; set subject (or subject_regex): the signer identity in the certificate")
		}
		if k.IssuerRegex != "" {
			v.regex(p+".keyless.issuer_regex", k.IssuerRegex)
		}
		if k.SubjectRegex != "" {
			v.regex(p+".keyless.subject_regex", k.SubjectRegex)
		}
		if k.TrustedRoot == "" {
			v.fail(p+".keyless.trusted_root", "missing; give the path of a trusted_root.json (for the public Sigstore: `cosign trusted-root create` or the sigstore/root-signing repository)")
		} else if _, err := readBounded(k.TrustedRoot, 16<<20); err != nil {
			v.fail(p+".keyless.trusted_root", "cannot read: %v", err)
		}
	}
}

// checkPublicKey accepts one PEM "PUBLIC KEY" block holding an ECDSA, RSA or
// Ed25519 key.
func checkPublicKey(data []byte) error {
	block, _ := pem.Decode(data)
	if block == nil {
		return fmt.Errorf("not a PEM public key (expected -----BEGIN PUBLIC KEY-----)")
	}
	if block.Type != "PUBLIC KEY" {
		return fmt.Errorf("PEM block is %q, want PUBLIC KEY (never put a private key here)", block.Type)
	}
	if _, err := x509.ParsePKIXPublicKey(block.Bytes); err != nil {
		return fmt.Errorf("cannot parse the public key: %v", err)
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
