package compose

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/docker/compose/v5/pkg/api"
	composesdk "github.com/docker/compose/v5/pkg/compose"
	"github.com/moby/moby/client"

	"github.com/shipwatch/shipwatch/deployer"
)

// drift compares what runs with what the files on disk say, the way the
// Compose SDK decides what `up` must change: the service's config-hash on
// every replica, and the config-hash of the networks and volumes the
// service uses (a diverged network would be recreated, stopping every
// container attached to it). It returns ErrDrift listing the differences.
func (d *Deployer) drift(ctx context.Context, s *service) (string, error) {
	want, err := d.expectedHash(ctx, s.project, s.config)
	if err != nil {
		return "", err
	}
	var diffs []string
	for _, c := range s.containers {
		if got := c.Labels[api.ConfigHashLabel]; got != want {
			diffs = append(diffs, fmt.Sprintf("container %s has config-hash %.12s, the files give %.12s", canonicalName(c), got, want))
		}
	}
	narrowed, err := narrow(s.project, s.name, len(s.containers), nil)
	if err != nil {
		return "", err
	}
	netDiffs, err := d.networkDrift(ctx, narrowed)
	if err != nil {
		return "", err
	}
	volDiffs, err := d.volumeDrift(ctx, narrowed)
	if err != nil {
		return "", err
	}
	diffs = append(append(diffs, netDiffs...), volDiffs...)
	if len(diffs) > 0 {
		return "", fmt.Errorf("%w: %s (the files were edited and not applied; run docker compose up -d or revert the edit, or allow drift to apply it with the update)",
			deployer.ErrDrift, strings.Join(diffs, "; "))
	}
	return "config-hash " + want[:12] + " matches", nil
}

func (d *Deployer) networkDrift(ctx context.Context, p *types.Project) ([]string, error) {
	list, err := d.engine.NetworkList(ctx, client.NetworkListOptions{Filters: make(client.Filters).Add("label", api.ProjectLabel+"="+p.Name)})
	if err != nil {
		return nil, fmt.Errorf("list networks of %s: %w", p.Name, err)
	}
	observed := map[string]string{}
	for _, n := range list.Items {
		observed[n.Labels[api.NetworkLabel]] = n.Labels[api.ConfigHashLabel]
	}
	var diffs []string
	for _, key := range sortedKeys(p.Networks) {
		cfg := p.Networks[key]
		got, ok := observed[key]
		if bool(cfg.External) || !ok || got == "" {
			continue
		}
		want, err := composesdk.NetworkHash(&cfg)
		if err != nil {
			return nil, err
		}
		if got != want {
			diffs = append(diffs, fmt.Sprintf("network %s differs from the files", key))
		}
	}
	return diffs, nil
}

func (d *Deployer) volumeDrift(ctx context.Context, p *types.Project) ([]string, error) {
	list, err := d.engine.VolumeList(ctx, client.VolumeListOptions{Filters: make(client.Filters).Add("label", api.ProjectLabel+"="+p.Name)})
	if err != nil {
		return nil, fmt.Errorf("list volumes of %s: %w", p.Name, err)
	}
	observed := map[string]string{}
	for _, v := range list.Items {
		observed[v.Labels[api.VolumeLabel]] = v.Labels[api.ConfigHashLabel]
	}
	var diffs []string
	for _, key := range sortedKeys(p.Volumes) {
		cfg := p.Volumes[key]
		got, ok := observed[key]
		if bool(cfg.External) || !ok || got == "" {
			continue
		}
		want, err := composesdk.VolumeHash(cfg)
		if err != nil {
			return nil, err
		}
		if got != want {
			diffs = append(diffs, fmt.Sprintf("volume %s differs from the files", key))
		}
	}
	return diffs, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
