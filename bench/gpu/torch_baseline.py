#!/usr/bin/env python3
"""PyTorch baseline for bench/gpu/gpu_model_bench: the same GPT (nanoGPT's model.py, written out
here in plain PyTorch) and the same two configs, forward + backward per iteration (no optimizer
step: the parameter servers apply it), bf16 autocast over fp32 parameters, eager and
torch.compile. Writes JSON in gpu_model_bench's schema (README.md).

The model matches the CUDA GPT: biases everywhere, GELU with the tanh approximation, LayerNorm
eps 1e-5, the output head tied to wte, dropout on the embeddings, attention weights and both
residual projections, causal attention through F.scaled_dot_product_attention (flash attention
on an H100).

Also the attention alone (--attention_shapes, gpu_model_bench's): F.scaled_dot_product_attention,
causal, bf16 (B, NH, T, hs) tensors, forward + backward, as "attention_micro" rows.

Usage: python3 bench/gpu/torch_baseline.py [--configs=shakespeare_char,gpt2_124m] [--iters=20]
       [--warmup=5] [--compile=both|eager|compile] [--attention_shapes=16x12x1024x64,...|none]
       [--commit=SHA] [--out=torch.json]
"""
import argparse
import datetime
import json
import math
import socket
import statistics
import sys
import time
import traceback

import torch
import torch.nn as nn
import torch.nn.functional as F

PEAK_FLOPS = 989e12  # H100 SXM, dense bf16

CONFIGS = {
    # nanoGPT config/train_shakespeare_char.py
    "shakespeare_char": dict(layers=6, heads=6, width=384, context=256, vocab=65, dropout=0.2,
                             batch=64, token_vocab=65),
    # GPT-2 small with nanoGPT's padded vocabulary
    "gpt2_124m": dict(layers=12, heads=12, width=768, context=1024, vocab=50304, dropout=0.0,
                      batch=16, token_vocab=50257),
    # Tiny: the CUDA side runs it on the CPU simulator in the tests; here only for symmetry
    "tiny": dict(layers=2, heads=2, width=64, context=64, vocab=65, dropout=0.2, batch=2,
                 token_vocab=65),
}


class CausalSelfAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.heads, self.width, self.dropout = c["heads"], c["width"], c["dropout"]
        self.c_attn = nn.Linear(self.width, 3 * self.width)
        self.c_proj = nn.Linear(self.width, self.width)
        self.resid_dropout = nn.Dropout(self.dropout)

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.heads, C // self.heads).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.heads, C // self.heads).transpose(1, 2)
        v = v.view(B, T, self.heads, C // self.heads).transpose(1, 2)
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c_fc = nn.Linear(c["width"], 4 * c["width"])
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * c["width"], c["width"])
        self.dropout = nn.Dropout(c["dropout"])

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.ln_1 = nn.LayerNorm(c["width"], eps=1e-5)
        self.attn = CausalSelfAttention(c)
        self.ln_2 = nn.LayerNorm(c["width"], eps=1e-5)
        self.mlp = MLP(c)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.wte = nn.Embedding(c["vocab"], c["width"])
        self.wpe = nn.Embedding(c["context"], c["width"])
        self.drop = nn.Dropout(c["dropout"])
        self.h = nn.ModuleList([Block(c) for _ in range(c["layers"])])
        self.ln_f = nn.LayerNorm(c["width"], eps=1e-5)
        self.lm_head = nn.Linear(c["width"], c["vocab"], bias=False)
        self.lm_head.weight = self.wte.weight  # tied, as the CUDA GPT's head
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * c["layers"]))
            elif name.endswith(".bias"):
                nn.init.zeros_(p)
            elif p.dim() >= 2:
                nn.init.normal_(p, 0.0, 0.02)

    def forward(self, idx, targets):
        T = idx.size(1)
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def num_parameters(model):
    return sum(p.numel() for p in model.parameters())  # the tied wte once


