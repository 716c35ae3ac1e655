package sigtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func options(reg Registry) []remote.Option {
	return []remote.Option{remote.WithAuth(reg.Auth()), remote.WithTransport(reg.Transport())}
}

func parseDigestRef(ref string) (name.Digest, error) {
	d, err := name.NewDigest(ref)
	if err != nil {
		return name.Digest{}, fmt.Errorf("sigtest: %q must be repo@sha256:…: %w", ref, err)
	}
	return d, nil
}

// Sign signs the image ref ("host/repo@sha256:…") in format f.
func Sign(ctx context.Context, reg Registry, ref string, s Signer, f Format) error {
	d, err := parseDigestRef(ref)
	if err != nil {
		return err
	}
	switch f {
	case Bundle:
		st, err := Statement(d.DigestStr(), PredicateCosignSign, nil)
		if err != nil {
			return err
		}
		b, err := BundleJSON(s, st)
		if err != nil {
			return err
		}
		return PushBundle(ctx, reg, ref, b, PredicateCosignSign)
	case Legacy:
		payload, ann, err := LegacySignatureLayer(s, d.Context().Name(), d.DigestStr())
		if err != nil {
			return err
		}
		return AppendLegacyLayer(ctx, reg, ref, ".sig", payload, MediaSimpleSigning, ann)
	}
	return fmt.Errorf("sigtest: unknown format %q", f)
}

// Attest attests predicate (any JSON value) of predicateType about ref.
func Attest(ctx context.Context, reg Registry, ref string, s Signer, f Format, predicateType string, predicate any) error {
	d, err := parseDigestRef(ref)
	if err != nil {
		return err
	}
	st, err := Statement(d.DigestStr(), predicateType, predicate)
	if err != nil {
		return err
	}
	switch f {
	case Bundle:
		b, err := BundleJSON(s, st)
		if err != nil {
			return err
		}
		return PushBundle(ctx, reg, ref, b, predicateType)
	case Legacy:
		env, ann, err := LegacyAttestationLayer(s, st, predicateType)
		if err != nil {
			return err
		}
		return AppendLegacyLayer(ctx, reg, ref, ".att", env, MediaDSSE, ann)
	}
	return fmt.Errorf("sigtest: unknown format %q", f)
}

// MustSign is Sign for tests.
func MustSign(tb testing.TB, reg Registry, ref string, s Signer, f Format) {
	tb.Helper()
	if err := Sign(context.Background(), reg, ref, s, f); err != nil {
		tb.Fatalf("sign %s (%s): %v", ref, f, err)
	}
}

// MustAttest is Attest for tests.
func MustAttest(tb testing.TB, reg Registry, ref string, s Signer, f Format, predicateType string, predicate any) {
	tb.Helper()
	if err := Attest(context.Background(), reg, ref, s, f, predicateType, predicate); err != nil {
		tb.Fatalf("attest %s %s (%s): %v", predicateType, ref, f, err)
	}
}

// referrerManifest is an OCI 1.1 image manifest with artifactType and
// subject, which ggcr's v1.Manifest cannot express completely.
type referrerManifest struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     types.MediaType   `json:"mediaType"`
	ArtifactType  string            `json:"artifactType"`
	Config        v1.Descriptor     `json:"config"`
	Layers        []v1.Descriptor   `json:"layers"`
	Subject       *v1.Descriptor    `json:"subject"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

type rawManifest struct {
	b  []byte
	mt types.MediaType
}

func (r rawManifest) RawManifest() ([]byte, error)        { return r.b, nil }
func (r rawManifest) MediaType() (types.MediaType, error) { return r.mt, nil }

// PushBundle pushes bundle as an OCI 1.1 referrer of subject ("repo@sha256:…")
// with cosign's layout: an empty config, one bundle layer, artifactType the
// bundle media type. ggcr updates the fallback tag when the registry has no
// referrers API. predicateType goes into the (unsigned, informative)
// annotation cosign writes.
func PushBundle(ctx context.Context, reg Registry, subject string, bundle []byte, predicateType string) error {
	d, err := parseDigestRef(subject)
	if err != nil {
		return err
	}
	opts := append(options(reg), remote.WithContext(ctx))
	desc, err := remote.Head(d, opts...)
	if err != nil {
		return fmt.Errorf("sigtest: head %s: %w", subject, err)
	}
	cfg := static.NewLayer([]byte("{}"), "application/vnd.oci.empty.v1+json")
	layer := static.NewLayer(bundle, MediaBundle)
	for _, l := range []v1.Layer{cfg, layer} {
		if err := remote.WriteLayer(d.Context(), l, opts...); err != nil {
			return fmt.Errorf("sigtest: upload blob: %w", err)
		}
	}
	m := referrerManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  MediaBundle,
		Config:        descriptorOf(cfg, "application/vnd.oci.empty.v1+json"),
		Layers:        []v1.Descriptor{descriptorOf(layer, MediaBundle)},
		Subject:       &v1.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: desc.Size},
		Annotations: map[string]string{
			"dev.sigstore.bundle.content":       "dsse-envelope",
			"dev.sigstore.bundle.predicateType": predicateType,
		},
	}
	return PushReferrerManifest(ctx, reg, d.Context(), m)
}

// PushReferrerManifest pushes m by digest into repo.
func PushReferrerManifest(ctx context.Context, reg Registry, repo name.Repository, m any) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	h, _, err := v1.SHA256(bytes.NewReader(b))
	if err != nil {
		return err
	}
	ref := repo.Digest(h.String())
	if err := remote.Put(ref, rawManifest{b: b, mt: types.OCIManifestSchema1}, append(options(reg), remote.WithContext(ctx))...); err != nil {
		return fmt.Errorf("sigtest: push referrer: %w", err)
	}
	return nil
}

func descriptorOf(l v1.Layer, mt string) v1.Descriptor {
	d, _ := l.Digest()
	sz, _ := l.Size()
	return v1.Descriptor{MediaType: types.MediaType(mt), Digest: d, Size: sz}
}

// AppendLegacyLayer adds a layer to the cosign tag "sha256-<hex><suffix>"
// (".sig" or ".att") of ref, creating the image if needed, as cosign does.
func AppendLegacyLayer(ctx context.Context, reg Registry, ref, suffix string, content []byte, mediaType string, ann map[string]string) error {
	d, err := parseDigestRef(ref)
	if err != nil {
		return err
	}
	tag := d.Context().Tag(strings.Replace(d.DigestStr(), ":", "-", 1) + suffix)
	opts := append(options(reg), remote.WithContext(ctx))
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	if img, err := remote.Image(tag, opts...); err == nil {
		base = img
	} else {
		var te *transport.Error
		if !errors.As(err, &te) || te.StatusCode != http.StatusNotFound {
			return fmt.Errorf("sigtest: read %s: %w", tag, err)
		}
	}
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:       static.NewLayer(content, types.MediaType(mediaType)),
		Annotations: ann,
		MediaType:   types.MediaType(mediaType),
	})
	if err != nil {
		return err
	}
	if err := remote.Write(tag, img, opts...); err != nil {
		return fmt.Errorf("sigtest: push %s: %w", tag, err)
	}
	return nil
}
