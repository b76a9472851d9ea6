"""Expansive Networks' MNIST net against xpand's preset.

Transcribed from Eternalyze0/expansive_networks, expansive.py, class Net (its __init__ and forward):
  fc1 = nn.Linear(784, 128); e1..eN = nn.Linear(128, 128, bias=False); fc2 = nn.Linear(128, 10)
  forward: x = flatten(x, 1); x = fc1(x)
           if expansive: training (or test_collapse): res = x; x = eN(...e1(x)); x = x + res
                         evaluation: c.weight = eN.weight @ ... @ e1.weight; x = c(x) + res
           x = relu(x); x = fc2(x); return log_softmax(x, dim=1)
  Net(expansive=False) is the baseline: fc1, relu, fc2 (the e-layers exist but are not used).
The upstream file stacks 20 e-layers; its earlier revision stacked 5 (e1..e5), otherwise the same.
Every layer starts from nn.Linear's default initialisation (upstream constructs them and loads no
other init), which is what this file uses for the weights it hands to xpand.

xpand's side is configs/nets/expansive-mnist.yaml with each layers.fc1 entry of the sweep
configs/expansive-mnist.yaml (read from that file, so the preset itself is what is checked).
Usage: expansive_net.py XPAND_BINARY [WORKDIR]
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
SEED = 20241207


class Net(nn.Module):
    def __init__(self, n, expansive):
        super().__init__()
        self.fc1 = nn.Linear(784, 128)
        self.e = nn.ModuleList([nn.Linear(128, 128, bias=False) for _ in range(n)])  # e1..eN
        self.fc2 = nn.Linear(128, 10)
        self.expansive = expansive

    def forward(self, x, test_collapse=False):
        x = torch.flatten(x, 1)
        x = self.fc1(x)
        if self.expansive:
            if self.training or test_collapse:
                res = x
                for e in self.e:
                    x = e(x)
                x = x + res
            else:
                res = x
                w = self.e[-1].weight
                for e in reversed(self.e[:-1]):
                    w = w @ e.weight  # eN.weight @ ... @ e1.weight
                x = F.linear(x, w) + res
        x = F.relu(x)
        x = self.fc2(x)
        return F.log_softmax(x, dim=1)


def preset_entries():
    with open(os.path.join(ROOT, "configs", "expansive-mnist.yaml")) as f:
        sweep = yaml.safe_load(f)
    return sweep["zip"]["layers.fc1"]


def set_flags(entry):
    def text(v):
        return ("true" if v else "false") if isinstance(v, bool) else str(v)

    return [f"layers.fc1.{k}={text(v)}" for k, v in entry.items()]


def check_init(case, mapping):
    """Every tensor xpand draws for this net follows nn.Linear's default, U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    with the fan_in of the nn.Linear it stands for (the transcription's tensor of the same name): within
    the bound, and with the uniform's standard deviation bound/sqrt(3) to 5%."""
    init = case.initial()
    for name, p in mapping.items():
        if p.dim() == 2:
            fan_in = p.shape[1]
        else:  # a bias: the fan_in of its layer's weight
            weight = {"fc1.b1": "fc1.w1", "fc1_bias": "fc1.weight", "fc2_bias": "fc2.weight"}[name]
            fan_in = mapping[weight].shape[1]
        bound = 1.0 / math.sqrt(fan_in)
        v = init[name]
        within = float(abs(v).max()) <= bound
        std_ratio = float(v.std()) / (bound / math.sqrt(3.0))
        case.check_true(f"init {name}", within and (p.dim() == 1 or abs(std_ratio - 1) < 0.05),
                        f"max |w| {float(abs(v).max()):.4g} (bound {bound:.4g}), std / (bound/sqrt 3) {std_ratio:.3f}")


def cases(xpand, workdir):
    print(f"seed {SEED}")
    failures = []
    config = os.path.join(ROOT, "configs", "nets", "expansive-mnist.yaml")
    g = torch.Generator().manual_seed(SEED)
    x = torch.randn(16, 1, 28, 28, generator=g)
    labels = torch.randint(0, 10, (16,), generator=g)
    for entry in preset_entries():
        expansive = entry.get("kind", "dense") != "dense"
        n = int(entry["depth"]) - 1 if expansive else 0
        torch.manual_seed(SEED + n)
        net = Net(n, expansive)
        if expansive:
            mapping = {"fc1.w1": net.fc1.weight, "fc1.b1": net.fc1.bias}
            for i, e in enumerate(net.e):
                mapping[f"fc1.w{i + 2}"] = e.weight
        else:
            mapping = {"fc1.weight": net.fc1.weight, "fc1_bias": net.fc1.bias}
        mapping.update({"fc2.weight": net.fc2.weight, "fc2_bias": net.fc2.bias})
        used = sum(p.numel() for p in mapping.values())
        baseline = sum(p.numel() for p in (net.fc1.weight, net.fc1.bias, net.fc2.weight, net.fc2.bias))
        name = f"expansive_{n}" if expansive else "baseline"
        case = harness.Case(xpand, name, config, ["data.name=fashion-mnist"] + set_flags(entry), workdir)
        case.run(net, net, harness.in_eval(net), mapping, x, labels, used, baseline)
        check_init(case, mapping)
        if baseline != 101770:
            case.failures.append(f"{name}: the source's baseline has {baseline} parameters, not 101,770")
        failures += case.failures
    return failures


if __name__ == "__main__":
    harness.main(cases)
