"""The low-rank notebook's network against xpand's preset.

Source: the low-rank/LoRA notebook the project was seeded with (no public repository holds it, so
this follows its description as the seed states it): the deep network 784-1024-1024-512-256-10
without biases, ReLU between layers; its low-rank version replaces each of the first four layers by
two bias-free nn.Linear layers, in -> r and r -> out, with the rank list [150, 150, 150, 80]
(872,800 parameters against 2,509,312 dense), every layer with PyTorch's standard initialisation
(nn.Linear's default, U(-1/sqrt(fan_in), 1/sqrt(fan_in))).

xpand's side is configs/nets/lowrank-deep.yaml with the lowrank entries of the sweep
configs/lowrank.yaml (read from that file: the second zip entry, the notebook's rank list).
Usage: lowrank_net.py XPAND_BINARY [WORKDIR]
"""
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEED = 777
WIDTHS = [784, 1024, 1024, 512, 256, 10]


class LowRankNet(nn.Module):
    def __init__(self, ranks):
        super().__init__()
        self.layers = nn.ModuleList()
        for i in range(len(WIDTHS) - 1):
            n_in, n_out = WIDTHS[i], WIDTHS[i + 1]
            r = ranks[i] if i < len(ranks) else None
            if r is None:
                self.layers.append(nn.Linear(n_in, n_out, bias=False))
            else:
                self.layers.append(nn.Sequential(nn.Linear(n_in, r, bias=False), nn.Linear(r, n_out, bias=False)))

    def forward(self, x):
        x = torch.flatten(x, 1)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i + 1 < len(self.layers):
                x = F.relu(x)
        return F.log_softmax(x, dim=1)


def preset_entry():
    with open(os.path.join(ROOT, "configs", "lowrank.yaml")) as f:
        sweep = yaml.safe_load(f)
    entries = {k: v[1] for k, v in sweep["zip"].items()}  # the notebook's [150, 150, 150, 80]
    flags, ranks = [], []
    for key in sorted(entries):
        for k, v in entries[key].items():
            flags.append(f"{key}.{k}={v}")
        ranks.append(int(entries[key]["rank"]))
    return flags, ranks


def cases(xpand, workdir):
    print(f"seed {SEED}")
    flags, ranks = preset_entry()
    torch.manual_seed(SEED)
    net = LowRankNet(ranks)
    mapping = {}
    for i, layer in enumerate(net.layers):
        if isinstance(layer, nn.Sequential):  # W = B C: C is the first factor (r x in), B the second
            mapping[f"fc{i + 1}.c"] = layer[0].weight
            mapping[f"fc{i + 1}.b"] = layer[1].weight
        else:
            mapping[f"fc{i + 1}.weight"] = layer.weight
    g = torch.Generator().manual_seed(SEED + 1)
    x = torch.randn(8, 1, 28, 28, generator=g)
    labels = torch.randint(0, 10, (8,), generator=g)
    config = os.path.join(ROOT, "configs", "nets", "lowrank-deep.yaml")
    case = harness.Case(xpand, "lowrank_notebook", config, flags, workdir)
    trainable = sum(p.numel() for p in net.parameters())
    dense = sum(WIDTHS[i] * WIDTHS[i + 1] for i in range(len(WIDTHS) - 1))
    # The notebook's low-rank net has no separate collapsed form: in evaluation it computes the same.
    case.run(net, net, net, mapping, x, labels, trainable, dense)
    if (trainable, dense) != (872800, 2509312):
        case.failures.append(f"the source's counts are {trainable:,} / {dense:,}, not 872,800 / 2,509,312")
    init = case.initial()
    for name, p in mapping.items():
        bound = 1.0 / math.sqrt(p.shape[1])
        v = init[name]
        ratio = float(v.std()) / (bound / math.sqrt(3.0))
        case.check_true(f"init {name}", float(abs(v).max()) <= bound and abs(ratio - 1) < 0.05,
                        f"max |w| {float(abs(v).max()):.4g} (bound {bound:.4g}), std / (bound/sqrt 3) {ratio:.3f}")
    return case.failures


if __name__ == "__main__":
    harness.main(cases)
