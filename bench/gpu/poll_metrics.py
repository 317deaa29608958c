#!/usr/bin/env python3
"""Polls the workers of a psctl local run (their /metrics pages, ports in LOGS/worker-*.metrics_port)
and appends one JSON line per poll to OUT: seconds since --start, the last completed step, the last
validation loss, tokens trained, and every phase's and the whole step's summed seconds and count
(the psrv_worker_phase_seconds and psrv_worker_step_seconds histograms, all workers together).
e2e_result.py reads the file: where a step's time goes (pull / compute / push) and when the
validation loss first reached a target.

Usage: poll_metrics.py --logs DIR --out FILE [--start EPOCH_S] [--interval 5] [--once]
Runs until killed (or one poll with --once); a worker that does not answer is left out of that
poll, and a poll with none is not written.
"""
import argparse
import glob
import json
import os
import re
import time
import urllib.request

LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text):
    """[(name, {label: value}, float)] of a Prometheus text page (comments skipped)."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = LINE.match(line.strip())
        if not m:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        labels = dict(LABEL.findall(m.group(2) or ""))
        samples.append((m.group(1), labels, value))
    return samples


def summarise(pages):
    """One poll's record from the workers' parsed pages."""
    record = {"workers": len(pages), "step": 0, "val_loss": None, "tokens_total": 0.0,
              "phase_seconds_sum": {}, "phase_seconds_count": {},
              "step_seconds_sum": 0.0, "step_seconds_count": 0.0}
    for samples in pages:
        for name, labels, value in samples:
            phase = labels.get("phase")
            if name == "psrv_worker_step":
                record["step"] = max(record["step"], int(value))
            elif name == "psrv_worker_val_loss" and value > 0:  # 0: none measured yet
                record["val_loss"] = value
            elif name == "psrv_worker_tokens_total":
                record["tokens_total"] += value
            elif name == "psrv_worker_phase_seconds_sum" and phase:
                record["phase_seconds_sum"][phase] = record["phase_seconds_sum"].get(phase, 0) + value
            elif name == "psrv_worker_phase_seconds_count" and phase:
                record["phase_seconds_count"][phase] = (
                    record["phase_seconds_count"].get(phase, 0) + value)
            elif name == "psrv_worker_step_seconds_sum":
                record["step_seconds_sum"] += value
            elif name == "psrv_worker_step_seconds_count":
                record["step_seconds_count"] += value
    return record


def poll(logs, timeout_s=3.0):
    pages = []
    for port_file in sorted(glob.glob(os.path.join(logs, "worker-*.metrics_port"))):
        try:
            with open(port_file) as f:
                port = int(f.read().strip())
            url = f"http://127.0.0.1:{port}/metrics"
            with urllib.request.urlopen(url, timeout=timeout_s) as reply:
                pages.append(parse_prometheus(reply.read().decode("utf-8", "replace")))
        except (OSError, ValueError):
            continue  # not started yet, or gone
    return summarise(pages) if pages else None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--logs", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--start", type=float, default=None, help="epoch seconds of t = 0")
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--once", action="store_true")
    args = parser.parse_args()
    start = args.start if args.start is not None else time.time()
    while True:
        record = poll(args.logs)
        if record is not None:
            record["t"] = round(time.time() - start, 3)
            with open(args.out, "a") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")
        if args.once:
            return
        time.sleep(args.interval)


if __name__ == "__main__":
    main()
