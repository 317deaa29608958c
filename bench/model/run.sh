#!/bin/bash
# Builds and runs the CPU model throughput benchmark (GPT and MLP forward+backward tokens/s).
# Arguments go to the binary, e.g. --models=gpt --iters=50 --out=bench/results/x.json.
# The binary sets OPENBLAS_CORETYPE and OPENBLAS_NUM_THREADS=1 itself when they are unset (and
# re-executes); export them to override. Results move +-20% with other load on this 2-core VM:
# compare runs made back to back.
set -euo pipefail
cd "$(dirname "$0")/../.."
bazel build //bench/model:model_throughput
mkdir -p bench/results
exec bazel-bin/bench/model/model_throughput "$@"
