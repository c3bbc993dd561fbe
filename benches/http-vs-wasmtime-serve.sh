#!/usr/bin/env bash
# HTTP throughput: brink's `POST /functions/echo` against `wasmtime serve`
# running benches/hello-http (the same echo, as a wasi:http component), on
# this machine, in the same run, with the same load tool and settings.
#
#   bash benches/http-vs-wasmtime-serve.sh
#
# `-S cli` links wasi:cli, which Rust's std imports (brink links it too).
#
# Installs what it needs (not part of CI): wrk from apt, wasmtime-cli from
# crates.io (same version as our wasmtime) under target/bench-tools.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-32}
ROUNDS=${ROUNDS:-3}
WASMTIME_VERSION=48.0.8

if ! command -v wrk >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq wrk
fi
WASMTIME=$ROOT/target/bench-tools/bin/wasmtime
if [ ! -x "$WASMTIME" ]; then
  cargo install wasmtime-cli --version "$WASMTIME_VERSION" --locked --root "$ROOT/target/bench-tools"
fi
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

cargo build -q --release -p brink-host
cargo build -q --release --target wasm32-wasip2 --manifest-path benches/hello-http/Cargo.toml --target-dir target/bench-hello
HELLO=$ROOT/target/bench-hello/wasm32-wasip2/release/hello_http.wasm

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
BRINK_PORT=$(free_port); SERVE_PORT=$(free_port); POOL_PORT=$(free_port)
WORK=$(mktemp -d)
cat > "$WORK/brink.toml" <<TOML
brink_manifest_version = 1
[http]
listen = "127.0.0.1:$BRINK_PORT"
[function.echo]
source = "$ROOT/functions/echo"
limits = { concurrency = 64 }
[function.echo-warm]
source = "$ROOT/functions/echo"
limits = { concurrency = 64 }
instance_reuse = 1000
TOML
cat > "$WORK/brink.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"device":"t-1","value":31.5}'
wrk.headers["content-type"] = "application/json"
wrk.headers["ce-specversion"] = "1.0"
wrk.headers["ce-id"] = "bench-1"
wrk.headers["ce-source"] = "/bench"
wrk.headers["ce-type"] = "com.example.reading"
LUA
cat > "$WORK/serve.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"device":"t-1","value":31.5}'
wrk.headers["content-type"] = "application/json"
LUA

BRINK_LOG=warn BRINK_CACHE_DIR=$WORK/cache target/release/brink up "$WORK/brink.toml" & BRINK_PID=$!
"$WASMTIME" serve -S cli --addr "127.0.0.1:$SERVE_PORT" "$HELLO" >/dev/null 2>&1 & SERVE_PID=$!
# The same with wasmtime's pooling allocator, which brink uses too.
"$WASMTIME" serve -S cli -O pooling-allocator --addr "127.0.0.1:$POOL_PORT" "$HELLO" >/dev/null 2>&1 & POOL_PID=$!
trap 'kill $BRINK_PID $SERVE_PID $POOL_PID 2>/dev/null; rm -rf "$WORK"' EXIT
for port in $BRINK_PORT $SERVE_PORT $POOL_PORT; do
  for _ in $(seq 300); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
done
# Both answer correctly before anything is timed.
curl -sf -X POST "http://127.0.0.1:$BRINK_PORT/functions/echo" -H 'content-type: application/json' \
  -H 'ce-specversion: 1.0' -H 'ce-id: x' -H 'ce-source: /b' -H 'ce-type: t' -d '{"a":1}' >/dev/null
curl -sf -X POST "http://127.0.0.1:$SERVE_PORT/" -d '{"a":1}' >/dev/null
curl -sf -X POST "http://127.0.0.1:$POOL_PORT/" -d '{"a":1}' >/dev/null

rps() { wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" -s "$2" "$1" | awk '/Requests\/sec/ {print $2}'; }
wrk -t2 -c"$CONNECTIONS" -d3s -s "$WORK/brink.lua" "http://127.0.0.1:$BRINK_PORT/functions/echo" >/dev/null
wrk -t2 -c"$CONNECTIONS" -d3s -s "$WORK/serve.lua" "http://127.0.0.1:$SERVE_PORT/" >/dev/null
wrk -t2 -c"$CONNECTIONS" -d3s -s "$WORK/brink.lua" "http://127.0.0.1:$BRINK_PORT/functions/echo-warm" >/dev/null
wrk -t2 -c"$CONNECTIONS" -d3s -s "$WORK/serve.lua" "http://127.0.0.1:$POOL_PORT/" >/dev/null
# Interleaved rounds, so drift on this shared machine hits all alike.
B=(); W=(); S=(); P=()
for round in $(seq "$ROUNDS"); do
  B+=("$(rps "http://127.0.0.1:$BRINK_PORT/functions/echo" "$WORK/brink.lua")")
  S+=("$(rps "http://127.0.0.1:$SERVE_PORT/" "$WORK/serve.lua")")
  W+=("$(rps "http://127.0.0.1:$BRINK_PORT/functions/echo-warm" "$WORK/brink.lua")")
  P+=("$(rps "http://127.0.0.1:$POOL_PORT/" "$WORK/serve.lua")")
  echo "round $round: brink ${B[-1]} req/s (fresh instances), ${W[-1]} (warm instances); wasmtime serve ${S[-1]} req/s (defaults), ${P[-1]} (pooling allocator)"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { awk -v b="$1" -v s="$2" 'BEGIN {printf "%.2f", b/s}'; }
MB=$(median "${B[@]}"); MW=$(median "${W[@]}"); MS=$(median "${S[@]}"); MP=$(median "${P[@]}")
echo "median req/s: brink fresh $MB, brink warm $MW, wasmtime serve $MS, wasmtime serve pooling $MP"
echo "brink fresh / wasmtime serve: $(ratio "$MB" "$MS")x (pooling: $(ratio "$MB" "$MP")x)"
echo "brink warm / wasmtime serve: $(ratio "$MW" "$MS")x (pooling: $(ratio "$MW" "$MP")x)"
