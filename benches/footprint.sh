#!/usr/bin/env bash
# Start-to-ready time and idle RSS of `brink up` on the demo app.
#
#   bash benches/footprint.sh                 # target/release/brink
#   PROFILE=dist bash benches/footprint.sh    # the shipped build (`just dist`)
#
# "ready" is the first 200 from GET /healthz, which `brink up` serves only
# after every function loaded and the MQTT subscriptions were granted.
# Two forms of the demo:
# - as committed: sources are crate directories, so every start runs
#   `cargo build` on them (a no-op build once built, included in the figure);
# - prebuilt: the same manifest pointing at the built .wasm components, as a
#   deployed node runs it.
# The first start of each compiles the functions (empty compile cache); the
# next ones load the cache.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PROFILE=${PROFILE:-release}
if [ "$PROFILE" = dist ]; then
  # `just dist` links with packed relocations and strips; a plain build
  # of the profile would measure another binary.
  [ -x target/dist/brink ] || { echo "run \`just dist\` first" >&2; exit 1; }
else
  cargo build -q --profile "$PROFILE" -p brink-host
fi
BRINK=$ROOT/target/$PROFILE/brink
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
. benches/prebuilt-demo.sh
prebuilt_demo "$WORK/prebuilt.toml"

measure() { # form manifest cache
  for run in cold warm warm; do
    [ "$run" = cold ] && rm -rf "$3"
    start=$(date +%s%N)
    BRINK_LOG=warn BRINK_CACHE_DIR=$3 "$BRINK" up "$2" & PID=$!
    until curl -sf -o /dev/null http://127.0.0.1:8080/healthz; do sleep 0.005; done
    ready=$(( ($(date +%s%N) - start) / 1000000 ))
    sleep 3
    rss=$(awk '/VmRSS/ {print $2}' /proc/$PID/status)
    anon=$(awk '/RssAnon/ {print $2}' /proc/$PID/status)
    file=$(awk '/RssFile/ {print $2}' /proc/$PID/status)
    kill -TERM $PID; wait $PID
    echo "$1, $run start: ready in ${ready} ms, idle RSS $((rss / 1024)) MiB (heap and stacks $((anon / 1024)) MiB, the binary's pages $((file / 1024)) MiB)"
  done
}
measure "crate sources" examples/demo/brink.toml "$WORK/cache-crates"
measure "prebuilt .wasm" "$WORK/prebuilt.toml" "$WORK/cache-prebuilt"
