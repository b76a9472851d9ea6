"""overparam's EPLinear (OverparamLinear) against xpand's expanded linear layer.

Transcribed from minyoungg/overparam:
  overparam/overparam_linear.py, OverparamLinear.__init__: hidden_features = int(out_features * width);
      the layers come from construct_computation_graph; reset_parameter(init_fn=kaiming_normal_,
      b_init='default', mode='fan_in').
  overparam/computation_graph.py, construct_computation_graph: depth layers nn.Linear(in, hid),
      nn.Linear(hid, hid)..., nn.Linear(hid, out) (one layer in -> out for depth 1), each with
      bias=bias and, with batch_norm, followed by BatchNorm1d(hid, or out after the last layer,
      affine=True); variables s, x1, ..., t; with residual, for every n of residual_intervals
      (-1 = depth, duplicates dropped): m = n, 2n, ... <= depth adds variable m - n to variable m.
  overparam/graph_methods.py, graph_forward: each variable = layer(previous variable) + its residual
      inputs (after the batch norm).
  overparam/overparam_base.py, reset_parameter: every layer's weight kaiming_normal_(a, mode='fan_in',
      nonlinearity='leaky_relu') with a = 1 except the last layer's a = negative_slope; biases
      U(-1/sqrt(fan_in), 1/sqrt(fan_in)) ('default'); batch norm weight 1, bias 0.
  In evaluation the layer collapses (graph_collapse) to one weight and bias computing the same map
  as graph_forward with the batch norms' running statistics (overparam/check.py asserts this), which
  is what the collapsed output is compared with here. residual_mode='learn' raises
  NotImplementedError upstream, so no learnable residual is transcribed.

The host network is an MLP: EPLinear (xpand's fc1), ReLU, nn.Linear to the classes (fc2).
Usage: overparam_linear.py XPAND_BINARY [WORKDIR]
"""
import math
import os
import sys
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

SEED = 1207


class EPLinear(nn.Module):
    def __init__(self, in_features, out_features, width=1, depth=2, bias=True, batch_norm=False,
                 residual=False, residual_intervals=2, negative_slope=0.0):
        super().__init__()
        hid = int(out_features * width)
        self.depth, self.negative_slope = depth, negative_slope
        self.layers = nn.ModuleList()
        for i in range(depth):
            if i == 0:
                d_in, d_out = in_features, out_features if depth == 1 else hid
            elif i == depth - 1:
                d_in, d_out = hid, out_features
            else:
                d_in, d_out = hid, hid
            layer = [nn.Linear(d_in, d_out, bias=bias)]
            if batch_norm:
                layer.append(nn.BatchNorm1d(hid if i < depth - 1 else out_features, affine=True))
            self.layers.append(nn.Sequential(*layer))
        self.res = {v: [] for v in range(1, depth + 1)}
        if residual:
            if isinstance(residual_intervals, int):
                residual_intervals = [residual_intervals]
            intervals = list(OrderedDict.fromkeys([x if x != -1 else depth for x in residual_intervals]))
            for n in intervals:
                m = n
                while m <= depth:
                    self.res[m].append(m - n)
                    m += n
        self.reset_parameter()

    def reset_parameter(self):
        for i, seq in enumerate(self.layers):
            m = seq[0]
            a = self.negative_slope if i == len(self.layers) - 1 else 1.0
            nn.init.kaiming_normal_(m.weight, a=a, mode="fan_in", nonlinearity="leaky_relu")
            if m.bias is not None:
                fan_in = m.weight.shape[1]
                bound = 1 / math.sqrt(fan_in)
                nn.init.uniform_(m.bias, -bound, bound)
            if len(seq) > 1:
                nn.init.constant_(seq[1].weight, 1.0)
                nn.init.constant_(seq[1].bias, 0)

    def forward(self, x):
        xs = [x]
        for v in range(1, self.depth + 1):
            out = self.layers[v - 1](xs[v - 1])
            r = 0
            for a in self.res[v]:
                r = r + xs[a]
            xs.append(out + r)
        return xs[-1]


