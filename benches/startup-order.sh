#!/usr/bin/env bash
# Writes packaging/brink.order: the functions `brink up` runs to start the
# demo from a warm compile cache and to sit idle, then those an event runs,
# as lld's --symbol-ordering-file. `just dist` links the shipped binary with
# it, so the code a start runs lies together in a few pages instead of
# spread over the 27 MiB of `.text`; the kernel's fault-around maps 64 KiB
# around every page a process touches, which is most of an idle node's RSS
# (BENCHMARKS.md, "The binary and the idle footprint").
#
#   just dist && bash benches/startup-order.sh && just dist
#
# Needs valgrind (apt). The profile is exact (callgrind records every
# function that ran), not sampled. Symbols the next build no longer has
# are skipped by the linker, so a stale order file costs pages, never
# correctness; rerun this when start-up code changes much.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BRINK=${BRINK:-$ROOT/target/dist/brink}
[ -x "$BRINK" ] || { echo "run \`just dist\` first" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "install valgrind (apt-get install valgrind)" >&2; exit 1; }
if curl -s -o /dev/null http://127.0.0.1:8080/healthz; then
  echo "something already listens on 127.0.0.1:8080; stop it first" >&2; exit 1
fi
WORK=$(mktemp -d)
PID=
trap 'if [ -n "$PID" ]; then kill -9 "$PID" 2>/dev/null || true; fi; rm -rf "$WORK"' EXIT
. benches/prebuilt-demo.sh
prebuilt_demo "$WORK/prebuilt.toml"
export BRINK_LOG=warn BRINK_CACHE_DIR=$WORK/cache BRINK_DATA_DIR=$WORK/data

wait_ready() { # pid seconds
  for _ in $(seq $(($2 * 10))); do
    curl -sf -o /dev/null http://127.0.0.1:8080/healthz && return 0
    kill -0 "$1" 2>/dev/null || { echo "brink up exited" >&2; return 1; }
    sleep 0.1
  done
  echo "not ready in $2 s" >&2; return 1
}

# Fill the compile cache, as a warm start finds it. Under valgrind: the
# CPU it emulates has other features, and compiled code is cached per
# feature set. The pool's 2 TiB of address space is more than valgrind
# can map.
valgrind -q --tool=none "$BRINK" up "$WORK/prebuilt.toml" --max-instances 4 & PID=$!
wait_ready $PID 600; kill -TERM $PID; wait $PID || true; PID=

valgrind --tool=callgrind --demangle=no --dump-instr=no --compress-strings=no --separate-recs=1 \
  --callgrind-out-file="$WORK/cg.%p" \
  "$BRINK" up "$WORK/prebuilt.toml" --max-instances 4 & PID=$!
wait_ready $PID 600
sleep 3
callgrind_control -d start-and-idle $PID >/dev/null
for i in 1 2 3; do
  curl -sf -o /dev/null http://127.0.0.1:8080/events/temperature \
    -H 'content-type: application/cloudevents+json' -d @examples/events/reading-hot.json
  "$BRINK" publish --manifest "$WORK/prebuilt.toml" sensors/t-$i/temperature "{\"device\":\"t-$i\",\"value\":4$i}"
done
sleep 2
kill -TERM $PID; wait $PID || true; PID=

# Rust symbols only (the linker places nothing else by name), each once,
# start and idle first, then what the events ran.
names() { grep -h '^fn=' "$@" | sed -e 's/^fn=//' -e "s/'[0-9]*\$//" \
  | grep -E '^_(ZN|R)' | awk '!seen[$0]++'; }
first=$(ls "$WORK"/cg.*.1 2>/dev/null | head -1)
[ -n "$first" ] || { echo "callgrind wrote no start-up dump" >&2; exit 1; }
mkdir -p packaging
{ names "$first"; names "$WORK"/cg.*; } | awk '!seen[$0]++' > packaging/brink.order
echo "packaging/brink.order: $(wc -l < packaging/brink.order) functions ($(names "$first" | wc -l) at start and idle)"
