# Developer recipes. The README's commands need only cargo.

default: test

# Run the demo: filter sample readings.
demo:
    cargo run -p brink-host -- run functions/filter --event examples/events/readings-batch.json --config threshold=30

# All tests, after installing what they need (the README's test command).
test:
    scripts/test

# Fuzz one target, or all, for N minutes each: `just fuzz`, `just fuzz jwt 30`.
fuzz target="all" minutes="10":
    scripts/fuzz {{target}} {{minutes}}

# A longer storm of malformed requests against a running node's HTTP listener.
fuzz-http requests="20000":
    BRINK_HTTP_STORM={{requests}} cargo test -p brink-tests --test integration a_storm_of_malformed_requests -- --nocapture

# Everything CI checks.
ci:
    bash .ci/run

# Format both workspaces.
fmt:
    cargo fmt --all
    cargo fmt --all --manifest-path functions/Cargo.toml
    cargo fmt --all --manifest-path fuzz/Cargo.toml

# Lints, host and guests.
lint:
    cargo clippy --workspace --all-targets -- -D warnings
    cargo clippy --manifest-path functions/Cargo.toml --target wasm32-wasip2 --target-dir target/functions --workspace -- -D warnings

# The shipped binary, `target/dist/brink`: LTO, stripped, its line tables
# kept apart in `brink.debug` (found through .gnu_debuglink by gdb and by
# Rust's backtraces). Its relative relocations are packed (DT_RELR: 2.5 MiB
# less on disk and in memory), which needs glibc 2.36 or later (Debian 12,
# Ubuntu 22.10, RHEL 10) where it runs; `just dist relr=no` builds one for
# older systems.
dist relr="yes":
    cargo rustc --profile dist -p brink-host --bin brink -- {{ if relr == "yes" { "-C link-arg=-Wl,-z,pack-relative-relocs" } else { "" } }}
    objcopy --only-keep-debug target/dist/brink target/dist/brink.debug
    objcopy --strip-all --add-gnu-debuglink=target/dist/brink.debug target/dist/brink
    ls -l target/dist/brink target/dist/brink.debug

# Invocation benchmarks (see BENCHMARKS.md).
bench:
    cargo bench -p brink-host --bench invoke

# Build the example functions.
functions:
    cargo run -p brink-host -- build functions

# Inference benchmarks (tract; onnxruntime too where ORT_DYLIB_PATH is set).
bench-nn:
    cargo bench -p brink-host --bench nn

# The GPU path on an NVIDIA machine (see the script's header).
gpu-check:
    bash benches/gpu-check.sh

# Retrain the digits model and its held-out set (needs PyPI).
train-digits:
    python3 -m venv target/digits-venv
    target/digits-venv/bin/pip install -q scikit-learn onnx numpy onnxruntime
    target/digits-venv/bin/python examples/digits/train_digits.py
