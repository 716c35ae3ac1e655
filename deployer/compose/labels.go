package compose

import (
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"strings"

	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/imageref"
)

// Labels shipwatch puts on the containers a rollout creates. They are
// Compose "custom labels", which are not part of the config-hash, so they
// never make `docker compose up` recreate anything. They are how Rollback
// finds the previous version on the engine alone.
const (
	labelPrefix = "io.shipwatch."
	// LabelPrevious is the image that ran before the rollout that created
	// the container, pinned: "repo:tag@sha256:…".
	LabelPrevious = labelPrefix + "compose.previous"
	// LabelPreviousID is the local image ID of that image.
	LabelPreviousID = labelPrefix + "compose.previous-id"
	// LabelRollbackTag is the tag that protects that image from pruning.
	LabelRollbackTag = labelPrefix + "compose.rollback-tag"
)

// RollbackTag is the tag shipwatch gives the image a service ran before
// its last rollout, in the service's own repository, so that `docker image
// prune` cannot remove it: "shipwatch-rollback.<project>.<service>" (a hash
// of both when that is longer than a tag may be).
func RollbackTag(project, service string) string {
	tag := "shipwatch-rollback." + project + "." + service
	if len(tag) > 128 || !imageref.ValidTag(tag) {
		sum := sha256.Sum256([]byte(project + "/" + service))
		tag = "shipwatch-rollback." + hex.EncodeToString(sum[:8])
	}
	return tag
}

func rollbackRef(repo imageref.Ref, t deployer.Target) string {
	return repo.WithTag(RollbackTag(t.Compose.Project, t.Compose.Service)).String()
}

// previousLabels records the version that runs now on the containers that
// are about to replace it.
func previousLabels(s *service, rollbackRef string) map[string]string {
	prev := s.image.Tagged()
	if s.running != "" {
		prev = prev.WithDigest(s.running)
	}
	return map[string]string{
		LabelPrevious:    prev.String(),
		LabelPreviousID:  s.imageID,
		LabelRollbackTag: rollbackRef,
	}
}

// ownLabels returns shipwatch's labels of a container, to carry them over
// when a failed rollout restores the containers they were on.
func ownLabels(labels map[string]string) map[string]string {
	out := maps.Clone(labels)
	maps.DeleteFunc(out, func(k, _ string) bool { return !strings.HasPrefix(k, labelPrefix) })
	return out
}
