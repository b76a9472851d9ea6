"""ExpandNets' CIFAR SmallNets (3x3 and 7x7) and their expansions against xpand's presets.

Transcribed from GUOShuxuan/expandnets (NeurIPS 2020), commit 869bdab:
  exp_cifar/models/cifar_tiny_3.py: Cifar_Tiny, Cifar_Tiny_ExpandNet_cl, _cl_fc, _fc, _cl_fc_Nonlinear
  exp_cifar/models/cifar_tiny_7.py: Cifar_Tiny, _cl, _cl_fc, _fc, _ck, _ck_fc, _ck_fc_Nonlinear,
                                    _cl_fc_Nonlinear
  every class: conv1..3 (3->8->16->32) each followed by BatchNorm2d, ReLU, max_pool2d(2); then
  out.view(N, -1), relu(fc1 -> 64), fc2 -> 10. 3x3 convs have no padding; 7x7 convs padding 3.
  CL: Sequential(Conv2d(m, m', 1[, padding=3]), Conv2d(m', n*a, k), Conv2d(n*a, n, 1)) with a = 4 and
      m' = 3 for conv1 (3 -> 3), m*a otherwise; the padding sits on the first conv.
  CK (7x7 only): Sequential(Conv2d(m, m', 3, padding=3), Conv2d(m', n*a, 3), Conv2d(n*a, n, 3)).
  FC: fc1 = Sequential(Linear(in, in*a), Linear(in*a, 64*a), Linear(64*a, 64)); fc2 stays.
  Nonlinear: the same layers, forward conv[2](relu(conv[1](relu(conv[0](x))))), likewise fc1.
The collapsed form is exp_cifar/utils/compute_new_weights.py: from_expandnet_cl_to_snet (compute_cl,
compute_cl_2, compute_fc) and from_expandnet_ck_to_snet (compute_ck, compute_fc) contract the
expanded layers into the baseline Cifar_Tiny, whose other tensors (and batch-norm statistics) come
from the expanded net's state dict; evaluation runs that baseline in eval mode. The Nonlinear models
have no contraction: they are evaluated as they are.

xpand's side: configs/nets/smallnet{3,7}-cifar.yaml with each row of the sweeps
configs/expandnets-cifar3.yaml and configs/expandnets-cifar7.yaml (read from those files, so the
presets themselves are checked), on a small stand-in for CIFAR-10 in its binary distribution
(tests/cli/fake_cifar.py; only its shape matters here, the inputs
come from this file).
Usage: expandnets.py XPAND_BINARY [WORKDIR]
"""
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cli"))
import fake_cifar  # noqa: E402
import harness  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEED = 20241208
A = 4  # upstream's expansion rate: a = int(4)

# The rows of each sweep, in order, as upstream's class names: (conv, fc1 expanded, nonlinear).
CLASSES = {
    3: [("Cifar_Tiny", "plain", False, False),
        ("Cifar_Tiny_ExpandNet_cl", "cl", False, False),
        ("Cifar_Tiny_ExpandNet_cl_fc", "cl", True, False),
        ("Cifar_Tiny_ExpandNet_fc", "plain", True, False),
        ("Cifar_Tiny_ExpandNet_cl_fc_Nonlinear", "cl", True, True)],
    7: [("Cifar_Tiny", "plain", False, False),
        ("Cifar_Tiny_ExpandNet_fc", "plain", True, False),
        ("Cifar_Tiny_ExpandNet_cl", "cl", False, False),
        ("Cifar_Tiny_ExpandNet_cl_fc", "cl", True, False),
        ("Cifar_Tiny_ExpandNet_ck", "ck", False, False),
        ("Cifar_Tiny_ExpandNet_ck_fc", "ck", True, False),
        ("Cifar_Tiny_ExpandNet_ck_fc_Nonlinear", "ck", True, True),
        ("Cifar_Tiny_ExpandNet_cl_fc_Nonlinear", "cl", True, True)],
}