def run_config(name, c, mode, warmup, iters):
    device = "cuda"
    torch.manual_seed(1234)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    free_before, total = torch.cuda.mem_get_info()
    model = GPT(c).to(device)
    model.train()
    n = num_parameters(model)
    step_model = torch.compile(model) if mode == "compile" else model
    B, T = c["batch"], c["context"]
    rows = torch.randint(0, c["token_vocab"], (B, T + 1), device=device)
    x, y = rows[:, :T].contiguous(), rows[:, 1:].contiguous()

    def step():
        model.zero_grad(set_to_none=True)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            loss = step_model(x, y)
        loss.backward()
        torch.cuda.synchronize()
        return loss.item()

    print(f"{name} [{mode}]: {n} parameters, batch {B} x {T} tokens, "
          f"{warmup} warm-up + {iters} timed steps", flush=True)
    loss_first = step()
    for _ in range(warmup - 1):
        step()
    samples = []
    loss_last = loss_first
    for _ in range(iters):
        t0 = time.perf_counter()
        loss_last = step()
        samples.append((time.perf_counter() - t0) * 1e3)
    free_after, _ = torch.cuda.mem_get_info()

    tokens_per_iter = B * T
    flops_per_token = 6.0 * n + 6.0 * c["layers"] * c["width"] * c["context"]
    median = statistics.median(samples)
    tokens_per_s = tokens_per_iter / (median / 1e3)
    result = {
        "config": name, "mode": mode,
        "layers": c["layers"], "heads": c["heads"], "width": c["width"],
        "context": c["context"], "vocab": c["vocab"], "batch": B, "dropout": c["dropout"],
        "num_parameters": n, "tokens_per_iter": tokens_per_iter,
        "flops_per_token": flops_per_token, "warmup": warmup, "iters": iters,
        "ms_per_iter_median": median, "ms_per_iter_mean": statistics.mean(samples),
        "ms_per_iter_min": min(samples), "tokens_per_s": tokens_per_s,
        "mfu": tokens_per_s * flops_per_token / PEAK_FLOPS, "samples_ms": samples,
        # The caching allocator's peak (parameters, gradients, activations, workspace), and the
        # device's used-memory growth (includes the allocator's cache and cuBLAS/cuDNN).
        "peak_memory_bytes": torch.cuda.max_memory_allocated(),
        "device_memory_used_bytes": free_before - free_after,
        "device_memory_total_bytes": total,
        "loss_first": loss_first, "loss_last": loss_last,
    }
    print(f"{name} [{mode}]: {median:.2f} ms/iter, {tokens_per_s:.0f} tokens/s, "
          f"MFU {100 * result['mfu']:.1f}%, peak {result['peak_memory_bytes'] / 2**30:.2f} GiB; "
          f"loss {loss_first:.4f} -> {loss_last:.4f}", flush=True)
    del step_model, model
    torch.cuda.empty_cache()
    return result


def run_attention(shape, warmup, iters):
    B, NH, T, hs = shape
    torch.manual_seed(7)
    q, k, v = (torch.randn(B, NH, T, hs, device="cuda", dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))
    dout = torch.randn(B, NH, T, hs, device="cuda", dtype=torch.bfloat16)
    forward, both = [], []
    for i in range(warmup + iters):
        q.grad = k.grad = v.grad = None
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        torch.cuda.synchronize()
        t1 = time.perf_counter()
        y.backward(dout)
        torch.cuda.synchronize()
        if i >= warmup:
            forward.append((t1 - t0) * 1e3)
            both.append((time.perf_counter() - t0) * 1e3)
    median = statistics.median(both)
    flops = 3.5 * 2.0 * B * NH * T * T * hs  # as gpu_model_bench counts
    print(f"attention {B}x{NH}x{T}x{hs} sdpa: forward {statistics.median(forward):.3f} ms, "
          f"forward + backward {median:.3f} ms", flush=True)
    return {"batch": B, "heads": NH, "context": T, "head_size": hs, "attention": "sdpa",
            "ms_forward_median": statistics.median(forward), "ms_forward_backward_median": median,
            "tflops_per_s": flops / (median / 1e3) / 1e12, "samples_ms": both}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="shakespeare_char,gpt2_124m")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--gpt2_batch", type=int, default=16)
    parser.add_argument("--shakespeare_batch", type=int, default=64)
    parser.add_argument("--compile", default="both", choices=["both", "eager", "compile"])
    parser.add_argument("--attention_shapes", default="16x12x1024x64,16x12x256x64,64x6x256x64")
    parser.add_argument("--commit", default="unknown")
    parser.add_argument("--out", default="torch.json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA GPU visible to PyTorch")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    CONFIGS["gpt2_124m"]["batch"] = args.gpt2_batch
    CONFIGS["shakespeare_char"]["batch"] = args.shakespeare_batch
    modes = ["eager", "compile"] if args.compile == "both" else [args.compile]

    report = {
        "benchmark": "gpu_model",
        "implementation": "pytorch",
        "device": torch.cuda.get_device_name(0),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": args.commit,
        "hostname": socket.gethostname(),
        "precision": "torch.autocast bf16 over fp32 parameters and gradients",
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "peak_tflops_bf16": PEAK_FLOPS / 1e12,
        "flops_formula": "6*N + 6*L*C*T per token (N all parameters, tied wte once)",
        "results": [],
        "errors": [],
    }
    for name in args.configs.split(","):
        if name not in CONFIGS:
            sys.exit(f"unknown config {name} (known: {', '.join(CONFIGS)})")
        for mode in modes:
            try:
                report["results"].append(run_config(name, CONFIGS[name], mode, max(1, args.warmup),
                                                    args.iters))
            except Exception as e:  # torch.compile may fail on a given install: keep the rest
                traceback.print_exc()
                report["errors"].append({"config": name, "mode": mode, "error": repr(e)})
                torch.cuda.empty_cache()
    report["attention_micro"] = []
    if args.attention_shapes != "none":
        for text in args.attention_shapes.split(","):
            shape = tuple(int(x) for x in text.split("x"))
            if len(shape) != 4:
                sys.exit(f"bad --attention_shapes entry {text} (want BxNHxTxHS)")
            try:
                report["attention_micro"].append(run_attention(shape, max(1, args.warmup),
                                                               args.iters))
            except Exception as e:
                traceback.print_exc()
                report["errors"].append({"attention_shape": text, "error": repr(e)})
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
