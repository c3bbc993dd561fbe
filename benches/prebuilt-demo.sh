# Sourced by footprint.sh and startup-order.sh, from the repository root.
#
#   prebuilt_demo OUT.toml
#
# Builds the demo's two functions and writes the demo's manifest with its
# sources pointing at the built .wasm components, as a deployed node runs
# it (no `cargo build` at each start).
prebuilt_demo() {
  rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
  cargo build -q --release --target wasm32-wasip2 --manifest-path functions/Cargo.toml \
    --target-dir target/functions -p filter -p transform
  local wasm=$PWD/target/functions/wasm32-wasip2/release
  sed -e "s#\"../../functions/filter\"#\"$wasm/filter.wasm\"#" \
      -e "s#\"../../functions/transform\"#\"$wasm/transform.wasm\"#" \
      examples/demo/brink.toml > "$1"
  grep -q "$wasm/filter.wasm" "$1" || {
    echo "examples/demo/brink.toml no longer names \"../../functions/filter\"; update benches/prebuilt-demo.sh" >&2
    return 1
  }
}