class SmallNet(nn.Module):
    """The Cifar_Tiny family of cifar_tiny_{k}.py as one constructor (k = 3 or 7)."""

    def __init__(self, k, conv, fc, nonlinear, num_classes=10):
        super().__init__()
        pad = 3 if k == 7 else 0
        self.nonlinear = nonlinear
        for i, (m, n) in enumerate([(3, 8), (8, 16), (16, 32)], 1):
            first = 3 if m == 3 else m * A  # conv1: Conv2d(3, 3, 1); conv2: Conv2d(8, 8*a, 1); ...
            if conv == "plain":
                layer = nn.Conv2d(m, n, kernel_size=k, padding=pad)
            elif conv == "cl":
                layer = nn.Sequential(nn.Conv2d(m, first, kernel_size=1, padding=pad),
                                      nn.Conv2d(first, n * A, kernel_size=k),
                                      nn.Conv2d(n * A, n, kernel_size=1))
            else:  # ck, upstream's 7x7 net only
                assert k == 7
                layer = nn.Sequential(nn.Conv2d(m, first, kernel_size=3, padding=3),
                                      nn.Conv2d(first, n * A, kernel_size=3),
                                      nn.Conv2d(n * A, n, kernel_size=3))
            setattr(self, f"conv{i}", layer)
            setattr(self, f"conv{i}_bn", nn.BatchNorm2d(n))
        feat = 128 if k == 3 else 512
        if fc:
            self.fc1 = nn.Sequential(nn.Linear(feat, feat * A), nn.Linear(feat * A, 64 * A), nn.Linear(64 * A, 64))
        else:
            self.fc1 = nn.Linear(feat, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def apply_layer(self, layer, x):
        if not isinstance(layer, nn.Sequential):
            return layer(x)
        if self.nonlinear:  # layer[2](relu(layer[1](relu(layer[0](x)))))
            return layer[2](F.relu(layer[1](F.relu(layer[0](x)))))
        return layer(x)

    def forward(self, x):
        out = x
        for i in (1, 2, 3):
            out = F.relu(getattr(self, f"conv{i}_bn")(self.apply_layer(getattr(self, f"conv{i}"), out)))
            out = F.max_pool2d(out, 2)
        out = out.view(out.size(0), -1)
        out = F.relu(self.apply_layer(self.fc1, out))
        out = self.fc2(out)
        return F.log_softmax(out, dim=1)  # upstream returns logits for nn.CrossEntropyLoss


# --- compute_new_weights.py -------------------------------------------------------------------


def compute_cl(s_1, s_2):
    """1x1 conv s_1, then the k x k conv s_2."""
    w_s_1, b_s_1, w_s_2, b_s_2 = s_1["weight"], s_1["bias"], s_2["weight"], s_2["bias"]
    w_s_1_ = w_s_1.view(w_s_1.size(0), w_s_1.size(1) * w_s_1.size(2) * w_s_1.size(3))
    w_s_2_tmp = w_s_2.view(w_s_2.size(0), w_s_2.size(1), w_s_2.size(2) * w_s_2.size(3))
    new_weight = torch.empty(w_s_2.size(0), w_s_1.size(1), w_s_2.size(2) * w_s_2.size(3))
    for i in range(w_s_2.size(0)):
        tmp = w_s_2_tmp[i, :, :].view(w_s_2.size(1), w_s_2.size(2) * w_s_2.size(3))
        new_weight[i, :, :] = torch.matmul(w_s_1_.t(), tmp)
    new_weight = new_weight.view(w_s_2.size(0), w_s_1.size(1), w_s_2.size(2), w_s_2.size(3))
    b_sum = torch.sum(w_s_2_tmp, dim=2)
    return {"weight": new_weight, "bias": torch.matmul(b_sum, b_s_1) + b_s_2}


def compute_cl_2(s_1, s_2):
    """The contraction so far (k x k) s_1, then the last 1x1 conv s_2."""
    w_s_1, b_s_1, w_s_2, b_s_2 = s_1["weight"], s_1["bias"], s_2["weight"], s_2["bias"]
    w_s_1_ = w_s_1.view(w_s_1.size(0), w_s_1.size(1), w_s_1.size(2) * w_s_1.size(3))
    w_s_2_ = w_s_2.view(w_s_2.size(0), w_s_2.size(1) * w_s_2.size(2) * w_s_2.size(3))
    new_weight_ = torch.empty(w_s_2.size(0), w_s_1.size(1), w_s_1.size(2) * w_s_1.size(3))
    for i in range(w_s_1.size(1)):
        tmp = w_s_1_[:, i, :].view(w_s_1.size(0), w_s_1.size(2) * w_s_1.size(3))
        new_weight_[:, i, :] = torch.matmul(w_s_2_, tmp)
    new_weight = new_weight_.view(w_s_2.size(0), w_s_1.size(1), w_s_1.size(2), w_s_1.size(3))
    return {"weight": new_weight, "bias": torch.matmul(w_s_2_, b_s_1) + b_s_2}


def compute_ck(s_1, s_2):
    w_s_1, b_s_1, w_s_2, b_s_2 = s_1["weight"], s_1["bias"], s_2["weight"], s_2["bias"]
    w_s_2_tmp = w_s_2.view(w_s_2.size(0), w_s_2.size(1), w_s_2.size(2) * w_s_2.size(3))
    b_sum = torch.sum(w_s_2_tmp, dim=2)
    return {"weight": F.conv_transpose2d(w_s_2, w_s_1), "bias": torch.matmul(b_sum, b_s_1) + b_s_2}


def compute_fc(s_1, s_2):
    w_s_1, b_s_1, w_s_2, b_s_2 = s_1["weight"], s_1["bias"], s_2["weight"], s_2["bias"]
    return {"weight": torch.matmul(w_s_2, w_s_1), "bias": torch.matmul(w_s_2, b_s_1) + b_s_2}


def as_dict(layer):
    return {"weight": layer.weight.detach(), "bias": layer.bias.detach()}


def contracted(enet, k, conv, fc):
    """from_expandnet_cl_to_snet / from_expandnet_ck_to_snet: the baseline with the contracted weights."""
    snet = SmallNet(k, "plain", False, False)
    names = [f"conv{i}" for i in (1, 2, 3)] * (conv != "plain") + ["fc1"] * fc
    sdict = snet.state_dict()
    sdict.update({n: v for n, v in enet.state_dict().items() if n in sdict and n not in names})
    snet.load_state_dict(sdict)
    for m in names:
        layers = [as_dict(layer) for layer in getattr(enet, m)]
        if m == "fc1":  # compute_fc twice (both functions)
            tmp = compute_fc(compute_fc(layers[0], layers[1]), layers[2])
        elif conv == "cl":  # from_expandnet_cl_to_snet
            tmp = compute_cl_2(compute_cl(layers[0], layers[1]), layers[2])
        else:  # from_expandnet_ck_to_snet: compute_ck from left to right
            tmp = layers[0]
            for nxt in layers[1:]:
                tmp = compute_ck(tmp, nxt)
        target = getattr(snet, m)
        target.weight.data, target.bias.data = tmp["weight"], tmp["bias"]
    return snet


# --- xpand's side -------------------------------------------------------------------------------


def preset_rows(k):
    with open(os.path.join(ROOT, "configs", f"expandnets-cifar{k}.yaml")) as f:
        zipped = yaml.safe_load(f)["zip"]
    n = len(next(iter(zipped.values())))
    return [{key: values[i] for key, values in zipped.items()} for i in range(n)]


def set_flags(row):
    def text(v):
        return ("true" if v else "false") if isinstance(v, bool) else str(v)

    return [f"{key}.{f}={text(v)}" for key, entry in row.items() for f, v in entry.items()]


def xpand_names(net, conv, fc):
    """xpand's parameter name for each of the transcription's tensors: a plain layer is <layer>.weight with
    the network's bias <layer>_bias; an expansion holds w1.. and b1.. (factor_bias, model.layer_bias own)."""
    mapping = {}
    for layer in ["conv1", "conv2", "conv3", "fc1", "fc2"]:
        mod = getattr(net, layer)
        if isinstance(mod, nn.Sequential):
            for j, sub in enumerate(mod, 1):
                mapping[f"{layer}.w{j}"] = sub.weight
                mapping[f"{layer}.b{j}"] = sub.bias
        else:
            mapping[f"{layer}.weight"] = mod.weight
            mapping[f"{layer}_bias"] = mod.bias
        if layer.startswith("conv"):
            bn = getattr(net, f"{layer}_bn")
            mapping[f"{layer}_bn.weight"] = bn.weight
            mapping[f"{layer}_bn.bias"] = bn.bias
    return mapping


def check_init(case, net):
    """xpand draws every factor of an expansion as nn.Conv2d / nn.Linear's default:
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with the factor's own fan_in (checked on the bound, and on the
    uniform's standard deviation for tensors of at least 2,000 entries)."""
    init = case.initial()
    for layer in ["conv1", "conv2", "conv3", "fc1"]:
        mod = getattr(net, layer)
        if not isinstance(mod, nn.Sequential):
            continue
        for j, sub in enumerate(mod, 1):
            fan_in = sub.weight[0].numel()
            bound = 1.0 / math.sqrt(fan_in)
            for name in (f"{layer}.w{j}", f"{layer}.b{j}"):
                v = init[name]
                ok = float(abs(v).max()) <= bound
                ratio = float(v.std()) / (bound / math.sqrt(3.0))
                if v.size >= 2000:
                    ok = ok and abs(ratio - 1) < 0.05
                case.check_true(f"init {name}", ok, f"max |v| {float(abs(v).max()):.4g} (bound {bound:.4g}), "
                                                    f"std / (bound/sqrt 3) {ratio:.3f}")


def cases(xpand, workdir):
    print(f"seed {SEED}")
    failures = []
    data, _ = fake_cifar.write(os.path.join(workdir, "cifar"))
    g = torch.Generator().manual_seed(SEED)
    x = torch.randn(6, 3, 32, 32, generator=g)
    labels = torch.randint(0, 10, (6,), generator=g)
    for k in (3, 7):
        rows = preset_rows(k)
        if len(rows) != len(CLASSES[k]):
            failures.append(f"configs/expandnets-cifar{k}.yaml has {len(rows)} rows, upstream {len(CLASSES[k])} models")
            continue
        config = os.path.join(ROOT, "configs", "nets", f"smallnet{k}-cifar.yaml")
        for row, (cls, conv, fc, nonlinear) in zip(rows, CLASSES[k]):
            torch.manual_seed(SEED + k)
            net = SmallNet(k, conv, fc, nonlinear)
            mapping = xpand_names(net, conv, fc)
            trainable = sum(p.numel() for p in net.parameters())
            baseline = sum(p.numel() for p in SmallNet(k, "plain", False, False).parameters())
            expanded = conv != "plain" or fc
            if nonlinear or not expanded:
                collapsed_forward = harness.in_eval(net)
                collapsed = trainable if nonlinear else baseline
            else:
                def collapsed_forward(x, net=net, conv=conv, fc=fc, k=k):
                    snet = contracted(net, k, conv, fc)
                    snet.eval()
                    return snet(x)

                collapsed = baseline
            case = harness.Case(xpand, f"k{k}_{cls}", config, [f"data.root={data}"] + set_flags(row), workdir)
            case.run(net, net, collapsed_forward, mapping, x, labels, trainable, collapsed)
            if expanded:
                check_init(case, net)
            failures += case.failures
    # Upstream's baselines by hand: convs 3*8*k*k+8, 8*16*k*k+16, 16*32*k*k+32, batch norms 2*(8+16+32),
    # fc1 f*64+64 (f = 128 for 3x3, 512 for 7x7), fc2 64*10+10: 15,050 and 66,186.
    for k, want in ((3, 15050), (7, 66186)):
        got = sum(p.numel() for p in SmallNet(k, "plain", False, False).parameters())
        if got != want:
            failures.append(f"SmallNet {k}x{k} has {got} parameters, expected {want}")
    return failures


if __name__ == "__main__":
    harness.main(cases)
