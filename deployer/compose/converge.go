package compose

import (
	"context"
	"errors"
	"fmt"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/docker/compose/v5/pkg/api"
)

func (d *Deployer) gate() gate {
	return gate{engine: d.engine, samples: d.opts.HealthSamples, interval: d.opts.HealthInterval, timeout: d.opts.HealthTimeout}
}

// converge makes the SDK recreate the service's containers from p narrowed
// to it, and returns the new container IDs once every replica runs imageID.
func (d *Deployer) converge(ctx context.Context, p *types.Project, svc string, replicas int, labels map[string]string, imageID string) ([]string, error) {
	n, err := narrow(p, svc, replicas, labels)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, d.opts.ConvergeTimeout)
	defer cancel()
	err = d.sdk.Up(cctx, n, api.UpOptions{
		Create: api.CreateOptions{
			Services:             n.ServiceNames(),
			Recreate:             api.RecreateDiverged,
			RecreateDependencies: api.RecreateNever,
			Inherit:              true,
			QuietPull:            true,
			IgnoreOrphans:        true,
		},
		Start: api.StartOptions{Project: n},
	})
	if err != nil {
		if errors.Is(cctx.Err(), context.DeadlineExceeded) {
			return nil, fmt.Errorf("compose up %s: not done within %s: %w", svc, d.opts.ConvergeTimeout, err)
		}
		return nil, fmt.Errorf("compose up %s: %w", svc, err)
	}
	ctrs, err := d.serviceContainers(ctx, p.Name, svc)
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(ctrs))
	for _, c := range ctrs {
		if c.ImageID != imageID {
			return nil, fmt.Errorf("compose up %s: container %s runs %s, want %s", svc, canonicalName(c), shortID(c.ImageID), shortID(imageID))
		}
		ids = append(ids, c.ID)
	}
	if len(ids) != replicas {
		return nil, fmt.Errorf("compose up %s: %d container(s), want %d", svc, len(ids), replicas)
	}
	return ids, nil
}
