#!/usr/bin/env python3
"""Summarises a run_e2e.sh run as bench/results/e2e_<device>_<date>.json: best and final
validation loss (from psctl local's curve CSV), wall time, where the worker's model ran (its log's
"model on ..." line), against nanoGPT's reference (1.4697 best validation loss, ~3 min, A100).
From the worker's metrics polled during the run (LOGS/worker_metrics.jsonl, poll_metrics.py):
  "time_to_target": seconds from the run's start (cluster start-up included) to the first poll
    that saw a validation loss <= --target (1.47; PyTorch alone: 76 s on the H200), to the poll's
    resolution (5 s);
  "worker_phases_ms": the mean pull / compute / push / eval phase and whole step, and
    "end_to_end_over_compute_only" = compute / step: the tokens/s of the run against those of
    the worker's compute alone (issue 11's target is >= 0.6).

Usage: e2e_result.py --logs DIR --spec FILE --start T0 --end T1 [--commit SHA] [--psctl_exit N]
                     [--target 1.47] [--out_dir bench/results]   (prints the path written)
"""
import argparse
import csv
import datetime
import glob
import json
import os
import re
import socket
import statistics
import subprocess

from merge_results import slug  # the same file names as the benchmark's results

REFERENCE = {"implementation": "nanoGPT train_shakespeare_char.py", "device": "A100",
             "best_val_loss": 1.4697, "wall_s_approx": 180}


def read_polls(path):
    """poll_metrics.py's records, in order ([] without the file); unreadable lines skipped."""
    polls = []
    if not os.path.exists(path):
        return polls
    with open(path) as f:
        for line in f:
            try:
                polls.append(json.loads(line))
            except ValueError:
                continue
    return polls


def time_to_target(polls, target):
    for p in polls:
        if p.get("val_loss") is not None and p["val_loss"] <= target:
            return {"target_val_loss": target, "seconds": p["t"], "step": p.get("step"),
                    "val_loss": p["val_loss"]}
    return {"target_val_loss": target, "seconds": None, "reached": False}


def worker_phases(polls):
    """Mean phase and step times (ms) over the run so far, from the last poll."""
    if not polls:
        return None
    last = polls[-1]
    sums, counts = last.get("phase_seconds_sum", {}), last.get("phase_seconds_count", {})
    phases = {name: 1e3 * sums[name] / counts[name]
              for name in sums if counts.get(name, 0) > 0}
    result = {"mean_ms": phases, "steps": last.get("step_seconds_count", 0)}
    if last.get("step_seconds_count", 0) > 0:
        step_ms = 1e3 * last["step_seconds_sum"] / last["step_seconds_count"]
        result["step_mean_ms"] = step_ms
        if "compute" in phases and step_ms > 0:
            result["end_to_end_over_compute_only"] = phases["compute"] / step_ms
    return result


def gpu_name():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout else None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--logs", required=True)
    parser.add_argument("--spec", required=True)
    parser.add_argument("--start", type=float, required=True)
    parser.add_argument("--end", type=float, required=True)
    parser.add_argument("--commit", default="unknown")
    parser.add_argument("--psctl_exit", type=int, default=0)
    parser.add_argument("--out_dir", default="bench/results")
    parser.add_argument("--target", type=float, default=1.47)
    args = parser.parse_args()
    polls = read_polls(os.path.join(args.logs, "worker_metrics.jsonl"))

    rows = []
    csvs = sorted(glob.glob(os.path.join(args.logs, "*.csv")))
    if csvs:
        with open(csvs[0]) as f:
            rows = list(csv.DictReader(f))
    val = [(int(r["step"]), float(r["val_loss"])) for r in rows if r.get("val_loss")]
    train = [(int(r["step"]), float(r["train_loss"])) for r in rows if r.get("train_loss")]
    speed = [float(r["tokens_per_sec"]) for r in rows if r.get("tokens_per_sec")]
    model_on = None
    for log in sorted(glob.glob(os.path.join(args.logs, "worker-*.log"))):
        with open(log, errors="replace") as f:
            for line in f:
                m = re.search(r"model on (.*)$", line)
                if m:
                    model_on = m.group(1).strip()
    best = min(val, key=lambda sv: sv[1]) if val else None
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    on_gpu = bool(model_on) and model_on.startswith("cuda")
    device = gpu_name() or (model_on if on_gpu else "cpu")
    with open(args.spec) as f:
        spec_text = f.read()
    result = {
        "benchmark": "nanogpt_shakespeare_char_end_to_end",
        "device": device,
        "worker_model_on": model_on,
        "worker_on_gpu": on_gpu,
        "date_utc": date,
        "commit": args.commit,
        "hostname": socket.gethostname(),
        "cluster": "psctl local: 1 ps_coordinator, 1 ps_server, 1 ps_worker on one machine",
        "spec": spec_text,
        "psctl_exit": args.psctl_exit,
        "wall_s": round(args.end - args.start, 3),
        "steps_reported": train[-1][0] if train else 0,
        "best_val_loss": best[1] if best else None,
        "best_val_step": best[0] if best else None,
        "final_val_loss": val[-1][1] if val else None,
        "final_train_loss": train[-1][1] if train else None,
        "tokens_per_s_median": statistics.median(speed) if speed else None,
        "reference": REFERENCE,
        "best_val_loss_ratio": best[1] / REFERENCE["best_val_loss"] if best else None,
        "time_to_target": time_to_target(polls, args.target),
        "worker_phases_ms": worker_phases(polls),
        "metric_polls": len(polls),
        "curve": rows,
    }
    os.makedirs(args.out_dir, exist_ok=True)
    stamp = re.sub(r"[^0-9T]", "", date)
    path = os.path.join(args.out_dir, f"e2e_{slug(device)[:40]}_{stamp}.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    if not on_gpu:
        print(f"warning: the worker's model ran on {model_on}, not a GPU")
    print(path)


if __name__ == "__main__":
    main()
