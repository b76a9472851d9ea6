#!/usr/bin/python3
"""PyTorch modules rebuilt from an exported xpand model (xpand collapse -o MODEL.h5 or MODEL.pt),
from the file alone: the architecture attributes say what to build and the state dict fills it.

    import sys; sys.path.insert(0, "analysis")
    import xpand_torch
    net, model = xpand_torch.load("model.h5")        # nn.Module in eval mode, xpand_h5.Model
    x = torch.from_numpy(model.normalize(raw_uint8_images))   # (N, C, H, W) as the run fed them
    pred = net(x).argmax(-1)

The modules compute what xpand's networks compute (src/model/mlp.cpp, cnn.cpp, gpt.cpp):
  mlp  h = x.flatten(1); per layer z = fc_i(h) (+ h for a residual layer), activation between layers
  cnn  per block conv_i (stride 1, `padding`) -> bn_i (running statistics) -> activation -> 2x2 max pool,
       then flatten and fc layers with the activation between them
  gpt  nanoGPT: wte + wpe, pre-norm blocks (bias-free LayerNorm, causal attention, GELU MLP 4x),
       ln_f, output head tied to wte
Run `xpand_torch.py MODEL --help` for the command line: it prints the module and its parameter count.
"""
import argparse
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import xpand_h5  # noqa: E402

_ACT = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "gelu": F.gelu}


class Mlp(nn.Module):
    def __init__(self, a, sd):
        super().__init__()
        w = a["widths"]
        self.act = _ACT[a["activation"]]
        self.residual = set(a.get("residual", []))
        self.n = len(w) - 1
        for i in range(self.n):
            setattr(self, f"fc{i + 1}", nn.Linear(w[i], w[i + 1], bias=f"fc{i + 1}.bias" in sd))

    def forward(self, x):
        h = x.flatten(1).to(self.fc1.weight.dtype)  # float32 from Model.normalize, for a float64 model too
        for i in range(self.n):
            z = getattr(self, f"fc{i + 1}")(h)
            if i in self.residual:
                z = z + h
            h = self.act(z) if i + 1 < self.n else z
        return h


class Cnn(nn.Module):
    def __init__(self, a, sd):
        super().__init__()
        self.act = _ACT[a["activation"]]
        self.pad, self.pool = a["padding"], a["pool"]
        c, h, w = a["input_shape"]
        k = a["kernel_size"]
        self.convs = len(a["channels"])
        self.bn = bool(a["batch_norm"])
        for i, out in enumerate(a["channels"], 1):
            setattr(self, f"conv{i}", nn.Conv2d(c, out, k, padding=self.pad, bias=f"conv{i}.bias" in sd))
            if self.bn:
                setattr(self, f"bn{i}", nn.BatchNorm2d(out, eps=a["batch_norm_eps"]))
            c, h, w = out, (h + 2 * self.pad - k + 1) // 2, (w + 2 * self.pad - k + 1) // 2
        widths = [c * h * w] + list(a["fc"]) + [a["num_classes"]]
        self.fcs = len(widths) - 1
        for i in range(self.fcs):
            setattr(self, f"fc{i + 1}", nn.Linear(widths[i], widths[i + 1], bias=f"fc{i + 1}.bias" in sd))

    def forward(self, x):
        h = x.to(self.conv1.weight.dtype)
        for i in range(1, self.convs + 1):
            h = getattr(self, f"conv{i}")(h)
            if self.bn:
                h = getattr(self, f"bn{i}")(h)
            h = F.max_pool2d(self.act(h), self.pool)
        h = h.flatten(1)
        for i in range(1, self.fcs + 1):
            h = getattr(self, f"fc{i}")(h)
            if i < self.fcs:
                h = self.act(h)
        return h


class LayerNorm(nn.Module):
    """LayerNorm with a weight and no bias (nanoGPT's bias=False)."""

    def __init__(self, c, eps):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(c)), eps

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, None, self.eps)


class Block(nn.Module):
    def __init__(self, c, eps, has_bias):
        super().__init__()
        self.ln_1, self.ln_2 = LayerNorm(c, eps), LayerNorm(c, eps)
        self.attn, self.mlp = nn.Module(), nn.Module()
        # A linear has a bias only where the file holds one (an expanded layer with factor biases).
        self.attn.c_attn = nn.Linear(c, 3 * c, bias=has_bias("attn.c_attn"))
        self.attn.c_proj = nn.Linear(c, c, bias=has_bias("attn.c_proj"))
        self.mlp.c_fc = nn.Linear(c, 4 * c, bias=has_bias("mlp.c_fc"))
        self.mlp.c_proj = nn.Linear(4 * c, c, bias=has_bias("mlp.c_proj"))


class Gpt(nn.Module):
    def __init__(self, a, sd):
        super().__init__()
        self.n_layer, self.n_head, c = a["n_layer"], a["n_head"], a["n_embd"]
        self.wte, self.wpe = nn.Embedding(len(a["vocab"]), c), nn.Embedding(a["block_size"], c)
        for i in range(self.n_layer):
            setattr(self, f"h{i}", Block(c, a["layer_norm_eps"], lambda m, i=i: f"h{i}.{m}.bias" in sd))
        self.ln_f = LayerNorm(c, a["layer_norm_eps"])

    def forward(self, idx):
        B, T = idx.shape
        C = self.wte.weight.shape[1]
        H, D = self.n_head, C // self.n_head
        x = self.wte(idx) + self.wpe.weight[:T]
        mask = torch.ones(T, T, dtype=torch.bool, device=idx.device).triu(1)
        for i in range(self.n_layer):
            b = getattr(self, f"h{i}")
            q, k, v = b.attn.c_attn(b.ln_1(x)).view(B, T, 3, H, D).permute(2, 0, 3, 1, 4)
            att = torch.softmax((q @ k.transpose(-2, -1) * (1.0 / math.sqrt(D))).masked_fill(mask, -math.inf), -1)
            x = x + b.attn.c_proj((att @ v).transpose(1, 2).reshape(B, T, C))
            x = x + b.mlp.c_proj(F.gelu(b.mlp.c_fc(b.ln_2(x))))
        return self.ln_f(x) @ self.wte.weight.t()


def build(model):
    """The nn.Module of an xpand_h5.Model, holding its state dict, in eval mode and its dtype."""
    a, sd = model.arch, model.state_dict
    net = {"mlp": Mlp, "cnn": Cnn, "gpt": Gpt}[a["model"]](a, sd)
    net = net.to(torch.float64 if a.get("dtype") == "float64" else torch.float32)
    net.load_state_dict({k: torch.as_tensor(v) for k, v in sd.items()}, strict=True)
    return net.eval()


def load(path):
    """(nn.Module, xpand_h5.Model) of a model file (.h5 or .pt)."""
    model = xpand_h5.load_model(path)
    return build(model), model


def main(argv=None):
    p = argparse.ArgumentParser(description="Rebuild an exported xpand model (xpand collapse -o MODEL.h5|.pt) "
                                "as a PyTorch module and print it with its parameter count.")
    p.add_argument("model", help="model file (.h5 or .pt)")
    args = p.parse_args(argv)
    try:
        net, model = load(args.model)
    except (xpand_h5.XpandError, OSError, KeyError) as e:
        print(f"xpand_torch.py: {args.model}: {e}", file=sys.stderr)
        return 1
    print(net)
    print(f"{sum(t.numel() for t in net.state_dict().values())} values, run {model.run_id} step {model.step}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
