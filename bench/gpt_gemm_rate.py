#!/usr/bin/python3
"""The GEMM rate of the char GPT's step shapes on this machine (nanoGPT's shakespeare_char: 64 x 256
tokens, 6 layers of 384 wide, 6 heads), the denominator of the GPT step's efficiency: each linear
layer's product (tokens x in x out) and attention's two batched products, timed with PyTorch on
the OpenBLAS kernels xpand uses, combined with the FLOP weights of one forward pass.

    OPENBLAS_CORETYPE=SkylakeX /usr/bin/python3 bench/gpt_gemm_rate.py [--threads 2]
"""
import argparse
import time

import torch


def rate(f, flops, n=3):
    f()
    t = time.perf_counter()
    for _ in range(n):
        f()
    return flops * n / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    tokens, d, heads, block, vocab = 64 * 256, 384, 6, 256, 65
    hd = d // heads
    # (name, flops of one forward pass per layer or per model, timed product)
    rows = []
    for name, k, n, per_layer in (("qkv", d, 3 * d, True), ("attn proj", d, d, True), ("c_fc", d, 4 * d, True),
                                  ("c_proj", 4 * d, d, True), ("lm_head", d, vocab, False)):
        x, w = torch.randn(tokens, k), torch.randn(k, n)
        flops = 2 * tokens * k * n * (6 if per_layer else 1)
        rows.append((name, flops, rate(lambda: x @ w, 2 * tokens * k * n)))
    bh = 64 * heads
    q, kt = torch.randn(bh, block, hd), torch.randn(bh, hd, block)
    att, v = torch.randn(bh, block, block), torch.randn(bh, block, hd)
    rows.append(("q k^T", 6 * 2 * bh * block * block * hd, rate(lambda: torch.bmm(q, kt), 2 * bh * block * block * hd)))
    rows.append(("att v", 6 * 2 * bh * block * block * hd, rate(lambda: torch.bmm(att, v), 2 * bh * block * block * hd)))
    total = sum(f for _, f, _ in rows)
    for name, f, r in rows:
        print(f"{name:10} {r / 1e9:7.1f} GFLOP/s  ({100 * f / total:4.1f}% of the forward FLOPs)")
    mix = total / sum(f / r for _, f, r in rows)
    print(f"GEMM mix of the GPT step: {mix / 1e9:.1f} GFLOP/s (threads {a.threads})")


if __name__ == "__main__":
    main()
