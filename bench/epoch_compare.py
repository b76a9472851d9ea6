#!/usr/bin/python3
"""One epoch end to end, the seeds' way against `xpand train`.

The seeds train Fashion-MNIST with a torchvision dataset (ToTensor + Normalize per sample) and a
DataLoader; xpand keeps the whole split in memory as one tensor. This runs both on the same work,
alternating, and prints the wall time of each whole process (start-up, data, one epoch of 468
steps of the 784-512-512-10 ReLU MLP with Adam at batch 128, evaluation on the full train and test
splits) and of the training loop alone:

    /usr/bin/python3 bench/epoch_compare.py [--xpand build/xpand] [--rounds 2] [--threads 2] [--workers 0,2]

Needs Debian's python3-torch and python3-torchvision. The PyTorch side runs with the OpenBLAS
kernels xpand picks on this machine (as bench/compare.py does). Fashion-MNIST comes from
/usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist), unpacked once into a
temporary torchvision root.
"""
import argparse
import glob
import gzip
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FMNIST = "/usr/share/datasets/fashion-mnist"

# The PyTorch side: a torchvision dataset and DataLoader, an nn.Linear chain, Adam, then one pass
# over each split for loss and accuracy, as xpand's end-of-epoch evaluation does.
TORCH_EPOCH = r"""
import sys, time, json
t_start = time.perf_counter()
import torch, torch.nn as nn, torch.nn.functional as F
from torchvision import datasets, transforms
root, threads, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
torch.manual_seed(0)
tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.2860,), (0.3530,))])
train = datasets.FashionMNIST(root, train=True, download=False, transform=tf)
test = datasets.FashionMNIST(root, train=False, download=False, transform=tf)
loader = torch.utils.data.DataLoader(train, batch_size=128, shuffle=True, drop_last=True, num_workers=workers)
model = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
t_loop = time.perf_counter()
steps = 0
for x, y in loader:
    opt.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    steps += 1
t_train = time.perf_counter() - t_loop
model.eval()
acc = {}
with torch.no_grad():
    for name, ds in (("train", train), ("test", test)):
        correct = 0
        for x, y in torch.utils.data.DataLoader(ds, batch_size=2048, num_workers=workers):
            correct += (model(x).argmax(1) == y).sum().item()
        acc[name] = correct / len(ds)
print(json.dumps({"steps": steps, "train_s": t_train, "loop_and_eval_s": time.perf_counter() - t_loop,
                  "test_acc": acc["test"], "in_process_s": time.perf_counter() - t_start}))
"""


def blas_core(xpand):
    out = subprocess.run([xpand, "--version"], env=dict(os.environ, OPENBLAS_VERBOSE="2"),
                         capture_output=True, text=True)
    cores = re.findall(r"^Core: (\S+)", out.stdout + out.stderr, re.M)
    return cores[-1] if cores else None


def torchvision_root(tmp):
    raw = os.path.join(tmp, "FashionMNIST", "raw")
    os.makedirs(raw)
    for gz in glob.glob(os.path.join(FMNIST, "*-ubyte.gz")):
        with gzip.open(gz, "rb") as src, open(os.path.join(raw, os.path.basename(gz)[:-3]), "wb") as dst:
            shutil.copyfileobj(src, dst)
    return tmp


def run_torch(root, threads, workers, env):
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", TORCH_EPOCH, root, str(threads), str(workers)],
                         env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if out.returncode != 0:
        sys.exit(f"epoch_compare: the PyTorch epoch failed:\n{out.stderr[-2000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return wall, r["train_s"], r["test_acc"]


def run_xpand(xpand, out_dir, threads):
    sys.path.insert(0, os.path.join(ROOT, "analysis"))
    import xpand_h5
    shutil.rmtree(out_dir, ignore_errors=True)
    cmd = [xpand, "train", os.path.join(ROOT, "configs/fmnist-mlp.yaml"), "--set", "train.epochs=1",
           "--set", f"threads={threads}", "--out", out_dir, "--force"]
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if out.returncode != 0:
        sys.exit(f"epoch_compare: {' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    run = xpand_h5.load_runs(out_dir)[0]
    return wall, float(sum(run.train["time_step"])), float(run.eval["test_acc"][-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--xpand", default=os.path.join(ROOT, "build", "xpand"))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", default="0,2", help="DataLoader num_workers values to try")
    a = ap.parse_args()
    if not os.access(a.xpand, os.X_OK):
        sys.exit(f"epoch_compare: {a.xpand} is not an executable (build first: scripts/build.sh)")
    if not os.path.isdir(FMNIST):
        sys.exit(f"epoch_compare: {FMNIST} is missing (apt-get install dataset-fashion-mnist)")
    try:
        import torchvision  # noqa: F401
    except ImportError:
        sys.exit("epoch_compare: torchvision is missing (apt-get install python3-torchvision)")
    workers = [int(w) for w in a.workers.split(",")]
    env = dict(os.environ)
    core = blas_core(a.xpand)
    if core and "OPENBLAS_CORETYPE" not in env:
        env["OPENBLAS_CORETYPE"] = core
    with tempfile.TemporaryDirectory(prefix="xpand-epoch-") as tmp:
        root = torchvision_root(os.path.join(tmp, "tv"))
        rows = {"xpand train": []}
        rows.update({f"PyTorch DataLoader, {w} workers": [] for w in workers})
        for _ in range(a.rounds):  # alternating, so drift on a shared machine hits both sides
            rows["xpand train"].append(run_xpand(a.xpand, os.path.join(tmp, "x"), a.threads))
            for w in workers:
                rows[f"PyTorch DataLoader, {w} workers"].append(run_torch(root, a.threads, w, env))
    print(f"# one epoch of Fashion-MNIST (468 steps, 784-512-512-10, Adam, batch 128) plus evaluation of both "
          f"splits; threads {a.threads}, {a.rounds} alternating rounds, medians; OpenBLAS kernels {core or '?'}")
    print(f"{'':32} {'process s':>10} {'train loop s':>13} {'test acc':>9} {'process / xpand':>16}")
    base = statistics.median(r[0] for r in rows["xpand train"])
    for name, rs in rows.items():
        wall = statistics.median(r[0] for r in rs)
        loop = statistics.median(r[1] for r in rs)
        acc = statistics.median(r[2] for r in rs)
        print(f"{name:32} {wall:10.2f} {loop:13.2f} {acc:9.4f} {wall / base:16.2f}")


if __name__ == "__main__":
    main()
