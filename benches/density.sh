#!/usr/bin/env bash
# Density: start-to-ready and idle RSS of `brink up` with 1, 100, 1,000 and
# 10,000 deployed functions, all the same component or spread over 10
# different ones.
#
#   bash benches/density.sh            # every size
#   SIZES="1 1000" bash benches/density.sh
#
# Each function has an HTTP trigger of its own (`/f-<n>`), so every one is
# routed; no MQTT, so the figures are the functions' own. "ready" is the
# first 200 from GET /healthz, served once every function is loaded. Idle
# RSS is read from /proc 3 s after ready, on a warm compile cache (a second
# start); "per function" is the RSS above the 1-function node, divided by
# the functions added.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SIZES=${SIZES:-1 100 1000 10000}
cargo build -q --release -p brink-host
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
PACKAGES=(echo filter transform fixture-trap fixture-sleep fixture-spin-loop fixture-flood
  fixture-memory-bomb fixture-counter fixture-contract-0-1-0)
cargo build -q --release --target wasm32-wasip2 --manifest-path functions/Cargo.toml \
  --target-dir target/functions $(printf -- '-p %s ' "${PACKAGES[@]}")
WASM=$ROOT/target/functions/wasm32-wasip2/release
COMPONENTS=()
for p in "${PACKAGES[@]}"; do COMPONENTS+=("$WASM/${p//-/_}.wasm"); done
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
PORT=18080

manifest() { # count kinds > file
  echo "brink_manifest_version = 1"
  echo "data_dir = \"$WORK/data\""
  echo "[http]"
  echo "listen = \"127.0.0.1:$PORT\""
  for ((i = 0; i < $1; i++)); do
    echo "[function.f-$i]"
    echo "source = \"${COMPONENTS[$((i % $2))]}\""
    echo "triggers = [{ http = \"/f-$i\" }]"
  done
}

start() { # manifest -> "ready_ms rss_kib"
  rm -rf "$WORK/data"
  local begin ready rss
  begin=$(date +%s%N)
  BRINK_LOG=warn BRINK_CACHE_DIR=$WORK/cache target/release/brink up "$1" > /dev/null 2> "$WORK/brink.log" & PID=$!
  until curl -sf -o /dev/null "http://127.0.0.1:$PORT/healthz"; do
    kill -0 $PID 2>/dev/null || { cat "$WORK/brink.log" >&2; echo "brink up failed on $1" >&2; exit 1; }
    sleep 0.005
  done
  ready=$(( ($(date +%s%N) - begin) / 1000000 ))
  # Every function answers: the last one too.
  curl -sf -o /dev/null -X POST -H 'content-type: application/json' \
    -H 'ce-specversion: 1.0' -H 'ce-id: d-1' -H 'ce-source: /bench' -H 'ce-type: t' \
    --data '{"device":"d","value":50}' "http://127.0.0.1:$PORT/f-0" || true
  sleep 3
  rss=$(awk '/VmRSS/ {print $2}' /proc/$PID/status)
  kill -TERM $PID; wait $PID || true
  echo "$ready $rss"
}

echo "| functions | components | ready (warm cache) | idle RSS | RSS per added function |"
echo "|---|---|---|---|---|"
for kinds in 1 10; do
  base=""
  for n in $SIZES; do
    [ "$kinds" -gt "$n" ] && continue
    manifest "$n" "$kinds" > "$WORK/m.toml"
    start "$WORK/m.toml" > /dev/null # fills the compile cache
    read -r ready rss < <(start "$WORK/m.toml")
    [ -z "$base" ] && base=$rss && basen=$n
    per="—"
    if [ "$n" -gt "$basen" ]; then per="$(( (rss - base) * 1024 / (n - basen) / 1000 )) KB"; fi
    echo "| $n | $kinds | ${ready} ms | $((rss / 1024)) MiB | $per |"
  done
done
