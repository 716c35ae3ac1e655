// Package parts builds the verifier and the deployers of a pass in this
// process. It is what links sigstore-go and the Compose SDK; the lean agent
// binary (package helper) runs the same parts in a helper process instead.
package parts

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"runtime"
	"slices"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/moby/moby/client"
	"github.com/rs/zerolog"

	"github.com/shipwatch/shipwatch/config"
	"github.com/shipwatch/shipwatch/deployer"
	composedeployer "github.com/shipwatch/shipwatch/deployer/compose"
	swarmdeployer "github.com/shipwatch/shipwatch/deployer/swarm"
	"github.com/shipwatch/shipwatch/pass"
	"github.com/shipwatch/shipwatch/verify"
	"github.com/shipwatch/shipwatch/watcher"
)

// Options say which parts a command needs.
type Options struct {
	// Deployers builds the Compose and Swarm deployers (not needed by check).
	Deployers bool
}

// Build makes all the parts of a pass from the configuration, once, at
// start-up: pass.Base's engine connection and registry watcher, the verifier
// with its compiled policies, and the deployers. close releases them.
func Build(ctx context.Context, cfg *config.Config, log zerolog.Logger, opts Options) (_ pass.Deps, _ func(), err error) {
	deps, closeBase, err := pass.Base(ctx, cfg, log)
	if err != nil {
		return pass.Deps{}, nil, err
	}
	closers := []func(){closeBase}
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	defer func() {
		if err != nil {
			closeAll()
		}
	}()
	v, err := NewVerifier(cfg, log, zerolog.WarnLevel)
	if err != nil {
		return pass.Deps{}, nil, err
	}
	deps.Verifier = v
	if opts.Deployers {
		ds, closeDs, err := Deployers(ctx, cfg, log, deps.Engine.(*client.Client)) // pass.Base connects with engine.Connect
		if err != nil {
			return pass.Deps{}, nil, err
		}
		closers = append(closers, closeDs)
		deps.Deployers = ds
	}
	return deps, closeAll, nil
}

// NewVerifier compiles the config's verification policies, logging what
// weakens them at level warnings (a helper process, which builds the
// verifier each time it starts, logs them once).
func NewVerifier(cfg *config.Config, log zerolog.Logger, warnings zerolog.Level) (*verify.Verifier, error) {
	vopts, err := VerifyOptions(cfg, log)
	if err != nil {
		return nil, fmt.Errorf("verification: %w", err)
	}
	v, err := verify.New(vopts)
	if err != nil {
		return nil, fmt.Errorf("verification policy: %w", err)
	}
	for _, warning := range v.Warnings() {
		log.WithLevel(warnings).Str("warning", warning).Msg("verification is weakened by configuration")
	}
	return v, nil
}

