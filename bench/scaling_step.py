#!/usr/bin/env python3
"""Weak-scaling microbenchmark of a training step: the same per-rank batch on 1 and N ranks.

    /usr/bin/python3 bench/scaling_step.py [--xpand build/xpand] [--ranks 1 2] [--steps 60]

For each preset and dist.cut it runs `mpirun -np N xpand train` for a fixed number of steps with
threads=1 per rank (so one rank and N ranks get the same compute per rank), reads the run file's
per-step metrics with h5py, drops the first 10 steps (warm-up) and prints medians: step time,
compute (step minus exposed communication), all-reduce time in flight, exposed (not overlapped)
communication and its fraction of the step, gradient bytes per step, and weak-scaling efficiency
t(1 rank) / t(N ranks).
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

PRESETS = [  # (label, config, extra --set)
    ("fmnist-mlp dense", "configs/fmnist-mlp.yaml", []),
    ("fmnist-expanded f2 d3", "configs/nets/fmnist-expanded.yaml", []),
    ("fmnist-mlp expanded f16 d2", "configs/fmnist-mlp.yaml",
     ["param.kind=expanded", "param.factor=16", "param.depth=2", "train.lr=0.0001"]),
]
WARMUP = 10


def run(xpand, config, sets, ranks, per_rank_batch, steps, cut, out):
    cmd = ([os.environ.get("MPIEXEC", "mpirun"), "-np", str(ranks)] if ranks > 1 else []) + [
        xpand, "train", config, "--out", out, "--force"]
    for s in sets + [f"data.batch_size={per_rank_batch * ranks}", f"train.max_steps={steps}", "train.epochs=0",
                     f"train.eval_every={steps}", "threads=1", f"dist.cut={cut}", f"train.log_every={steps}"]:
        cmd += ["--set", s]
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} exited {p.returncode}:\n{p.stderr[-2000:]}")
    import h5py
    runs = os.path.join(out, "runs")
    (name,) = [f for f in os.listdir(runs) if f.endswith(".h5")]
    with h5py.File(os.path.join(runs, name), "r") as f:
        t = f["metrics/train"]
        col = {k: t[k][WARMUP:] for k in ("time_step", "time_compute", "time_comm", "time_comm_exposed",
                                          "comm_bytes")}
    shutil.rmtree(out)
    return {k: statistics.median(v) for k, v in col.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--xpand", default="build/xpand")
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=128, help="per-rank batch")
    ap.add_argument("--only", default="", help="run only presets whose label contains this text")
    args = ap.parse_args()
    if not os.access(args.xpand, os.X_OK):
        sys.exit(f"error: {args.xpand} is not an executable xpand binary (build it first)")
    tmp = tempfile.mkdtemp(prefix="xpand-scaling-")
    print(f"# weak scaling: per-rank batch {args.batch}, {args.steps} steps (first {WARMUP} dropped), "
          f"threads 1 per rank, medians; host {os.uname().nodename}, {os.cpu_count()} CPUs")
    print("| preset | cut | ranks | global batch | step ms | compute ms | comm ms | exposed ms | exposed % "
          "| MB/step | efficiency |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, config, sets in PRESETS:
        if args.only not in label:
            continue
        for cut in ("auto", "planned", "raw"):
            base = None
            for n in args.ranks:
                m = run(args.xpand, config, sets, n, args.batch, args.steps, cut, os.path.join(tmp, "o"))
                base = base or m["time_step"]
                print(f"| {label} | {cut} | {n} | {args.batch * n} | {1e3 * m['time_step']:.2f} | "
                      f"{1e3 * m['time_compute']:.2f} | {1e3 * m['time_comm']:.2f} | "
                      f"{1e3 * m['time_comm_exposed']:.2f} | {100 * m['time_comm_exposed'] / m['time_step']:.0f} | "
                      f"{m['comm_bytes'] * 1e-6:.2f} | {base / m['time_step']:.2f} |", flush=True)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
