package agentbench

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/shipwatch/shipwatch/config"
	"github.com/shipwatch/shipwatch/internal/testenv"
	"github.com/shipwatch/shipwatch/verify/sigtest"
)

// Registry credentials of the benchmark (token auth, as Docker Hub does).
const (
	registryUser = "bench"
	registryPass = "bench-registry-password"
	// APIToken and WebhookSecret are the agent API's credentials in the
	// benchmark's configuration.
	APIToken      = "agentbench-api-token-0123456789"
	WebhookSecret = "agentbench-webhook-secret-0123456789"
)

// FixtureOptions shape the watched estate. The zero value is the issue's
// benchmark: 1000 images, 800 followed by digest and 200 by a semver range
// over 250 tags each, 100 tags per page, 10 services per Compose project.
type FixtureOptions struct {
	DigestImages   int // services following the digest of their tag (default 800)
	SemverImages   int // services following a semver range (default 200)
	TagsPerRepo    int // tags of each semver repository (default 250)
	PageSize       int // tags per page of the tag list (default 100)
	ServicesPerApp int // services per Compose project (default 10)
	// Dir holds the configuration, keys, certificate and state (a new
	// temporary directory when empty; removed by Close only then).
	Dir string
}

func (o FixtureOptions) withDefaults() FixtureOptions {
	if o.DigestImages == 0 && o.SemverImages == 0 {
		o.DigestImages, o.SemverImages = 800, 200
	}
	if o.TagsPerRepo <= 0 {
		o.TagsPerRepo = 250
	}
	if o.PageSize <= 0 {
		o.PageSize = 100
	}
	if o.ServicesPerApp <= 0 {
		o.ServicesPerApp = 10
	}
	return o
}

// Fixture is the registry side of the benchmark: an in-process registry
// (HTTPS with HTTP/2, token auth, referrers API, paginated tag lists) holding
// one repository per service, the key that signs releases, and the services
// whose running digests match what the registry serves (an idle estate:
// nothing to deploy).
type Fixture struct {
	Opts     FixtureOptions
	Registry *testenv.Registry
	Key      *sigtest.Key
	// Services are the Compose services to put in the fake engine: first
	// the digest-followed ones, then the semver ones.
	Services []Service
	// Dir holds the generated files; CAFile is the registry's certificate
	// (PEM), KeyFile the public key that verifies releases.
	Dir, CAFile, KeyFile string
	// Setup is how long building the fixture took.
	Setup time.Duration

	ownDir bool
	mu     sync.Mutex
	pushes int
}

// manifestBody is one pushed image manifest, re-used under many tags.
type manifestBody struct {
	body      []byte
	mediaType string
	digest    string
}

