#!/usr/bin/env bash
# Sets up, builds and runs every test (unit tests in-process; integration tests start real
# ps_coordinator / ps_server / ps_worker processes on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bazel build //...
bazel build --define=cuda=off //...
bazel test --nocache_test_results //... "$@"
# The GPU worker's whole path (ps_worker --device=auto -> the CUDA GPT, through a real cluster) on
# the CPU SIMT simulator: the real .cu kernels, no GPU needed (worker/cuda/README.md).
bazel test --nocache_test_results --define=cuda=simt //tests:cluster_test \
  --test_filter='ClusterTest.Gpt*' "$@"
