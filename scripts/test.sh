#!/usr/bin/env bash
# Sets up, builds and runs every test (unit tests in-process; integration tests start real
# ps_coordinator / ps_server / ps_worker processes on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bazel build //...
bazel build --define=cuda=off //...
bazel test --nocache_test_results //... "$@"
