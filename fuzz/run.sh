#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (outside Bazel, whose toolchain here is gcc) against the
# protobuf code Bazel generated, and runs each for FUZZ_SECONDS (30) from its checked-in corpus.
# Needs clang and libclang-rt-14-dev (scripts/setup.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
bazel build //proto:parameter_server_cc >/dev/null 2>&1
OUT="${FUZZ_OUT:-$(mktemp -d)}"
GEN="$(bazel info bazel-bin 2>/dev/null)"
FLAGS=(-std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -I. -I"$GEN")
LIBS=($(pkg-config --libs grpc++ protobuf) -labsl_status -labsl_statusor -labsl_strings
      -labsl_cord -labsl_str_format_internal)
clang++ "${FLAGS[@]}" fuzz/wire_fuzzer.cc common/wire.cc "$GEN"/proto/parameter_server.pb.cc \
  "$GEN"/proto/types.pb.cc "${LIBS[@]}" -o "$OUT/wire_fuzzer"
mkdir -p "$OUT/corpus"
cp fuzz/corpus/wire/* "$OUT/corpus/"
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
  "$OUT/wire_fuzzer" -max_total_time="${FUZZ_SECONDS:-30}" -seed=1 -print_final_stats=1 \
  "$OUT/corpus" fuzz/corpus/wire
