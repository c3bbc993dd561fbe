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

# The shipped binary, `target/dist/brink`: LTO, stripped, relocations
# packed, start-up code placed together (scripts/dist says how and why);
# `just dist relr=no` for glibc older than 2.36.
dist relr="yes":
    scripts/dist {{relr}}

# Invocation benchmarks (see BENCHMARKS.md).
bench:
    cargo bench -p brink-host --bench invoke

# Per-language figures: Rust, Python, JavaScript, WASI 0.3 (see BENCHMARKS.md).
bench-languages:
    bash benches/languages.sh

# What WASI 0.3 support costs a WASI 0.2 call (see BENCHMARKS.md).
bench-p3:
    bash benches/p3-cost.sh

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
