"""The omega-space notebook's network and initialisation against xpand's preset.

Transcribed from greydanus/subspace-nn, subspace_nn.py, class SubspaceNN:
  param_meta: W1 (input_dim x h_dim, std 0.001), W2 (h_dim x h_dim, std 0.001), W3 (h_dim x
      output_dim, std 0.01), b1, b2, b3 (1 x dim, std 0: zero); theta is their concatenation in that
      order, theta_init = randn * std per entry (init_param_space).
  forward: h1 = relu(X W1 + b1); h2 = relu(h1 W2 + b2); log_softmax(h2 W3 + b3).
  With omega_dim: P = QR([theta_init, randn(D, d - 1)]), omega = (theta_init[0] / P[0, 0], 0, ...),
      so theta(omega_0) = theta_init.
and main.py: hidden_dim 200, batch 256, Adam(lr 3e-3, betas (0.9, 0.99)), 10 epochs, omega_dims
[3, 10, 30, 100, 300, 1000, None].

Checked here against configs/omega-notebook.yaml (its `set` keys, read from the file):
  - the theta-space network, output for output and gradient for gradient (the notebook stores each W
    as in x out and computes X W; xpand stores out x in: the mapping transposes);
  - theta_init as xpand draws it (`xpand forward --init-out`): every weight with the notebook's
    standard deviation (to 4 standard errors), every bias exactly 0;
  - the preset's optimiser, batch and d list against main.py's.
Not checked here: P itself. xpand draws P from the run's seed over its own parameter order
(docs/PARAMETERIZATIONS.md), so theta = P omega is compared through its properties in
tests/train/test_subspace.cpp (ColumnAnchorHoldsTheInitialisation), not entry by entry.
Usage: omega_notebook.py XPAND_BINARY [WORKDIR]
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
SEED = 123  # main.py's reseed()


class ThetaNet(nn.Module):
    """SubspaceNN's forward in theta space (omega_dim None), with the notebook's parameter layout."""

    def __init__(self, input_dim=784, h_dim=200, output_dim=10):
        super().__init__()
        self.meta = {"W1": (input_dim, h_dim, 0.001), "W2": (h_dim, h_dim, 0.001), "W3": (h_dim, output_dim, 0.01),
                     "b1": (1, h_dim, 0.0), "b2": (1, h_dim, 0.0), "b3": (1, output_dim, 0.0)}
        for n, (a, b, std) in self.meta.items():
            self.register_parameter(n, nn.Parameter(torch.randn(a, b) * std))

    def forward(self, x):
        x = torch.flatten(x, 1)
        bs = x.size(0)
        h1 = F.relu(x.mm(self.W1) + self.b1.repeat(bs, 1))
        h2 = F.relu(h1.mm(self.W2) + self.b2.repeat(bs, 1))
        return F.log_softmax(h2.mm(self.W3) + self.b3.repeat(bs, 1), dim=1)


def preset():
    with open(os.path.join(ROOT, "configs", "omega-notebook.yaml")) as f:
        return yaml.safe_load(f)


def text(v):
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


def cases(xpand, workdir):
    print(f"seed {SEED}")
    sweep = preset()
    flags = [f"{k}={text(v)}" for k, v in sweep["set"].items() if not k.startswith(("output.", "train."))]
    failures = []
    config = os.path.join(ROOT, "configs", "nets", "omega-mlp.yaml")
    case = harness.Case(xpand, "omega_notebook", config, flags + ["param.omega_dim=3"], workdir)

    # The preset's training settings against main.py's.
    want = {"train.optimizer": "adam", "train.lr": 0.003, "train.beta1": 0.9, "train.beta2": 0.99,
            "data.batch_size": 256, "train.epochs": 10, "param.anchor": "column"}
    for k, v in want.items():
        case.check_equal(k, sweep["set"].get(k), v)
    case.check_equal("omega dims", sweep["grid"]["param.omega_dim"], [3, 10, 30, 100, 300, 1000])

    torch.manual_seed(SEED)
    net = ThetaNet()
    # Non-zero biases, so that the bias layout is exercised (the notebook starts them at 0).
    with torch.no_grad():
        for n in ("b1", "b2", "b3"):
            getattr(net, n).uniform_(-0.1, 0.1)
        for n in ("W1", "W2", "W3"):
            getattr(net, n).mul_(100)
    t = lambda m: m.t()  # noqa: E731  (in x out -> out x in)
    row = lambda b: b.reshape(-1)  # noqa: E731  (1 x out -> out)
    mapping = {"fc1.weight": (net.W1, t), "fc2.weight": (net.W2, t), "fc3.weight": (net.W3, t),
               "fc1_bias": (net.b1, row), "fc2_bias": (net.b2, row), "fc3_bias": (net.b3, row)}
    g = torch.Generator().manual_seed(SEED + 1)
    x = torch.rand(16, 1, 28, 28, generator=g)
    labels = torch.randint(0, 10, (16,), generator=g)
    d_theta = sum(a * b for a, b, _ in net.meta.values())
    case.run(net, net, net, mapping, x, labels, d_theta, d_theta)
    case.check_equal("theta dimension D", d_theta, 199210)

    # theta_init as xpand draws it with the preset's keys.
    init = case.initial()
    for name, (p, _) in mapping.items():
        v = init[name]
        std = net.meta[{"fc1.weight": "W1", "fc2.weight": "W2", "fc3.weight": "W3"}.get(name, "b1")][2]
        if name.endswith("_bias"):
            case.check_true(f"init {name}", bool((v == 0).all()), "every entry 0")
        else:
            ratio = float(v.std()) / std
            tol = 4 / math.sqrt(2 * v.size)
            case.check_true(f"init {name}", abs(ratio - 1) < tol and abs(float(v.mean())) < 4 * std / math.sqrt(v.size),
                            f"std / {std:g} = {ratio:.4f} (tolerance {tol:.4f}), mean {float(v.mean()):.3g}")
    failures += case.failures
    return failures


if __name__ == "__main__":
    harness.main(cases)
