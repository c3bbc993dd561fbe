#!/usr/bin/env bash
# What WASI 0.3 support costs a WASI 0.2 call: the `invoke/echo` benchmark of
# a host built with the `p3` feature (the default) and of one built without
# it, run in turns in one go (A B A B), each figure a criterion median.
#
#   bash benches/p3-cost.sh            # 2 rounds
#   ROUNDS=3 bash benches/p3-cost.sh
#
# The p3 build also prints `invoke-all-concurrent/echo/*` (the same P2 call
# on the concurrent engine, what a single engine would cost it) and the P3
# fixture's own figures (`invoke-p3/*`, `load-p3/*`).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-2}
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

bench_binary() {
  cargo bench -p brink-host --bench invoke --no-run --message-format=json "$@" 2>/dev/null |
    grep '"kind":\["bench"\]' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1
}
WITH=$(bench_binary)
WITHOUT=$(bench_binary --no-default-features)
[ -x "$WITH" ] && [ -x "$WITHOUT" ] || { echo "error: the benchmark did not build" >&2; exit 1; }
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

for round in $(seq "$ROUNDS"); do
  for build in with without; do
    bin=$WITH; [ "$build" = without ] && bin=$WITHOUT
    BRINK_BENCH_ONLY_ECHO=1 "$bin" --bench --noplot "invoke" 2>/dev/null > "$OUT/$build-$round.txt"
  done
done

# The median (the middle of criterion's three figures) of `name`, in µs.
median() {
  awk -v name="$1" '
    $1 == name { found = 1 }
    found && /time:/ {
      for (i = 1; i <= NF; i++) if ($i == "time:") break
      v = $(i + 3); u = $(i + 4)
      if (u == "ns") v /= 1000; else if (u == "ms") v *= 1000
      printf "%.2f", v; exit
    }' "$2"
}

printf '%-42s %10s %10s %8s\n' "benchmark (round)" "with p3" "without" "ratio"
for round in $(seq "$ROUNDS"); do
  for name in invoke/echo/fresh-instance invoke/echo/warm-instance; do
    a=$(median "$name" "$OUT/with-$round.txt")
    b=$(median "$name" "$OUT/without-$round.txt")
    printf '%-42s %8s µs %8s µs %8s\n' "$name ($round)" "$a" "$b" \
      "$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f", a / b }')"
  done
done
echo
echo "p3 build only (last round):"
grep -E "^(invoke-all-concurrent|invoke-p3|load-p3)/" -A1 "$OUT/with-$ROUNDS.txt" | grep -E "^[a-z]|time:" || true
