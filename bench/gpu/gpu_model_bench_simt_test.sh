#!/usr/bin/env bash
# gpu_model_bench on the CPU SIMT simulator (config "tiny"), then merge_results.py with a stand-in
# PyTorch file: the JSON both write is what the GPU run will produce (README.md).
set -euo pipefail
out=${TEST_TMPDIR:-$(mktemp -d)}
bench/gpu/gpu_model_bench_simt --configs=tiny --iters=2 --warmup=1 --commit=test \
  --attention_shapes=2x2x70x32,1x3x40x16 --out="$out/ours.json"
# --memory_plan: no step, the same bytes the timed rows report.
bench/gpu/gpu_model_bench_simt --configs=tiny --memory_plan=1 --commit=test --out="$out/plan.json"
# The fc product's GELU in the epilogue: rows that say so, the same model within bf16 rounding.
bench/gpu/gpu_model_bench_simt --configs=tiny --iters=2 --warmup=1 --commit=test \
  --attention=materialized --gelu_epilogue=1 --attention_shapes=none --out="$out/epilogue.json"
# Each step one CUDA graph: the same model bit for bit.
bench/gpu/gpu_model_bench_simt --configs=tiny --iters=2 --warmup=1 --commit=test \
  --attention=materialized --cuda_graph=1 --attention_shapes=none --out="$out/graph.json"
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
    # The overlapped per-layer path: timed, and the same step bit for bit.
    assert r["with_host_transfer_streamed"]["tokens_per_s"] > 0, r
    assert r["streamed_loss_equals_device"] is True, r
    # The memory computed before the first step is what the step allocated.
    assert r["peak_memory_bytes_planned"] == r["peak_memory_bytes"], r
assert all(r["gelu_epilogue"] is False for r in results), results
plan = json.load(open(f"{out}/plan.json"))
assert "results" not in plan and plan["attention_micro"] == [], plan
assert [(p["attention"], p["peak_memory_bytes"]) for p in plan["memory_plan"]] == [
    (r["attention"], r["peak_memory_bytes"]) for r in results], (plan, results)
epilogue = json.load(open(f"{out}/epilogue.json"))["results"]
assert [(r["attention"], r["gelu_epilogue"]) for r in epilogue] == [("materialized", True)], epilogue
assert abs(epilogue[0]["loss_first"] - results[0]["loss_first"]) < 1e-2, (epilogue, results)
assert all(r["cuda_graph"] is False for r in results + epilogue), results
graph = json.load(open(f"{out}/graph.json"))["results"]
assert [(r["attention"], r["cuda_graph"]) for r in graph] == [("materialized", True)], graph
assert (graph[0]["loss_first"], graph[0]["loss_last"]) == (
    results[0]["loss_first"], results[0]["loss_last"]), (graph, results)
# The paths compute the same model (same seeds and dropout masks).
for r in results[1:]:
    assert abs(results[0]["loss_first"] - r["loss_first"]) < 1e-2, results
    # Flash keeps no (B, NH, T, T) buffers.
    assert r["peak_memory_bytes"] < results[0]["peak_memory_bytes"], results
micro = ours["attention_micro"]
assert [(m["context"], m["attention"]) for m in micro] == [
    (70, "materialized"), (70, "flash"), (70, "flash_fp32"),
    (40, "materialized"), (40, "flash"), (40, "flash_fp32")], micro
for m in micro:
    assert m["ms_forward_backward_median"] >= m["ms_forward_median"] > 0, m
    assert m["tflops_per_s"] > 0 and len(m["samples_ms"]) == 2, m
torch = {"device": ours["device"], "results": [
    {"config": "tiny", "mode": "eager", "ms_per_iter_median": 2.0, "tokens_per_s": 64000.0,
     "mfu": 0.01, "peak_memory_bytes": 1 << 20}],
    "attention_micro": [{"batch": 2, "heads": 2, "context": 70, "head_size": 32,
                         "attention": "sdpa", "ms_forward_backward_median": 1.0}]}
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
    assert r["streamed_over_device"] > 0, r
assert "warning" not in merged, merged
att = merged["attention_ratios"]
assert [(a["shape"], a["attention_ours"]) for a in att] == [
    ("2x2x70x32", "materialized"), ("2x2x70x32", "flash"), ("2x2x70x32", "flash_fp32"),
    ("1x3x40x16", "materialized"), ("1x3x40x16", "flash"), ("1x3x40x16", "flash_fp32")], att
assert all(a["speedup_vs_sdpa"] > 0 for a in att[:3]), att
assert all("speedup_vs_sdpa" not in a for a in att[3:]), att  # no SDPA row for that shape
assert all(a["speedup_vs_materialized"] > 0 for a in att), att
assert att[0]["speedup_vs_materialized"] == 1.0, att
print("merged:", sys.argv[1])
PY
echo PASS
