#!/usr/bin/env bash
# gpu_model_bench on the CPU SIMT simulator (config "tiny"), then merge_results.py with a stand-in
# PyTorch file: the JSON both write is what the GPU run will produce (README.md).
set -euo pipefail
out=${TEST_TMPDIR:-$(mktemp -d)}
bench/gpu/gpu_model_bench_simt --configs=tiny --iters=2 --warmup=1 --commit=test \
  --out="$out/ours.json"
python3 - "$out" <<'PY'
import json, math, sys
out = sys.argv[1]
ours = json.load(open(f"{out}/ours.json"))
assert ours["device"] == "psrv SIMT simulator (CPU)", ours["device"]
assert ours["commit"] == "test"
results = ours["results"]
assert [r["attention"] for r in results] == ["materialized", "flash", "flash_fp32"], results
for r in results:
    assert r["config"] == "tiny" and r["batch"] == 2 and r["tokens_per_iter"] == 128, r
    # From the initialisation every logit is ~0: the loss starts near ln(65).
    assert abs(r["loss_first"] - math.log(65)) < 0.2, r["loss_first"]
    assert math.isfinite(r["loss_last"]), r["loss_last"]
    assert r["tokens_per_s"] > 0 and r["with_host_transfer"]["tokens_per_s"] > 0, r
    assert len(r["samples_ms"]) == 2, r["samples_ms"]
    assert r["peak_memory_bytes"] > 0, r
# The paths compute the same model (same seeds and dropout masks).
for r in results[1:]:
    assert abs(results[0]["loss_first"] - r["loss_first"]) < 1e-2, results
    # Flash keeps no (B, NH, T, T) buffers.
    assert r["peak_memory_bytes"] < results[0]["peak_memory_bytes"], results
torch = {"device": ours["device"], "results": [
    {"config": "tiny", "mode": "eager", "ms_per_iter_median": 2.0, "tokens_per_s": 64000.0,
     "mfu": 0.01, "peak_memory_bytes": 1 << 20}]}
json.dump(torch, open(f"{out}/torch.json", "w"))
PY
path=$(python3 bench/gpu/merge_results.py "$out/ours.json" "$out/torch.json" --out_dir "$out/results")
python3 - "$path" <<'PY'
import json, sys
merged = json.load(open(sys.argv[1]))
rows = merged["ratios"]
assert [r["attention_ours"] for r in rows] == ["materialized", "flash", "flash_fp32"], rows
for r in rows:
    assert r["config"] == "tiny" and r["pytorch_mode"] == "eager", r
    assert r["tokens_per_s_ratio"] > 0 and r["peak_memory_ratio"] > 0, r
assert "warning" not in merged, merged
print("merged:", sys.argv[1])
PY
echo PASS
