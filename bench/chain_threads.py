#!/usr/bin/python3
"""Why the Expansive net's 20-factor layer costs the same on 1 thread as on 2: one 128x128x128
product, and the layer's whole chain with autograd (19 products forward, their gradients backward,
then the batch's product with W_eff), each timed at 1 and 2 intra-op threads on the OpenBLAS
kernels xpand uses.

    OPENBLAS_CORETYPE=SkylakeX /usr/bin/python3 bench/chain_threads.py [--batch 1024]
"""
import argparse
import time

import torch


def per_call(f, n):
    for _ in range(n // 10):
        f()
    t = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t) / n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=1024)
    a = ap.parse_args()
    torch.manual_seed(0)
    x, y = torch.randn(128, 128), torch.randn(128, 128)
    ws = [torch.randn(128, 128, requires_grad=True) for _ in range(20)]
    inp = torch.randn(a.batch, 128)

    def chain_step():
        p = ws[0]
        for w in ws[1:]:
            p = w @ p
        (inp @ p.t()).sum().backward()

    for threads in (1, 2):
        torch.set_num_threads(threads)
        mm = per_call(lambda: x @ y, 2000)
        chain = per_call(chain_step, 200)
        print(f"threads {threads}: 128^3 product {mm * 1e6:.1f} us ({2 * 128 ** 3 / mm / 1e9:.0f} GFLOP/s); "
              f"20-factor chain forward+backward at batch {a.batch}: {chain * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
