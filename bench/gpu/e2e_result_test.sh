#!/usr/bin/env bash
# poll_metrics.py against a stand-in worker metrics page (served on 127.0.0.1, port 0), then
# e2e_result.py over those polls with a curve CSV and a worker log: the time to the target loss,
# the phase means and the end-to-end over compute-only ratio come out as the pages say.
set -euo pipefail
logs=$(mktemp -d "${TEST_TMPDIR:-/tmp}/e2e.XXXXXX")
out=$(mktemp -d "${TEST_TMPDIR:-/tmp}/e2e_out.XXXXXX")
cat > "$logs/serve.py" <<'PY'
import http.server, sys
page = {"text": ""}
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = open(sys.argv[2]).read().encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
with open(sys.argv[1], "w") as f:
    f.write(str(server.server_address[1]))
server.serve_forever()
PY
page="$logs/page.txt"
# Before the first validation loss: step 100, val_loss 0 (none yet).
cat > "$page" <<'TXT'
# HELP psrv_worker_step The last step completed.
# TYPE psrv_worker_step gauge
psrv_worker_step{job="job-1",rank="0"} 100
psrv_worker_val_loss{job="job-1",rank="0"} 0
psrv_worker_tokens_total{job="job-1",rank="0"} 1638400
psrv_worker_phase_seconds_sum{job="job-1",rank="0",phase="pull"} 0.5
psrv_worker_phase_seconds_count{job="job-1",rank="0",phase="pull"} 100
psrv_worker_phase_seconds_sum{job="job-1",rank="0",phase="compute"} 1.5
psrv_worker_phase_seconds_count{job="job-1",rank="0",phase="compute"} 100
psrv_worker_step_seconds_sum{job="job-1",rank="0"} 2.5
psrv_worker_step_seconds_count{job="job-1",rank="0"} 100
TXT
python3 "$logs/serve.py" "$logs/worker-1.metrics_port.tmp" "$page" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$logs/worker-1.metrics_port.tmp" ] && break; sleep 0.1; done
mv "$logs/worker-1.metrics_port.tmp" "$logs/worker-1.metrics_port"
python3 bench/gpu/poll_metrics.py --logs "$logs" --out "$logs/worker_metrics.jsonl" --once
# Later: step 2000, validation loss 1.46, pull 1 ms / compute 15 ms / push 2 ms, step 20 ms.
sed -i -e 's/} 100$/} 2000/' -e 's/val_loss{job="job-1",rank="0"} 0/val_loss{job="job-1",rank="0"} 1.46/' \
  -e 's/pull"} 0.5/pull"} 2/' -e 's/compute"} 1.5/compute"} 30/' \
  -e 's/step_seconds_sum{job="job-1",rank="0"} 2.5/step_seconds_sum{job="job-1",rank="0"} 40/' "$page"
python3 bench/gpu/poll_metrics.py --logs "$logs" --out "$logs/worker_metrics.jsonl" --once
[ "$(wc -l < "$logs/worker_metrics.jsonl")" -eq 2 ] || { echo "want 2 polls"; exit 1; }
printf 'step,train_loss,val_loss,tokens_per_sec\n1000,1.6,1.62,250000\n2000,1.40,1.46,260000\n' \
  > "$logs/curves.csv"
echo "I1207 worker.cc:1] model on cpu" > "$logs/worker-1.log"
echo "model: {kind: gpt}" > "$logs/spec.yaml"
path=$(cd bench/gpu && python3 e2e_result.py --logs "$logs" --spec "$logs/spec.yaml" --start 0 \
  --end 100 --out_dir "$out" | tail -1)
python3 - "$path" <<'PY'
import json, math, sys
r = json.load(open(sys.argv[1]))
assert r["metric_polls"] == 2, r["metric_polls"]
t = r["time_to_target"]
assert t["target_val_loss"] == 1.47 and t["step"] == 2000 and t["val_loss"] == 1.46, t
assert t["seconds"] is not None and t["seconds"] >= 0, t
p = r["worker_phases_ms"]
assert math.isclose(p["mean_ms"]["pull"], 1.0) and math.isclose(p["mean_ms"]["compute"], 15.0), p
assert math.isclose(p["step_mean_ms"], 20.0), p
assert math.isclose(p["end_to_end_over_compute_only"], 0.75), p
assert r["best_val_loss"] == 1.46 and r["worker_on_gpu"] is False, r
print("ok:", sys.argv[1])
PY
# No polls at all (the poller never reached a worker): the result says so instead of failing.
rm "$logs/worker_metrics.jsonl"
path=$(cd bench/gpu && python3 e2e_result.py --logs "$logs" --spec "$logs/spec.yaml" --start 0 \
  --end 100 --out_dir "$out" | tail -1)
python3 - "$path" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["metric_polls"] == 0 and r["worker_phases_ms"] is None, r
assert r["time_to_target"]["seconds"] is None and r["time_to_target"]["reached"] is False, r
PY
echo PASS
