"""PyTorch (CPU) timings of the single ops of `cargo run -p xtask -- bench-ops`.

A benchmark tool, not a project dependency. xtask passes one spec per op (its `Op::spec`):

    conv3 B C S      3x3 convolution, padding 1, [B, C, S, S] -> [B, C, S, S]
    conv1 B C S      1x1 convolution
    normsilu B C S   GroupNorm(32, C) then SiLU
    norm B C S       GroupNorm(32, C)
    silu B C S       SiLU
    attn B H L       softmax(q k^T / 8 + bias) v, q [B, H, L, 64], k/v [B, H, L + 81, 64]
    matmul B L D     Linear(D, D) on [B, L, D]

and reads one `times_ms=` line per op, in order.
"""

import argparse
import time

import torch
import torch.nn.functional as F


def build(kind, a, b, c):
    if kind in ("conv3", "conv1"):
        k = 3 if kind == "conv3" else 1
        conv = torch.nn.Conv2d(b, b, k, padding=k // 2)
        x = torch.randn(a, b, c, c)
        return lambda: conv(x)
    if kind == "normsilu":
        norm = torch.nn.GroupNorm(32, b, eps=1e-5)
        x = torch.randn(a, b, c, c)
        return lambda: F.silu(norm(x))
    if kind == "norm":
        norm = torch.nn.GroupNorm(32, b, eps=1e-5)
        x = torch.randn(a, b, c, c)
        return lambda: norm(x)
    if kind == "silu":
        x = torch.randn(a, b, c, c)
        return lambda: F.silu(x)
    if kind == "attn":
        q = torch.randn(a, b, c, 64)
        k = torch.randn(a, b, c + 81, 64)
        v = torch.randn(a, b, c + 81, 64)
        bias = torch.randn(a, 1, 1, c + 81)
        return lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=0.125)
    if kind == "matmul":
        lin = torch.nn.Linear(c, c)
        x = torch.randn(a, b, c)
        return lambda: lin(x)
    raise SystemExit(f"unknown op {kind!r}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("specs", nargs="+", help="kind followed by three integers, repeated")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    s = a.specs
    if len(s) % 4:
        raise SystemExit("specs come in fours: kind a b c")
    with torch.inference_mode():
        for i in range(0, len(s), 4):
            f = build(s[i], int(s[i + 1]), int(s[i + 2]), int(s[i + 3]))
            for _ in range(a.warmup):
                f()
            times = []
            for _ in range(a.iters):
                t0 = time.perf_counter()
                f()
                times.append((time.perf_counter() - t0) * 1e3)
            print("times_ms=" + ",".join(f"{x:.4f}" for x in times))


if __name__ == "__main__":
    main()
