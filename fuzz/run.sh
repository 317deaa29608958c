#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for FUZZ_SECONDS (30) from
# its checked-in corpus (fuzz/corpus/<name>): the wire decoder (outside Bazel, against the protobuf
# code Bazel generated) and //server:shard_store_fuzzer (Bazel with CC=clang --config=libfuzzer,
# in an output base of its own: switching compilers would rebuild the default one).
# Needs clang and libclang-rt-14-dev (scripts/setup.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${FUZZ_SECONDS:-30}"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1

# Runs fuzzer $1 from corpus fuzz/corpus/$2 (new inputs go to a scratch copy; a crashing input is
# kept in $FUZZ_ARTIFACTS, default /tmp).
run() {
  mkdir -p "$OUT/corpus-$2"
  echo "fuzz: $2 for ${SECONDS_EACH} s"
  local rc=0
  "$1" -max_total_time="$SECONDS_EACH" -seed=1 -print_final_stats=1 \
    -artifact_prefix="${FUZZ_ARTIFACTS:-/tmp}/$2-" "$OUT/corpus-$2" "fuzz/corpus/$2" \
    >"$OUT/$2.log" 2>&1 || rc=$?
  grep -E '^#[0-9]+[[:space:]]+DONE|^Done' "$OUT/$2.log" || true
  if [ "$rc" -ne 0 ]; then
    tail -60 "$OUT/$2.log"
    return "$rc"
  fi
}

bazel build //proto:parameter_server_cc >/dev/null 2>&1
GEN="$(bazel info bazel-bin 2>/dev/null)"
LIBS=($(pkg-config --libs grpc++ protobuf) -labsl_status -labsl_statusor -labsl_strings
      -labsl_cord -labsl_str_format_internal)
clang++ -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -I. \
  -I"$GEN" fuzz/wire_fuzzer.cc common/wire.cc common/bf16.cc "$GEN"/proto/parameter_server.pb.cc \
  "$GEN"/proto/types.pb.cc "${LIBS[@]}" -o "$OUT/wire_fuzzer"
run "$OUT/wire_fuzzer" wire

FUZZ_BASE="${PSRV_LIBFUZZER_OUTPUT_BASE:-$HOME/.cache/psrv-bazel-libfuzzer}"
CC=clang bazel --output_base="$FUZZ_BASE" build --symlink_prefix=/ --config=libfuzzer --define=cuda=off \
  //server:shard_store_fuzzer 2>&1 | grep -E '^ERROR' || true
BIN="$(CC=clang bazel --output_base="$FUZZ_BASE" info --config=libfuzzer bazel-bin 2>/dev/null)"
run "$BIN/server/shard_store_fuzzer" shard_store
