#!/usr/bin/env bash
# Start-to-ready time and idle RSS of `brink up` on the demo app.
#
#   bash benches/footprint.sh
#
# "ready" is the first 200 from GET /healthz, which `brink up` serves only
# after every function loaded and the MQTT subscriptions were granted. The
# first start compiles the functions (empty cache); the others load the
# compile cache. Sources are crate directories, so every start also runs
# `cargo build` on them (a no-op build, included in the figure).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release -p brink-host
CACHE=$(mktemp -d)
trap 'rm -rf "$CACHE"' EXIT
for run in cold warm warm; do
  start=$(date +%s%N)
  BRINK_LOG=warn BRINK_CACHE_DIR=$CACHE target/release/brink up examples/demo/brink.toml & PID=$!
  until curl -sf -o /dev/null http://127.0.0.1:8080/healthz; do sleep 0.005; done
  ready=$(( ($(date +%s%N) - start) / 1000000 ))
  sleep 3
  rss=$(awk '/VmRSS/ {print $2}' /proc/$PID/status)
  kill -TERM $PID; wait $PID
  echo "$run start: ready in ${ready} ms, idle RSS $((rss / 1024)) MiB"
done
