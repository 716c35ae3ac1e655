// Package faults is shipwatch's fault-injection suite: a fault-injecting
// registry middleware (status codes, Retry-After, latency, hangs, resets,
// truncated bodies, tags moved or deleted between two requests), an engine
// API proxy that cuts the agent's connections as a dockerd restart would,
// seeded scenarios that drive the real agent binary against the real engine
// (Compose projects and single-node Swarm services), the seven invariants
// checked after every run, and the report table. See docs/faults.md.
package faults
