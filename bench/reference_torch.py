#!/usr/bin/python3
"""PyTorch reference implementations of bench/compare.py's workloads, written the way the seed
repositories write them: nn.Linear chains evaluated activation-first (an expanded layer is an
nn.Sequential of Linears without nonlinearities), low-rank layers as two Linears, the omega-space
notebook's theta = theta0 + P omega through torch.nn.utils.stateless.functional_call, a nanoGPT
model. Data is a random in-memory tensor of the dataset's size; each step draws its batch from it
by index, as xpand's trainer does.

    /usr/bin/python3 bench/reference_torch.py WORKLOAD --steps N --warmup W --threads T

prints one JSON line: {"workload", "ms_median", "ms_list", "batch", "tokens"}.
"""
import argparse
import json
import math
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def chain(dims, bias=True):
    """The seeds' expanded layer: Linear(d0, d1) ... Linear(d_{k-1}, d_k), no nonlinearity, the
    bias on the last Linear (xpand's expanded layer has the layer's own bias only)."""
    layers = [nn.Linear(a, b, bias=bias and i == len(dims) - 2) for i, (a, b) in enumerate(zip(dims[:-1], dims[1:]))]
    return layers[0] if len(layers) == 1 else nn.Sequential(*layers)


def expanded_dims(i, o, factor, depth):
    if depth == 1:
        return [i, o]
    h = round(factor * max(i, o))
    return [i] + [h] * (depth - 1) + [o]


class Mlp(nn.Module):
    def __init__(self, widths, factor=1.0, depth=1, rank=None, bias=True, residual=()):
        super().__init__()
        layers = []
        for k, (i, o) in enumerate(zip(widths[:-1], widths[1:])):
            r = rank[k] if rank else None
            if r:
                layers.append(nn.Sequential(nn.Linear(i, r, bias=False), nn.Linear(r, o, bias=bias)))
            else:
                layers.append(chain(expanded_dims(i, o, factor, depth[k] if isinstance(depth, list) else depth), bias))
        self.layers = nn.ModuleList(layers)
        self.residual = set(residual)

    def forward(self, x):
        h = x.flatten(1)
        for k, layer in enumerate(self.layers):
            z = layer(h)
            if k in self.residual:
                z = z + h
            h = F.relu(z) if k + 1 < len(self.layers) else z
        return h


# --- nanoGPT (Karpathy's model.py, shakespeare_char shape), with an optionally expanded MLP ---

class Block(nn.Module):
    def __init__(self, c, heads, dropout, mlp_inner=None):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(c), nn.LayerNorm(c)
        self.c_attn, self.attn_proj = nn.Linear(c, 3 * c, bias=False), nn.Linear(c, c, bias=False)
        if mlp_inner:  # the Expansive nanoGPT: c_fc and c_proj each a depth-2 chain through mlp_inner
            self.c_fc = nn.Sequential(nn.Linear(c, mlp_inner, bias=False), nn.Linear(mlp_inner, 4 * c, bias=False))
            self.c_proj = nn.Sequential(nn.Linear(4 * c, mlp_inner, bias=False), nn.Linear(mlp_inner, c, bias=False))
        else:
            self.c_fc, self.c_proj = nn.Linear(c, 4 * c, bias=False), nn.Linear(4 * c, c, bias=False)
        self.heads, self.drop = heads, nn.Dropout(dropout)

    def forward(self, x, mask):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = self.drop(F.softmax(att.masked_fill(mask[:T, :T], float("-inf")), dim=-1))
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        x = x + self.drop(self.attn_proj(y))
        return x + self.drop(self.c_proj(F.gelu(self.c_fc(self.ln2(x)))))


class Gpt(nn.Module):
    def __init__(self, vocab, block, layers=6, heads=6, c=384, dropout=0.2, mlp_inner=None):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, c), nn.Embedding(block, c)
        self.blocks = nn.ModuleList([Block(c, heads, dropout, mlp_inner) for _ in range(layers)])
        self.ln_f, self.drop = nn.LayerNorm(c), nn.Dropout(dropout)
        self.register_buffer("mask", torch.ones(block, block, dtype=torch.bool).triu(1))

    def forward(self, idx):
        T = idx.size(1)
        x = self.drop(self.wte(idx) + self.wpe(torch.arange(T)))
        for b in self.blocks:
            x = b(x, self.mask)
        return self.ln_f(x) @ self.wte.weight.t()


# --- the omega-space notebook: theta = theta0 + P omega ---

def fwht(x):
    n = x.numel()
    h = 1
    while h < n:
        x = x.view(-1, 2, h)
        x = torch.stack((x[:, 0] + x[:, 1], x[:, 0] - x[:, 1]), dim=1)
        h *= 2
    return x.reshape(-1)


