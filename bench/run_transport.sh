#!/usr/bin/env bash
# Builds and runs the transport benchmark (bench/transport_bench.cc), writing its JSON report to
# bench/results/transport_<host>_<UTC time>.json, then the per-phase timings (bench/phase_bench.cc)
# to bench/results/phases_<host>_<UTC time>.txt (SKIP_PHASES=1 skips them). Extra arguments go to
# transport_bench, e.g.:
#   bench/run_transport.sh --sizes=1M,16M --servers=1 --seconds=3
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${repo}"

if ! command -v iperf3 >/dev/null 2>&1; then
  echo "note: iperf3 is not installed (apt-get install -y iperf3); its numbers will be null" >&2
fi

bazel build //bench:transport_bench //bench:null_server //bench:phase_bench //server:ps_server

commit="$(git rev-parse --verify -q HEAD 2>/dev/null || echo no-commit)"
if [[ -n "$(git status --porcelain 2>/dev/null)" ]]; then commit="${commit}-dirty"; fi

host="$(hostname)"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p bench/results

# glibc: keep tensor-sized buffers on the heap instead of mmap/munmap on every call, and do not
# give freed memory back (shared/ENVIRONMENT.md: pull 0.4-0.6 -> 1.2-1.4 GB/s). The servers
# inherit these from the benchmark.
export MALLOC_MMAP_THRESHOLD_=33554432
export MALLOC_TRIM_THRESHOLD_=1073741824

bazel-bin/bench/transport_bench \
  --server_binary="${repo}/bazel-bin/server/ps_server" \
  --null_server_binary="${repo}/bazel-bin/bench/null_server" \
  --commit="${commit}" \
  --out="bench/results/transport_${host}_${stamp}.json" \
  "$@"

if [[ "${SKIP_PHASES:-0}" != "1" ]]; then
  phases="bench/results/phases_${host}_${stamp}.txt"
  {
    load="$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# bench/phase_bench, commit ${commit}, $(date -u +%Y-%m-%dT%H:%M:%SZ), load ${load}"
    bazel-bin/bench/phase_bench
  } | tee "${phases}"
  echo "Wrote ${phases}"
fi
