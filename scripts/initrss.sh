#!/usr/bin/env bash
# Measures what linking a set of packages costs a process before it does any
# work: for each set it builds a program that only imports the packages (so
# their initialisers run), collects garbage, returns freed memory to the
# kernel and prints VmRSS = RssAnon + RssFile, with the stripped binary's size.
# It answers "which packages would a lean agent process leave out" for the
# RSS target of issue 6 (docs/benchmarks/agent.md).
#
#   scripts/initrss.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local CGO_ENABLED=0
work="$(mktemp -d ./.initrss.XXXXXX)" # inside the module, for its import paths
trap 'rm -rf "$work"' EXIT

m=github.com/shipwatch/shipwatch
idle="$m/config $m/state $m/watcher $m/discovery $m/api $m/metrics $m/notify github.com/robfig/cron/v3 github.com/rs/zerolog"
sets=(
  "nothing|"
  "the idle path (config, state, watcher, discovery, api, metrics, notify, cron, zerolog)|$idle"
  "the idle path + verify (sigstore-go)|$idle $m/verify"
  "the idle path + verify + deployer/swarm|$idle $m/verify $m/deployer/swarm"
  "the idle path + deployer/compose (the Compose SDK)|$idle $m/deployer/compose"
  "agent (everything shipwatch agent links)|$m/agent"
)
printf '| packages linked | VmRSS after init | RssAnon | RssFile | binary |\n|---|---|---|---|---|\n'
i=0
for s in "${sets[@]}"; do
  name="${s%%|*}"
  pkgs="${s#*|}"
  dir="$work/p$i"
  mkdir -p "$dir"
  {
    echo 'package main'
    echo 'import ('
    echo '	"fmt"'
    echo '	"os"'
    echo '	"runtime/debug"'
    echo '	"strings"'
    for p in $pkgs; do echo "	_ \"$p\""; done
    echo ')'
    cat <<'EOF'
func main() {
	debug.FreeOSMemory() // collects, then returns freed memory
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		panic(err)
	}
	kb := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 3 {
			kb[strings.TrimSuffix(f[0], ":")] = f[1]
		}
	}
	fmt.Println(kb["VmRSS"], kb["RssAnon"], kb["RssFile"])
}
EOF
  } >"$dir/main.go"
  go build -trimpath -ldflags "-s -w" -o "$dir/bin" "./$dir"
  read -r rss anon file < <("$dir/bin")
  size=$(stat -c %s "$dir/bin")
  awk -v n="$name" -v r="$rss" -v a="$anon" -v f="$file" -v s="$size" \
    'BEGIN { printf "| %s | %.1f MiB | %.1f MiB | %.1f MiB | %.1f MB |\n", n, r/1024, a/1024, f/1024, s/1e6 }'
  i=$((i + 1))
done
