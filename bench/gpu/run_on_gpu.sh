#!/bin/bash
# On the GPU machine: runs gpu_model_bench and the PyTorch baseline on the same GPU, one after the
# other, and writes bench/results/gpu_<device>_<date>.json with both and the ratios ours/PyTorch.
#   BENCH: the benchmark binary (default bench/gpu/pack/gpu_model_bench, made by pack.sh)
#   COMMIT: recorded in the results (default bench/gpu/pack/COMMIT, then git)
#   TORCH_ARGS: extra arguments of torch_baseline.py (e.g. "--compile=eager")
# Arguments go to both (e.g. --configs=shakespeare_char --iters=50).
set -euo pipefail
cd "$(dirname "$0")/../.."
BENCH=${BENCH:-bench/gpu/pack/gpu_model_bench}
COMMIT=${COMMIT:-$(cat bench/gpu/pack/COMMIT 2>/dev/null || git rev-parse HEAD 2>/dev/null || echo unknown)}
OUT_DIR=${OUT_DIR:-bench/results}
PYTHON=${PYTHON:-python3}
if [ ! -x "$BENCH" ]; then
  echo "no benchmark binary at $BENCH: run bench/gpu/pack.sh on the build machine first" >&2
  exit 1
fi
# cuBLAS/cuBLASLt 13: the toolkit's, else PyTorch's wheel (nvidia/cublas/lib), if the loader misses.
if ! ldd "$BENCH" | grep -q "libcublasLt.so.13 => /"; then
  extra=$("$PYTHON" - <<'PY' 2>/dev/null || true
import glob, os, site
dirs = set()
for base in site.getsitepackages():
    for lib in glob.glob(os.path.join(base, "nvidia", "*", "lib", "libcu*.so.13")):
        dirs.add(os.path.dirname(lib))
print(":".join(sorted(dirs)))
PY
)
  export LD_LIBRARY_PATH="/usr/local/cuda/lib64${extra:+:$extra}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
ldd "$BENCH"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
tmp=$(mktemp -d)
"$BENCH" --commit="$COMMIT" --out="$tmp/ours.json" "$@"
"$PYTHON" bench/gpu/torch_baseline.py --commit="$COMMIT" --out="$tmp/torch.json" ${TORCH_ARGS:-} "$@"
"$PYTHON" bench/gpu/merge_results.py "$tmp/ours.json" "$tmp/torch.json" --out_dir "$OUT_DIR"
