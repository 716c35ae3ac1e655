// Package compose rolls a verified image digest into one service of a running
// Docker Compose project the way Compose itself would, proves the new
// containers healthy, and restores the previous version when they are not.
//
// The project is loaded from the containers' com.docker.compose.* labels with
// the Compose SDK (compose-go: .env, interpolation, profiles) and converged
// in-process with the official SDK, narrowed to the one service, so the
// compose config-hash stays what `docker compose up -d` computes: the user's
// next `up` recreates nothing. The order of the destructive steps, what the
// drift guard compares and the limits are described in docs/compose.md.
package compose
