#!/usr/bin/env bash
# GPU check: runs Brink's inference on an NVIDIA GPU through ONNX Runtime's
# CUDA provider, and reports the figures.
#
#   benches/gpu-check.sh
#
# What it needs, and how it finds it (nothing is shipped in the repository;
# the CUDA provider alone is ~284 MB):
#   - an NVIDIA driver (nvidia-smi);
#   - a CUDA build of ONNX Runtime: ORT_DYLIB_PATH if it is set and has
#     libonnxruntime_providers_cuda.so beside it; else the first Python
#     environment it finds with pip's `onnxruntime-gpu` installed (the
#     interpreters on PATH, then $BRINK_GPU_VENV, default /opt/brink-gpu-venv);
#   - the CUDA and cuDNN libraries that build was made for (onnxruntime-gpu
#     1.31 on PyPI is a CUDA 13 build): the system's (ldconfig, /usr/local/cuda),
#     or NVIDIA's pip wheels in the same environment (site-packages/nvidia/*/lib),
#     which this script adds to LD_LIBRARY_PATH.
# To make such an environment where PyPI can be reached:
#   python3 -m venv /opt/brink-gpu-venv
#   /opt/brink-gpu-venv/bin/pip install onnxruntime-gpu nvidia-cudnn-cu13 nvidia-cublas nvidia-cuda-runtime nvidia-cufft nvidia-curand
#
# Then it runs, on the GPU:
#   1. the inference tests with BRINK_REQUIRE_CUDA=1, so a `target = "gpu"`
#      model that falls back or fails is a failure, not a skip;
#   2. the inference benchmark with BRINK_BENCH_GPU=1 (onnxruntime models on
#      CUDA; tract stays on the CPU as the reference), into target/gpu-check.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '== %s\n' "$*"; }

command -v nvidia-smi >/dev/null || { echo "error: no nvidia-smi: this machine has no NVIDIA driver" >&2; exit 1; }
say "GPU"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

has_cuda_provider() { [ -n "$1" ] && [ -e "$(dirname "$1")/libonnxruntime_providers_cuda.so" ]; }

library="${ORT_DYLIB_PATH:-}"
site=""
if ! has_cuda_provider "$library"; then
  library=""
  for py in python3 python "${BRINK_GPU_VENV:-/opt/brink-gpu-venv}/bin/python"; do
    command -v "$py" >/dev/null 2>&1 || [ -x "$py" ] || continue
    capi=$("$py" - <<'PY' 2>/dev/null || true
import importlib.util, os
spec = importlib.util.find_spec("onnxruntime")
if spec and spec.submodule_search_locations:
    print(os.path.join(list(spec.submodule_search_locations)[0], "capi"))
PY
)
    [ -n "$capi" ] || continue
    candidate=$(ls "$capi"/libonnxruntime.so.* 2>/dev/null | head -n 1 || true)
    if has_cuda_provider "$candidate"; then
      library="$candidate"
      site="$(dirname "$(dirname "$capi")")"
      break
    fi
  done
fi
if [ -z "$library" ]; then
  echo "error: no CUDA build of ONNX Runtime found: set ORT_DYLIB_PATH to a libonnxruntime.so with" \
       "libonnxruntime_providers_cuda.so beside it, or pip install onnxruntime-gpu (see the top of this script)" >&2
  exit 1
fi
export ORT_DYLIB_PATH="$library"
say "ONNX Runtime: $ORT_DYLIB_PATH"

# NVIDIA's pip wheels put CUDA and cuDNN under site-packages/nvidia/<lib>/lib.
if [ -n "$site" ] && [ -d "$site/nvidia" ]; then
  for dir in "$site"/nvidia/*/lib; do
    [ -d "$dir" ] && LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  done
fi
[ -d /usr/local/cuda/lib64 ] && LD_LIBRARY_PATH="/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}"

say "inference tests on the GPU"
BRINK_REQUIRE_ONNXRUNTIME=1 BRINK_REQUIRE_CUDA=1 cargo test -p brink-tests --test integration nn:: -- --test-threads 1

say "inference benchmark (onnxruntime on CUDA)"
mkdir -p target
BRINK_BENCH_GPU=1 cargo bench -p brink-host --bench nn | tee target/gpu-check.txt
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader >> target/gpu-check.txt
say "figures in target/gpu-check.txt"
