#!/usr/bin/env bash
# Runs every `func FuzzXxx` in the module for the given time (default 5s).
#
# Go 1.26's fuzz coordinator can end a run that found nothing with a bare
# "context deadline exceeded" when -fuzztime expires while a worker is busy
# (golang/go#75804, fixed in Go 1.27). Such a run wrote no failing input; it
# is reported, its corpus is replayed as a plain test, and only a failure of
# that replay fails the script. A real finding always writes
# "Failing input written to testdata/fuzz/…" and fails at once, as does any
# other error.
set -euo pipefail
fuzztime="${1:-5s}"
cd "$(dirname "$0")/.."
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
grep -rl --include='*_test.go' '^func Fuzz' . | sort | while read -r file; do
  pkg="./$(dirname "${file#./}")"
  for target in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$file" | sed 's/^func //'); do
    echo "fuzz ${pkg} ${target} for ${fuzztime}"
    if go test -run '^$' -fuzz "^${target}\$" -fuzztime "${fuzztime}" "${pkg}" >"$log" 2>&1; then
      continue
    fi
    if grep -q 'context deadline exceeded' "$log" &&
      ! grep -Eq 'Failing input written|panic:|_test\.go:[0-9]+:' "$log"; then
      echo "  ${target} ended on Go's fuzz-time boundary race (golang/go#75804) without a failing input; replaying its corpus"
      if go test -count=1 -run "^${target}\$" "${pkg}" >"$log" 2>&1; then
        continue
      fi
    fi
    cat "$log"
    exit 1
  done
done
