#!/usr/bin/env bash
# Per-language figures: the Rust filter and its Python twin, the Rust
# transform and its JavaScript twin, and the Rust WASI 0.3 echo fixture,
# each loaded cold and from the compile cache, called on a fresh and on a
# warm instance, with each instance's linear memory and the component's size.
#
#   bash benches/languages.sh
#
# The Python and JS components are built with `brink build` (which installs
# componentize-py and componentize-js into target/toolchains on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
export BRINK_TOOLCHAINS_DIR="$PWD/target/toolchains"
cargo build -q --release -p brink-host --bin brink
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
build() {
  cp -r "functions/$1/$2" "$WORK/$2"
  rm -rf "$WORK/$2/target"
  local start=$SECONDS
  target/release/brink build "$WORK/$2" > "$WORK/$2.path"
  echo "built $1/$2 in $((SECONDS - start)) s: $(cat "$WORK/$2.path")" >&2
}
build python filter
build js transform
BRINK_BENCH_PYTHON=$(cat "$WORK/filter.path") BRINK_BENCH_JS=$(cat "$WORK/transform.path") \
  BRINK_BENCH_TUNING=0 cargo bench -p brink-host --bench invoke -- --noplot languages 2>/dev/null |
  grep -E "^languages|time:"
