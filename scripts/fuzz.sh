#!/usr/bin/env bash
# Runs every `func FuzzXxx` in the module for the given time (default 5s).
set -euo pipefail
fuzztime="${1:-5s}"
cd "$(dirname "$0")/.."
grep -rl --include='*_test.go' '^func Fuzz' . | sort | while read -r file; do
  pkg="./$(dirname "${file#./}")"
  for target in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$file" | sed 's/^func //'); do
    echo "fuzz ${pkg} ${target} for ${fuzztime}"
    go test -run '^$' -fuzz "^${target}\$" -fuzztime "${fuzztime}" "${pkg}" >/tmp/shipwatch-fuzz.log 2>&1 || {
      cat /tmp/shipwatch-fuzz.log; exit 1; }
  done
done
