#!/bin/bash
# On the GPU machine, in one call of the device tool: everything this project measures on a GPU,
# stage by stage within a time budget, into one archive under $OUT (the tool brings back only a
# few files, and a session has minutes of device time, start included):
#   1. tests    the packed GPU test binaries ("SKIP: no CUDA GPU" fails here: the machine has one)
#   2. bench    run_on_gpu.sh: gpu_model_bench and torch_baseline.py, both configs, every attention
#               path, the attention micro rows, merged with the ratios ours/PyTorch
#   3. gelu     gpu_model_bench for gpt2_124m with --recompute_gelu=0 (what the recompute costs),
#               then both configs with --gelu_epilogue=1 (the fc product's GELU in cuBLASLt's
#               epilogue) and with --cuda_graph=1 (each step one CUDA graph); compare with the
#               bench stage's rows
#   4. profile  per-kernel GPU time of both configs (nsys's cuda_gpu_kern_sum as CSV), when Nsight
#               Systems is there
#   5. e2e      run_e2e.sh, the nanoGPT shakespeare-char recipe through a server and a GPU worker,
#               cut to the time left (a cut run still records its curve)
# A stage that fails is recorded and the next one runs. What comes back: $OUT/gpu_session.tar.gz
# (results/*.json, logs/*, summary.txt) and $OUT/summary.txt.
#   BUDGET_S: seconds for all stages (default 480)
#   STAGES: which stages, in order (default "tests bench gelu profile e2e")
#   PACK: the unpacked pack (default bench/gpu/pack; unpacked from bench/gpu/pack.tar.xz if missing)
# Usage with the device tool: carry ["bench/gpu/pack.tar.xz"], command
#   bash bench/gpu/device_session.sh
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
BUDGET_S=${BUDGET_S:-480}
STAGES=${STAGES:-tests bench gelu profile e2e}
PACK=${PACK:-bench/gpu/pack}
OUT=${OUT:-$(mktemp -d)}
start=$(date +%s)
work=$(mktemp -d)
mkdir -p "$work/results" "$work/logs"
summary="$work/summary.txt"

say() { echo "$*" | tee -a "$summary"; }
left() { echo $((BUDGET_S - ($(date +%s) - start))); }
# stage NAME MIN_SECONDS CAP_SECONDS COMMAND: runs COMMAND (in bash) with a timeout of the time left (at
# most CAP), or skips it when less than MIN is left; its output goes to logs/NAME.log.
stage() {
  local name=$1 min=$2 cap=$3
  shift 3
  local t
  t=$(left)
  if [ "$t" -lt "$min" ]; then
    say "$name: SKIPPED (${t} s left, needs ${min})"
    return 0
  fi
  [ "$t" -gt "$cap" ] && t=$cap
  local s0 rc
  s0=$(date +%s)
  timeout --kill-after=10 "$t" bash -c "$*" > "$work/logs/$name.log" 2>&1
  rc=$?
  local status=PASS
  [ "$rc" -ne 0 ] && status="FAIL (exit $rc)"
  [ "$rc" -eq 124 ] && status="TIMED OUT (limit ${t} s)"
  say "$name: $status in $(($(date +%s) - s0)) s"
  return 0
}

if [ ! -d "$PACK" ] && [ -f bench/gpu/pack.tar.xz ]; then
  tar -xJf bench/gpu/pack.tar.xz -C bench/gpu
fi
if [ ! -d "$PACK" ]; then
  echo "no $PACK and no bench/gpu/pack.tar.xz: run bench/gpu/pack.sh on the build machine" >&2
  exit 1
fi
export LD_LIBRARY_PATH="$PWD/$PACK/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
COMMIT=$(cat "$PACK/COMMIT" 2>/dev/null || echo unknown)
say "commit $COMMIT, $(date -u +%Y-%m-%dT%H:%M:%SZ), budget ${BUDGET_S} s"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 |
  sed 's/^/gpu: /' | tee -a "$summary"