// NewFixture starts the registry, pushes a few images and makes every
// repository's tags point at them (raw manifest PUTs: pushing 50,000 tags
// through remote.Write would take minutes), and writes the key and the
// registry's certificate to Dir.
func NewFixture(ctx context.Context, opts FixtureOptions) (_ *Fixture, err error) {
	start := time.Now()
	opts = opts.withDefaults()
	f := &Fixture{Opts: opts, Dir: opts.Dir}
	if f.Dir == "" {
		if f.Dir, err = os.MkdirTemp("", "agentbench-"); err != nil {
			return nil, err
		}
		f.ownDir = true
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	f.Registry, err = testenv.StartRegistry(testenv.WithTLS(), testenv.WithTokenAuth(registryUser, registryPass),
		testenv.WithTagPageSize(opts.PageSize), testenv.WithReferrersAPI())
	if err != nil {
		return nil, fmt.Errorf("start registry: %w", err)
	}
	if f.Key, err = sigtest.NewKey(""); err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	if f.KeyFile, err = f.Key.WritePublicKey(f.Dir, "release.pub"); err != nil {
		return nil, err
	}
	if f.CAFile, err = writeServerCert(f.Registry.Host, filepath.Join(f.Dir, "registry-ca.pem")); err != nil {
		return nil, err
	}

	var seeds []manifestBody
	for i := range 3 {
		img, err := benchImage(fmt.Sprintf("seed %d", i))
		if err != nil {
			return nil, err
		}
		if _, err := f.Registry.Push(fmt.Sprintf("bench/seed:%d", i), img); err != nil {
			return nil, err
		}
		m, err := bodyOf(img)
		if err != nil {
			return nil, err
		}
		seeds = append(seeds, m)
	}
	type put struct {
		repoTag string
		m       manifestBody
	}
	var puts []put
	for i := range opts.DigestImages {
		repo := fmt.Sprintf("bench/digest%04d", i)
		puts = append(puts, put{repo + ":1.0", seeds[0]})
		f.Services = append(f.Services, f.service(len(f.Services), repo+":1.0", seeds[0].digest, nil))
	}
	for i := range opts.SemverImages {
		repo := fmt.Sprintf("bench/semver%04d", i)
		var newest put
		for n := range opts.TagsPerRepo {
			newest = put{repo + ":" + fmt.Sprintf("1.%d.%d", n/25, n%25), seeds[n%len(seeds)]}
			puts = append(puts, newest)
		}
		// Each service runs the newest tag of its range: nothing to do.
		f.Services = append(f.Services, f.service(len(f.Services), newest.repoTag, newest.m.digest,
			map[string]string{config.LabelPolicy: config.UpdateSemver, config.LabelSemver: "^1"}))
	}
	if err := putManifests(ctx, f.Registry, len(puts), func(i int) (string, manifestBody) { return puts[i].repoTag, puts[i].m }); err != nil {
		return nil, err
	}
	f.Registry.Reset()
	f.Setup = time.Since(start)
	return f, nil
}

func (f *Fixture) service(i int, repoTag, digest string, labels map[string]string) Service {
	l := map[string]string{config.LabelEnable: "true"}
	for k, v := range labels {
		l[k] = v
	}
	return Service{
		Project: fmt.Sprintf("app%03d", i/f.Opts.ServicesPerApp),
		Name:    fmt.Sprintf("svc%04d", i),
		Image:   f.Registry.Ref(repoTag),
		Digest:  digest,
		Labels:  l,
	}
}

// Close stops the registry and removes Dir if the fixture made it.
func (f *Fixture) Close() {
	if f.Registry != nil {
		f.Registry.Close()
	}
	if f.ownDir {
		_ = os.RemoveAll(f.Dir)
	}
}

// PushSigned publishes a new release of svc's tag the way a careful
// pipeline does: the image is pushed by digest, signed, and only then
// tagged, so that no pass can see the tag on an unsigned digest (which the
// agent would rightly block). It returns the new digest; the tag moves
// when PushSigned returns.
func (f *Fixture) PushSigned(ctx context.Context, svc Service) (string, error) {
	f.mu.Lock()
	f.pushes++
	n := f.pushes
	f.mu.Unlock()
	img, err := benchImage(fmt.Sprintf("%s release %d at %s", svc.ID(), n, time.Now().Format(time.RFC3339Nano)))
	if err != nil {
		return "", err
	}
	d, err := img.Digest()
	if err != nil {
		return "", err
	}
	repo, tag, ok := strings.Cut(strings.TrimPrefix(svc.Image, f.Registry.Host+"/"), ":")
	if !ok {
		return "", fmt.Errorf("service %s: image %s has no tag", svc.ID(), svc.Image)
	}
	byDigest := f.Registry.Ref(repo + "@" + d.String())
	if _, err := f.Registry.Push(repo+"@"+d.String(), img); err != nil {
		return "", err
	}
	if err := sigtest.Sign(ctx, f.Registry, byDigest, f.Key, sigtest.Bundle); err != nil {
		return "", fmt.Errorf("sign %s: %w", byDigest, err)
	}
	ref, err := name.NewTag(f.Registry.Ref(repo + ":" + tag))
	if err != nil {
		return "", err
	}
	if err := remote.Tag(ref, img, remote.WithAuth(f.Registry.Auth()), remote.WithTransport(f.Registry.Transport()), remote.WithContext(ctx)); err != nil {
		return "", fmt.Errorf("tag %s: %w", ref, err)
	}
	return d.String(), nil
}

// AgentConfig is what varies between the benchmark's agent runs.
type AgentConfig struct {
	Schedule string // cron spec of the passes ("@every 5m")
	// APIListen enables the API and webhooks on this address ("" = off).
	APIListen string
	// StatePath is the agent's state file.
	StatePath string
	// EngineHost is engine.host ("" = DOCKER_HOST, as the agent runs).
	EngineHost string
}

// WriteConfig writes the agent's configuration for c to path and loads it
// back with the agent's own loader, so a mistake shows here rather than as
// an agent that exits at start.
func (f *Fixture) WriteConfig(path string, c AgentConfig) error {
	var b strings.Builder
	fmt.Fprintf(&b, "schedule: %q\n", c.Schedule)
	fmt.Fprintf(&b, "state: {path: %q}\n", c.StatePath)
	if c.EngineHost != "" {
		fmt.Fprintf(&b, "engine: {host: %q}\n", c.EngineHost)
	}
	fmt.Fprintf(&b, "registries:\n  - host: %q\n    username: %q\n    password: %q\n", f.Registry.Host, registryUser, registryPass)
	fmt.Fprintf(&b, "verify:\n  authorities:\n    release: {key_file: %q}\n", f.KeyFile)
	fmt.Fprintf(&b, "  policies:\n    - name: releases\n      images: [%q]\n      signed_by: [release]\n", f.Registry.Host+"/**")
	if c.APIListen != "" {
		fmt.Fprintf(&b, "api: {listen: %q, token: %q}\n", c.APIListen, APIToken)
		fmt.Fprintf(&b, "webhooks: {secret: %q}\n", WebhookSecret)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return err
	}
	if _, err := config.Load(path, func(string) (string, bool) { return "", false }); err != nil {
		return fmt.Errorf("the benchmark's agent configuration does not load: %w", err)
	}
	return nil
}

// benchImage is a small linux/amd64 image whose digest depends on label.
func benchImage(label string) (v1.Image, error) {
	layer := static.NewLayer([]byte("agentbench layer: "+label), types.DockerLayer)
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	img = mutate.MediaType(img, types.DockerManifestSchema2)
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config = v1.Config{Labels: map[string]string{"agentbench": label}, Entrypoint: []string{"/app"}}
	return mutate.ConfigFile(img, cf)
}

func bodyOf(img v1.Image) (manifestBody, error) {
	body, err := img.RawManifest()
	if err != nil {
		return manifestBody{}, err
	}
	mt, err := img.MediaType()
	if err != nil {
		return manifestBody{}, err
	}
	d, err := img.Digest()
	if err != nil {
		return manifestBody{}, err
	}
	return manifestBody{body: body, mediaType: string(mt), digest: d.String()}, nil
}

// putManifests PUTs n manifests (the blobs exist already) over the
// registry's HTTP/2 connection, 32 at a time.
func putManifests(ctx context.Context, reg *testenv.Registry, n int, item func(int) (string, manifestBody)) error {
	client := &http.Client{Transport: reg.Transport()}
	token := reg.AdminToken()
	jobs := make(chan int)
	var (
		wg       sync.WaitGroup
		errMu    sync.Mutex
		firstErr error
	)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				repoTag, m := item(i)
				repo, tag, _ := strings.Cut(repoTag, ":")
				err := putManifest(ctx, client, reg.URL()+"/v2/"+repo+"/manifests/"+tag, token, m)
				if err != nil {
					errMu.Lock()
					firstErr = cmpErr(firstErr, err)
					errMu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	return firstErr
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

func putManifest(ctx context.Context, client *http.Client, url, token string, m manifestBody) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, bytes.NewReader(m.body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", m.mediaType)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("PUT %s: %w", url, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("PUT %s: HTTP %d", url, resp.StatusCode)
	}
	return nil
}

// writeServerCert fetches the certificate the registry presents (the test
// server's self-signed one) and writes it as PEM: the agent trusts it
// through SSL_CERT_FILE, for the watcher and the verifier alike.
func writeServerCert(host, path string) (string, error) {
	conn, err := tls.Dial("tcp", host, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // only to read the test server's own certificate
	if err != nil {
		return "", fmt.Errorf("read the registry's certificate: %w", err)
	}
	defer conn.Close()
	certs := conn.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return "", errors.New("read the registry's certificate: none presented")
	}
	var b bytes.Buffer
	for _, c := range certs {
		if err := pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}); err != nil {
			return "", err
		}
	}
	return path, os.WriteFile(path, b.Bytes(), 0o644)
}
