#!/bin/bash
# On the GPU machine: nanoGPT's shakespeare-char recipe (nanogpt_shakespeare_char.yaml) end to end
# through ps_coordinator, one ps_server and one ps_worker whose model runs on the GPU (psctl local;
# binaries and libraries from pack.sh), then bench/results/e2e_<device>_<date>.json with the best
# validation loss, the wall time, the time to validation loss 1.47 and where a step's time goes
# (e2e_result.py, from the worker's metrics polled by poll_metrics.py).
#   PACK: the unpacked pack (default bench/gpu/pack)
#   CORPUS: the training text (default $PACK/data/tinyshakespeare.txt)
#   SPEC: the job spec (default bench/gpu/nanogpt_shakespeare_char.yaml)
#   OUT_DIR: where the result goes (default bench/results)
#   E2E_SECONDS: stop the run (SIGTERM: psctl stops the cluster and writes the curves so far)
#                after this many seconds (default: no limit); the result says psctl_exit 124
# Arguments go to psctl local (e.g. --steps 200 for a short check).
set -euo pipefail
cd "$(dirname "$0")/../.."
PACK=${PACK:-bench/gpu/pack}
CORPUS=${CORPUS:-$PACK/data/tinyshakespeare.txt}
SPEC=${SPEC:-bench/gpu/nanogpt_shakespeare_char.yaml}
OUT_DIR=${OUT_DIR:-bench/results}
PYTHON=${PYTHON:-python3}
COMMIT=${COMMIT:-$(cat "$PACK/COMMIT" 2>/dev/null || git rev-parse HEAD 2>/dev/null || echo unknown)}
for b in psctl ps_coordinator ps_server ps_worker; do
  if [ ! -x "$PACK/bin/$b" ]; then
    echo "no $PACK/bin/$b: run bench/gpu/pack.sh on the build machine first" >&2
    exit 1
  fi
done
if [ ! -f "$CORPUS" ]; then
  echo "no corpus at $CORPUS (set CORPUS)" >&2
  exit 1
fi
export LD_LIBRARY_PATH="$PWD/$PACK/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
logs=$(mktemp -d)
start=$(date +%s.%N)
limit=()
[ -n "${E2E_SECONDS:-}" ] && limit=(timeout --kill-after=20 "$E2E_SECONDS")
# The worker's metrics every 5 s (phases, step, validation loss) for e2e_result.py.
"$PYTHON" bench/gpu/poll_metrics.py --logs "$logs" --out "$logs/worker_metrics.jsonl" \
  --start "$start" --interval 5 &
poller=$!
set +e  # A failed or stopped run still gets its result file.
"${limit[@]}" "$PACK/bin/psctl" local --servers 1 --workers 1 --spec "$SPEC" --data "$CORPUS" \
  --bin-dir "$PACK/bin" --log-dir "$logs" "$@" 2>&1 | tee "$logs/psctl.out"
status=${PIPESTATUS[0]}
kill "$poller" 2>/dev/null
wait "$poller" 2>/dev/null
set -e
end=$(date +%s.%N)
"$PYTHON" bench/gpu/e2e_result.py --logs "$logs" --spec "$SPEC" --commit "$COMMIT" \
  --start "$start" --end "$end" --psctl_exit "$status" --out_dir "$OUT_DIR"
exit "$status"