// Deployers builds the Compose deployer, and the Swarm deployer when the
// engine is a Swarm manager (on a plain engine discovery lists no Swarm
// targets to deploy to). close releases them.
func Deployers(ctx context.Context, cfg *config.Config, log zerolog.Logger, cli *client.Client) (map[deployer.Kind]deployer.Deployer, func(), error) {
	kc := Keychain(cfg)
	cd, err := composedeployer.New(ctx, composedeployer.Options{
		Host: cfg.Engine.Host, Keychain: kc, Logger: log,
		HealthSamples: cfg.Rollout.HealthSamples, HealthTimeout: cfg.Rollout.HealthTimeout.Std(), CleanupOld: cfg.Rollout.CleanupOldImages,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("compose deployer: %w", err)
	}
	closeFn := func() { _ = cd.Close() }
	ds := map[deployer.Kind]deployer.Deployer{deployer.KindCompose: cd}
	kinds, err := pass.DeployerKinds(ctx, cli)
	if err != nil {
		closeFn()
		return nil, nil, err
	}
	if slices.Contains(kinds, deployer.KindSwarm) {
		sd, err := swarmdeployer.New(ctx, swarmdeployer.Options{Keychain: kc, Logger: log, Deadline: cfg.Rollout.SwarmDeadline.Std(), Engine: cli, StackFiles: cfg.Rollout.StackFiles})
		if err != nil {
			closeFn()
			return nil, nil, fmt.Errorf("swarm deployer: %w", err)
		}
		ds[deployer.KindSwarm] = sd
	}
	return ds, closeFn, nil
}

// VerifyOptions maps the verify section of the config to verifier policies,
// resolving authority names; the verifier reaches registries like the
// watcher does (credentials, CA files, plain HTTP where configured).
func VerifyOptions(cfg *config.Config, log zerolog.Logger) (verify.Options, error) {
	auth := func(names []string) []verify.AuthoritySpec {
		var out []verify.AuthoritySpec
		for _, n := range names {
			a := cfg.Verify.Authorities[n]
			spec := verify.AuthoritySpec{Name: n, Key: a.Key, KeyFile: a.KeyFile}
			if k := a.Keyless; k != nil {
				spec.Keyless = &verify.KeylessSpec{
					Issuer: k.Issuer, IssuerRegex: k.IssuerRegex, Subject: k.Subject, SubjectRegex: k.SubjectRegex,
					TrustedRootFile: k.TrustedRoot, RequireTlog: k.RequireTlog, RequireTimestamp: k.RequireTimestamp,
				}
			}
			out = append(out, spec)
		}
		return out
	}
	rt, err := registryTransport(cfg)
	if err != nil {
		return verify.Options{}, err
	}
	opts := verify.Options{Logger: log, Platforms: []string{"linux/" + runtime.GOARCH}, Keychain: Keychain(cfg), Transport: rt}
	for _, r := range cfg.Registries {
		if r.Insecure {
			opts.InsecureRegistries = append(opts.InsecureRegistries, r.Host)
		}
	}
	for _, p := range cfg.Verify.Policies {
		spec := verify.PolicySpec{
			Name: p.Name, Images: p.Images, Mode: p.Mode, AllowUnsigned: p.AllowUnsigned,
			Authorities: auth(p.SignedBy), PlatformSignatures: p.PlatformSignatures,
		}
		for _, a := range p.Attestations {
			spec.Attestations = append(spec.Attestations, verify.AttestationSpec{PredicateType: a.Type, Authorities: auth(a.SignedBy)})
		}
		if s := p.Scan; s != nil {
			spec.Scan = &verify.ScanSpec{Authorities: auth(s.SignedBy), MaxSeverity: s.MaxSeverity, MaxAge: s.MaxAge.Std(), IgnoreCVEs: s.Ignore, Missing: s.Missing, Source: s.Source, HarborURL: s.HarborURL}
		}
		if pr := p.Provenance; pr != nil {
			spec.Provenance = &verify.ProvenanceSpec{BuilderID: pr.BuilderID, Authorities: auth(pr.SignedBy)}
		}
		opts.Policies = append(opts.Policies, spec)
	}
	return opts, nil
}

// registryTransport trusts the system roots plus every registry's ca_file
// (the verifier has one transport for all registries; the watcher has one
// per registry).
func registryTransport(cfg *config.Config) (http.RoundTripper, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	var files []string
	for _, r := range cfg.Registries {
		if r.CAFile != "" {
			files = append(files, r.CAFile)
		}
	}
	if len(files) > 0 {
		pool, err := watcher.CAPool(files...)
		if err != nil {
			return nil, fmt.Errorf("registries ca_file: %w", err)
		}
		t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return t, nil
}

// Keychain returns the registry credentials the deployers hand to the engine:
// the config's registries first, then the Docker config.json and its
// credential helpers.
func Keychain(cfg *config.Config) authn.Keychain {
	return authn.NewMultiKeychain(configKeychain(cfg.Registries), authn.DefaultKeychain)
}

type configKeychain []config.Registry

func (k configKeychain) Resolve(res authn.Resource) (authn.Authenticator, error) {
	host := res.RegistryStr()
	for _, r := range k {
		if r.Host != host && !(r.Host == "docker.io" && host == "index.docker.io") {
			continue
		}
		switch {
		case r.Token.IsSet():
			return &authn.Bearer{Token: r.Token.Value()}, nil
		case r.Password.IsSet():
			return &authn.Basic{Username: r.Username, Password: r.Password.Value()}, nil
		}
	}
	return authn.Anonymous, nil
}