class Host(nn.Module):
    def __init__(self, ep, hidden, classes, bias):
        super().__init__()
        self.ep = ep
        self.fc2 = nn.Linear(hidden, classes, bias=bias)

    def forward(self, x):
        return F.log_softmax(self.fc2(F.relu(self.ep(x))), dim=1)


# (in, out, EPLinear keyword arguments): every argument and the combinations the issue lists.
CASES = [
    (12, 8, dict(width=1, depth=2)),
    (12, 8, dict(width=2, depth=3, bias=False)),
    (12, 8, dict(width=1.5, depth=3, batch_norm=True)),
    (8, 8, dict(width=1, depth=1, batch_norm=True)),
    (8, 8, dict(width=1, depth=4, residual=True, residual_intervals=2)),
    (8, 8, dict(width=1, depth=3, residual=True, residual_intervals=-1, batch_norm=True)),
    (8, 8, dict(width=1, depth=4, residual=True, residual_intervals=[1, -1], bias=False)),
    (8, 8, dict(width=1, depth=4, residual=True, residual_intervals=[2, -1], batch_norm=True)),
    (12, 8, dict(width=2, depth=3, negative_slope=0.2)),
]


INIT_CASES = [
    (256, 128, dict(width=2, depth=3)),
    (256, 128, dict(width=1, depth=2, negative_slope=0.2, batch_norm=True)),
]


def xpand_keys(kw):
    flags = ["layers.fc1.kind=expanded", "layers.fc1.width_of=out", "layers.fc1.init=overparam",
             f"layers.fc1.factor={kw.get('width', 1)}", f"layers.fc1.depth={kw.get('depth', 2)}",
             f"layers.fc1.factor_bias={'true' if kw.get('bias', True) else 'false'}",
             f"layers.fc1.negative_slope={kw.get('negative_slope', 0.0)}"]
    if kw.get("batch_norm"):
        flags += ["layers.fc1.batch_norm=true", "layers.fc1.batch_norm_at=every"]
    if kw.get("residual"):
        ri = kw.get("residual_intervals", 2)
        ri = ri if isinstance(ri, list) else [ri]
        flags += ["layers.fc1.residual=intervals", f"layers.fc1.residual_intervals=[{','.join(map(str, ri))}]"]
    return flags


def mapping_of(host, kw):
    m = {}
    for i, seq in enumerate(host.ep.layers):
        m[f"fc1.w{i + 1}"] = seq[0].weight
        if seq[0].bias is not None:
            m[f"fc1.b{i + 1}"] = seq[0].bias
        if len(seq) > 1:
            m[f"fc1.bn{i + 1}_weight"] = seq[1].weight
            m[f"fc1.bn{i + 1}_bias"] = seq[1].bias
    m["fc2.weight"] = host.fc2.weight
    if host.fc2.bias is not None:
        m["fc2_bias"] = host.fc2.bias
    return m