run_tests() {
  local failed=0 t
  for t in cuda_status_test device_test device_model_test kernels_test layers_test \
    gpt_cuda_test gpt_cuda_stage_test; do
    echo "==== $t"
    "$PACK/$t" > "$work/logs/test_$t.log" 2>&1
    local rc=$?
    tail -3 "$work/logs/test_$t.log"
    if [ "$rc" -ne 0 ]; then
      echo "$t: FAILED (exit $rc)"
      failed=1
    elif grep -q "SKIP: no CUDA GPU" "$work/logs/test_$t.log"; then
      echo "$t: skipped, no GPU seen ($(grep -m1 "SKIP: no CUDA GPU" "$work/logs/test_$t.log"))"
      failed=1
    fi
  done
  return "$failed"
}

run_bench() {
  OUT_DIR="$work/results" COMMIT="$COMMIT" BENCH="$PACK/gpu_model_bench" \
    bash bench/gpu/run_on_gpu.sh
}

run_gelu() {
  "$PACK/gpu_model_bench" --configs=gpt2_124m --attention=materialized,flash --recompute_gelu=0 \
    --attention_shapes=none --commit="$COMMIT" --out="$work/results/gpu_model_gelu_kept.json"
  "$PACK/gpu_model_bench" --configs=shakespeare_char,gpt2_124m --attention=materialized,flash \
    --gelu_epilogue=1 --attention_shapes=none --commit="$COMMIT" \
    --out="$work/results/gpu_model_gelu_epilogue.json"
  "$PACK/gpu_model_bench" --configs=shakespeare_char,gpt2_124m --attention=materialized,flash \
    --cuda_graph=1 --attention_shapes=none --commit="$COMMIT" \
    --out="$work/results/gpu_model_cuda_graph.json"
}

run_profile() {  # per-kernel GPU time (nsys), if Nsight Systems is on the machine
  local nsys
  nsys=$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys \
    2>/dev/null | head -1)
  if [ -z "$nsys" ]; then
    echo "no nsys on this machine: no per-kernel profile"
    return 1
  fi
  "$nsys" profile -t cuda -o "$work/results/profile" --force-overwrite true \
    "$PACK/gpu_model_bench" --configs=shakespeare_char,gpt2_124m --attention=materialized,flash \
    --iters=3 --warmup=2 --attention_shapes=none --commit="$COMMIT" \
    --out="$work/logs/profiled_run.json" &&
    "$nsys" stats -r cuda_gpu_kern_sum -f csv -o "$work/results/profile" \
      "$work/results/profile.nsys-rep" &&
    rm -f "$work/results/profile.nsys-rep" "$work/results/profile.sqlite"
}

run_e2e() {  # $1: seconds it may take, result file included
  PACK="$PACK" OUT_DIR="$work/results" COMMIT="$COMMIT" E2E_SECONDS=$(($1 - 30)) \
    bash bench/gpu/run_e2e.sh
}

# The stages run in child shells (under timeout): they see these functions and variables.
export -f run_tests run_bench run_gelu run_profile run_e2e
export work PACK COMMIT
for s in $STAGES; do
  case "$s" in
    tests) stage tests 30 150 run_tests ;;
    bench) stage bench 60 300 run_bench ;;
    gelu) stage gelu 40 120 run_gelu ;;
    profile) stage profile 30 90 run_profile ;;
    e2e) stage e2e 90 100000 "run_e2e $(left)" ;;
    *) say "$s: unknown stage (known: tests bench gelu profile e2e)" ;;
  esac
done
say "results: $(cd "$work/results" && ls | tr '\n' ' ')"
say "total $(($(date +%s) - start)) s"
cp "$summary" "$OUT/summary.txt"
tar -C "$work" -czf "$OUT/gpu_session.tar.gz" results logs summary.txt
echo "wrote $OUT/gpu_session.tar.gz"
