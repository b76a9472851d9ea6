"""Shared part of the reference tests: one case puts the same float64 weights into a PyTorch
transcription of a source and into xpand (`xpand forward`, weights travel as HDF5), and compares
forward outputs, the collapsed network's outputs, the loss and every parameter gradient to 1e-10
relative, and parameter counts exactly.

The transcriptions (the other files here) are written from the upstream sources each one names, not
from xpand's C++; this file only moves tensors and compares them.
"""
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np
import torch
import torch.nn.functional as F

TOL = 1e-10


def rel_err(a, b, floor=0.0):
    """max |a - b| / max |b|; floor: the smallest scale to divide by (a gradient that is zero in exact
    arithmetic, e.g. of a bias right before a batch norm in training mode, is rounding noise on both
    sides and is compared against the other gradients' scale instead)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    scale = max(np.abs(b).max(), floor, 1e-300)
    return float(np.abs(a - b).max() / scale)


def as_xpand(v, grad=False):
    """A mapping value: the transcription's nn.Parameter in xpand's layout, or (parameter, to_xpand) where
    to_xpand turns the parameter (or its gradient) into xpand's layout (e.g. a transpose). A parameter
    the transcription's forward did not use has no gradient: zeros, and the caller reports it."""
    p, f = v if isinstance(v, tuple) else (v, lambda t: t)
    if grad and p.grad is None:
        return torch.zeros_like(f(p.detach()))
    return f(p.grad if grad else p.detach())


def in_eval(model):
    """model's forward in evaluation mode (where the sources collapse), leaving it in training mode."""

    def forward(x):
        model.eval()
        try:
            return model(x)
        finally:
            model.train()

    return forward


class Case:
    """One comparison. mapping: xpand parameter name -> the transcription's nn.Parameter (see as_xpand)."""

    def __init__(self, xpand, name, config, overrides, workdir):
        self.xpand, self.name, self.config, self.overrides = xpand, name, config, list(overrides)
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.failures = []

    def cmd(self, *extra):
        c = [self.xpand, "--log-level", "warn", "forward", self.config]
        for o in self.overrides:
            c += ["--set", o]
        return c + list(extra)

    def names(self):
        """The network's parameter names and shapes, as xpand lists them."""
        out = subprocess.run(self.cmd("--list"), check=True, capture_output=True, text=True).stdout
        names = {}
        for line in out.splitlines():
            parts = line.split(None, 2)
            if len(parts) == 3 and parts[0] == "param":
                names[parts[1]] = parts[2]
        return names

    def initial(self):
        """The network's own initial parameters as xpand draws them (config seed), by name."""
        path = os.path.join(self.dir, "init.h5")
        subprocess.run(self.cmd("--init-out", path, "--force"), check=True, capture_output=True, text=True)
        with h5py.File(path, "r") as f:
            return {name: f[f"/params/{name}"][()] for name in f["/params"]}

    def check_true(self, what, ok, detail):
        print(f"  {'ok  ' if ok else 'FAIL'} {what}: {detail}")
        if not ok:
            self.failures.append(f"{self.name}: {what}: {detail}")

    def check(self, what, got, want, tol=TOL, floor=0.0):
        e = rel_err(got, want, floor)
        ok = e <= tol
        print(f"  {'ok  ' if ok else 'FAIL'} {what}: relative error {e:.3g}")
        if not ok:
            self.failures.append(f"{self.name}: {what}: relative error {e:.3g} > {tol:g}")

    def check_equal(self, what, got, want):
        ok = got == want
        print(f"  {'ok  ' if ok else 'FAIL'} {what}: xpand {got}, source {want}")
        if not ok:
            self.failures.append(f"{self.name}: {what}: xpand {got}, source {want}")

    def run(self, model, forward, collapsed_forward, mapping, x, labels, trainable, collapsed):
        """forward(x) / collapsed_forward(x): the transcription's log-probabilities in training and in its
        collapsed (evaluation) form; trainable, collapsed: the source's parameter counts."""
        print(f"{self.name}: {self.config} {' '.join('--set ' + o for o in self.overrides)}")
        listed = self.names()
        self.check_equal("parameter names", sorted(listed), sorted(mapping))
        weights = os.path.join(self.dir, "weights.h5")
        with h5py.File(weights, "w") as f:
            for name, p in mapping.items():
                f[f"/params/{name}"] = as_xpand(p).numpy()
            f["/input"] = x.numpy()
            f["/labels"] = labels.numpy()
        out = os.path.join(self.dir, "xpand.h5")
        r = subprocess.run(self.cmd("--weights", weights, "-o", out, "--force"), capture_output=True, text=True)
        if r.returncode != 0:
            self.failures.append(f"{self.name}: xpand forward exited {r.returncode}: {r.stderr.strip()}")
            print(r.stdout, r.stderr)
            return
        model.train()
        for p in model.parameters():
            p.grad = None
        for v in mapping.values():
            (v[0] if isinstance(v, tuple) else v).grad = None
        logp = forward(x)
        loss = F.nll_loss(logp, labels)
        loss.backward()
        with torch.no_grad():
            logp_c = collapsed_forward(x)
        for name, v in mapping.items():
            if (v[0] if isinstance(v, tuple) else v).grad is None:
                self.failures.append(f"{self.name}: the transcription's {name} got no gradient (unused?)")
        with h5py.File(out, "r") as f:
            if "/unused_parameters" in f:
                unused = [s.decode() if isinstance(s, bytes) else s for s in f["/unused_parameters"][()]]
                self.failures.append(f"{self.name}: xpand's forward did not use {unused}")
            xo = torch.from_numpy(f["/output"][()])
            xc = torch.from_numpy(f["/collapsed_output"][()])
            self.check("log-probabilities", F.log_softmax(xo, dim=-1).numpy(), logp.detach().numpy())
            self.check("collapsed log-probabilities", F.log_softmax(xc, dim=-1).numpy(), logp_c.numpy())
            self.check("loss", f["/loss"][()], [loss.item()])
            # Gradients are compared relative to their own size, but never to less than 1e-4 of the largest
            # gradient of the network (see rel_err).
            floor = 1e-4 * max(float(as_xpand(p, grad=True).abs().max()) for p in mapping.values())
            for name, p in mapping.items():
                self.check(f"grad {name}", f[f"/grad/{name}"][()], as_xpand(p, grad=True).numpy(), floor=floor)
            self.check_equal("trainable parameters", int(f.attrs["trainable"]), trainable)
            self.check_equal("collapsed parameters", int(f.attrs["collapsed"]), collapsed)


def main(cases):
    """cases(xpand, workdir) -> list of failures. argv: XPAND_BINARY [WORKDIR]."""
    if len(sys.argv) < 2:
        sys.exit(f"usage: {sys.argv[0]} XPAND_BINARY [WORKDIR]")
    torch.set_default_dtype(torch.float64)
    workdir = sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp(prefix="xpand-reference-")
    os.makedirs(workdir, exist_ok=True)
    failures = cases(sys.argv[1], workdir)
    if failures:
        print("\n".join(["FAILED:"] + failures))
        sys.exit(1)
    print("all reference comparisons passed")