class Subspace(nn.Module):
    def __init__(self, net, d, projection):
        super().__init__()
        self.net = net
        self.names = [n for n, _ in net.named_parameters()]
        self.shapes = [p.shape for _, p in net.named_parameters()]
        theta0 = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
        self.register_buffer("theta0", theta0)
        D = theta0.numel()
        self.omega = nn.Parameter(torch.zeros(d))
        self.projection = projection
        if projection == "dense-qr":
            self.register_buffer("P", torch.linalg.qr(torch.randn(D, d)).Q)
        else:  # fastfood: H G Pi H B on omega zero-padded to L = 2^ceil(log2 D)
            L = 1 << (max(D, d) - 1).bit_length()
            self.L, self.D = L, D
            self.register_buffer("B", torch.randint(0, 2, (L,)).float() * 2 - 1)
            self.register_buffer("Pi", torch.randperm(L))
            g = torch.randn(L)
            self.register_buffer("G", g / math.sqrt(L * float((g * g).sum())))
        for p in net.parameters():
            p.requires_grad_(False)

    def theta(self):
        if self.projection == "dense-qr":
            return self.theta0 + self.P @ self.omega
        x = F.pad(self.omega, (0, self.L - self.omega.numel()))
        x = fwht(fwht(x * self.B)[self.Pi] * self.G)
        return self.theta0 + x[: self.D]

    def forward(self, x):
        flat, params, at = self.theta(), {}, 0
        for n, s in zip(self.names, self.shapes):
            params[n] = flat[at: at + s.numel()].view(s)
            at += s.numel()
        return torch.nn.utils.stateless.functional_call(self.net, params, (x,))


# --- workloads: what xpand's bench/compare.py runs on its side ---

def workload(name):
    """(model, optimizer factory, data (x, y) in memory, batch, tokens per sample, clip)."""
    mnist10k = (8000, 784, 10)
    fmnist = (60000, 784, 10)
    if name.startswith("expansive-"):
        depth = {"expansive-base": 1, "expansive-5": 5, "expansive-20": 20}[name]
        net = Mlp([784, 128, 128, 10], depth=[1, depth, 1], residual=[1])
        return net, lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9), mnist10k, 64, 1, 0
    if name.startswith("fmnist-"):
        if name == "fmnist-dense":
            net = Mlp([784, 512, 512, 10])
        elif name == "fmnist-expanded":
            net = Mlp([784, 512, 512, 10], factor=2, depth=3)
        else:  # fmnist-lowrank: the low-rank notebook's deep net at ranks [150, 150, 150, 80]
            net = Mlp([784, 1024, 1024, 512, 256, 10], rank=[150, 150, 150, 80, None], bias=False)
        return net, lambda p: torch.optim.Adam(p, lr=1e-3), fmnist, 128, 1, 0
    if name.startswith("omega-"):
        net = Mlp([784, 200, 200, 10])
        if name != "omega-theta":
            proj, d = {"omega-dense-qr-100": ("dense-qr", 100), "omega-fastfood-1000": ("fastfood", 1000)}[name]
            net = Subspace(net, d, proj)
        return net, lambda p: torch.optim.Adam(p, lr=1e-2), fmnist, 256, 1, 0
    if name.startswith("gpt-"):
        net = Gpt(vocab=96, block=256, mlp_inner=2000 if name == "gpt-expanded" else None)
        return (net, lambda p: torch.optim.AdamW(p, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1),
                (1_000_000, None, 96), 4, 256, 1.0)
    sys.exit(f"reference_torch: unknown workload {name}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("workload")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=0, help="override the workload's batch")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    net, make_opt, (n, features, classes), batch, tokens, clip = workload(a.workload)
    batch = a.batch or batch
    opt = make_opt([p for p in net.parameters() if p.requires_grad])
    if features is None:  # characters: windows of a token stream
        stream = torch.randint(0, classes, (n,))
    else:
        data_x, data_y = torch.randn(n, features), torch.randint(0, classes, (n,))
    times = []
    net.train()
    for step in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        if features is None:
            starts = torch.randint(0, n - tokens - 1, (batch,))
            idx = starts.unsqueeze(1) + torch.arange(tokens + 1).unsqueeze(0)
            w = stream[idx]
            x, y = w[:, :-1], w[:, 1:]
            logits = net(x)
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        else:
            rows = torch.randint(0, n, (batch,))
            x, y = data_x.index_select(0, rows), data_y.index_select(0, rows)
            loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
        opt.step()
        loss.item()
        if step >= a.warmup:
            times.append(1e3 * (time.perf_counter() - t0))
    print(json.dumps(dict(workload=a.workload, ms_median=statistics.median(times), ms_list=times, batch=batch,
                          tokens=tokens)))


if __name__ == "__main__":
    main()
