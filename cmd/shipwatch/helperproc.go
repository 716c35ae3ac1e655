package main

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
)

// helperEnv names the shipwatch binary that shipwatch-agent starts as its
// helper; `shipwatch agent` sets it to itself when it execs the lean agent.
const helperEnv = "SHIPWATCH_HELPER"

// Exit codes of the agent/helper pair.
const (
	// exitHelperLost: the helper died during a rollout; the agent exits so
	// that its restart reconciles the rollout from the journal.
	exitHelperLost = 70
	// exitHelperOrphaned: the agent died during a rollout; the helper stops.
	exitHelperOrphaned = 71
)

// configSum is the SHA-256 of the config file at path ("none" without
// one): a helper refuses to serve an agent that loaded another config.
func configSum(path string) string {
	if path == "" {
		return "none"
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "unreadable"
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