def check_init(case, host, kw):
    """xpand's init: overparam draws what reset_parameter draws: factor weights N(0, gain^2/fan_in) with
    gain 1 (inner) or sqrt(2 / (1 + negative_slope^2)) (last), biases within 1/sqrt(fan_in), batch
    norm 1 and 0. The std is checked to 4 standard errors of a sample std, 4/sqrt(2 n) (n entries),
    and at most 10%: run on a layer large enough that a wrong gain (1 vs sqrt 2 is 41%) cannot pass."""
    init = case.initial()
    n = len(host.ep.layers)
    for i, seq in enumerate(host.ep.layers):
        w = init[f"fc1.w{i + 1}"]
        fan_in = w.shape[1]
        a = kw.get("negative_slope", 0.0) if i == n - 1 else 1.0
        want = math.sqrt(2.0 / (1 + a * a)) / math.sqrt(fan_in)
        ratio = float(w.std()) / want
        tol = min(0.1, 4 / math.sqrt(2 * w.size))
        case.check_true(f"init fc1.w{i + 1}", abs(ratio - 1) < tol,
                        f"std / (gain/sqrt(fan_in)) {ratio:.3f} (tolerance {tol:.3f})")
        if f"fc1.b{i + 1}" in init:
            b = init[f"fc1.b{i + 1}"]
            case.check_true(f"init fc1.b{i + 1}", float(abs(b).max()) <= 1 / math.sqrt(fan_in) and float(abs(b).max()) > 0,
                            f"max |b| {float(abs(b).max()):.4g}, bound {1 / math.sqrt(fan_in):.4g}")
        if f"fc1.bn{i + 1}_weight" in init:
            ok = (init[f"fc1.bn{i + 1}_weight"] == 1).all() and (init[f"fc1.bn{i + 1}_bias"] == 0).all()
            case.check_true(f"init fc1.bn{i + 1}", bool(ok), "weight 1, bias 0")


def cases(xpand, workdir):
    print(f"seed {SEED}")
    failures = []
    config = os.path.join(workdir, "host.yaml")
    for k, (n_in, n_out, kw) in enumerate(CASES):
        bias = kw.get("bias", True)
        with open(config, "w") as f:
            f.write("name: overparam-linear-reference\nseed: 0\n"
                    f"data: {{name: teacher, teacher_inputs: {n_in}, teacher_classes: 4, train_size: 64, batch_size: 16}}\n"
                    f"model: {{kind: mlp, widths: [{n_in}, {n_out}, 4], bias: {'true' if bias else 'false'}, "
                    "layer_bias: own}\n")
        torch.manual_seed(SEED + k)
        host = Host(EPLinear(n_in, n_out, **kw), n_out, 4, bias)
        # Batch norm's affine parameters away from 1 and 0, so that a misplaced norm shows.
        with torch.no_grad():
            for seq in host.ep.layers:
                if len(seq) > 1:
                    seq[1].weight.uniform_(0.5, 1.5)
                    seq[1].bias.uniform_(-0.5, 0.5)
        g = torch.Generator().manual_seed(SEED + 100 + k)
        x = torch.randn(16, n_in, generator=g)
        labels = torch.randint(0, 4, (16,), generator=g)
        name = "eplinear_" + "_".join(f"{a}{b}" for a, b in kw.items()).replace("[", "").replace("]", "") \
            .replace(", ", "-").replace(".", "p")
        case = harness.Case(xpand, name, config, xpand_keys(kw), workdir)
        mapping = mapping_of(host, kw)
        dense = n_in * n_out + (n_out if any(n.startswith("fc1.b") for n in mapping) or kw.get("batch_norm") else 0)
        collapsed = dense + host.fc2.weight.numel() + (host.fc2.bias.numel() if bias else 0)

        trainable = sum(p.numel() for p in mapping.values())
        case.run(host, host, harness.in_eval(host), mapping, x, labels, trainable, collapsed)
        failures += case.failures
    # The initialisation, on layers large enough to measure a standard deviation (no forward pass).
    for k, (n_in, n_out, kw) in enumerate(INIT_CASES):
        with open(config, "w") as f:
            f.write("name: overparam-linear-reference\nseed: 0\n"
                    f"data: {{name: teacher, teacher_inputs: {n_in}, teacher_classes: 4, train_size: 64, batch_size: 16}}\n"
                    f"model: {{kind: mlp, widths: [{n_in}, {n_out}, 4], layer_bias: own}}\n")
        case = harness.Case(xpand, f"eplinear_init_{k}", config, xpand_keys(kw), workdir)
        print(f"{case.name}: EPLinear({n_in}, {n_out}, {kw}) initialisation")
        check_init(case, Host(EPLinear(n_in, n_out, **kw), n_out, 4, True), kw)
        failures += case.failures
    return failures


if __name__ == "__main__":
    harness.main(cases)
