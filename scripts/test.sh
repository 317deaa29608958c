#!/usr/bin/env bash
# Sets up, builds and runs every test (unit tests in-process; integration tests start real
# ps_coordinator / ps_server / ps_worker processes on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bazel build //...
bazel build --define=cuda=off //...
bazel test --nocache_test_results //... "$@"
# The container images: deploy/build_images.sh --prebuilt builds all five with buildah (binaries
# from `bazel build -c opt` here), then the overlays' pods run from them with the manifests' command
# lines and a job must succeed (deploy/README.md). Passes with "SKIPPED: ..." without root or buildah.
/usr/bin/python3 -B deploy/tests/images_run_test.py
# The GPU worker's whole path (ps_worker --device=auto -> the CUDA GPT, through a real cluster) on
# the CPU SIMT simulator: the real .cu kernels, no GPU needed (worker/cuda/README.md).
bazel test --nocache_test_results --define=cuda=simt //tests:cluster_test \
  --test_filter='ClusterTest.Gpt*' "$@"
# The same for pipeline stages: one step of 2 groups x 2 CUDA stages against 2 CUDA workers.
bazel test --nocache_test_results --define=cuda=simt //tests:pipeline_test \
  --test_filter='PipelineJobTest.OneStep*' "$@"
# The unit and fuzz tests of common/, server/ and coordinator/ under AddressSanitizer (with leak
# checks) and UndefinedBehaviorSanitizer (gcc; .bazelrc --config=sanitize), CPU-only, and the
# worker's gRPC transport against an in-process ps_server (the batch calls: pieces cut at item
# edges on both sides). The integration tests under tests/ (real processes) are left out. A Bazel output base of its own, so
# that the default build's outputs are not rebuilt with other flags; actions come from the shared
# disk cache when they can. The fuzz tests run 10^4 requests per handler here (10^5 above).
bazel --output_base="${PSRV_SANITIZE_OUTPUT_BASE:-$HOME/.cache/psrv-bazel-sanitize}" test --symlink_prefix=/ \
  --nocache_test_results --config=sanitize --define=cuda=off --test_env=FUZZ_ITERATIONS=10000 \
  //common/... //server/... //coordinator/... //worker:server_transport_test "$@"
# The CUDA kernels and layers on the SIMT simulator under the same sanitizers: the simulator's
# device memory is exact-size heap memory, so a kernel that indexes past a buffer fails here (as
# does undefined behaviour). ASan's stack-use-after-return check is off for them: the simulator's
# fibers switch stacks with _longjmp and read other lanes' stack slots for warp shuffles, which
# that check takes for returned frames.
bazel --output_base="${PSRV_SANITIZE_OUTPUT_BASE:-$HOME/.cache/psrv-bazel-sanitize}" test --symlink_prefix=/ \
  --nocache_test_results --config=sanitize \
  --test_env=ASAN_OPTIONS=detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=0:check_initialization_order=1 \
  //worker/cuda:kernels_simt_test //worker/cuda:layers_simt_test "$@"
# libFuzzer (clang, ASan + UBSan) on the wire decoder, 30 s from fuzz/corpus/wire.
FUZZ_SECONDS=30 bash fuzz/run.sh
