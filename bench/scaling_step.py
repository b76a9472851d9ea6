#!/usr/bin/env python3
"""Weak-scaling microbenchmark of a training step: the same per-rank batch on 1 and N ranks, under
every dist.cut mode, interleaved.

    /usr/bin/python3 bench/scaling_step.py [--xpand build/xpand] [--ranks 2] [--steps 30] [--rounds 2]

For each preset it runs `xpand train` on 1 rank, then `mpirun -np N xpand train` with dist.cut auto,
narrowest, planned and raw, for a fixed number of steps with threads=1 per rank (one rank and N
ranks get the same compute per rank), and repeats the whole set `--rounds` times, the modes in a
rotated order each round, so that they are measured side by side while the machine's speed drifts. Each run's per-step metrics are read
from its run file with h5py; the first 10 steps are dropped (warm-up; auto's calibration runs
before step 0) and the median taken; a row reports the mean over rounds of those medians: step
time, compute (step minus exposed communication), all-reduce time in flight, exposed (not
overlapped) communication, gradient bytes per step, weak-scaling efficiency t(1 rank) / t(N ranks),
and for auto its ratio to the best fixed mode and its per-layer choice (the run file's /cut).
All runs of one preset share an output directory, so auto calibrates once per preset (the cache
docs/DISTRIBUTED.md describes) and the later rounds read it.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

PRESETS = [  # (label, config, extra --set, per-rank batch or None for --batch)
    ("fmnist-mlp dense", "configs/fmnist-mlp.yaml", [], None),
    ("fmnist-expanded f2 d3", "configs/nets/fmnist-expanded.yaml", [], None),
    ("fmnist-mlp expanded f16 d2", "configs/fmnist-mlp.yaml",
     ["param.kind=expanded", "param.factor=16", "param.depth=2", "train.lr=0.0001"], None),
    # The Expansive 20-factor net: fc1 as 21 factors of width 128 with a residual tail
    # (configs/expansive-mnist.yaml's third arm), on Fashion-MNIST.
    ("expansive fc1 d21", "configs/nets/expansive-mnist.yaml",
     ["data.name=fashion-mnist", "layers.fc1.kind=expanded", "layers.fc1.depth=21", "layers.fc1.factor=1",
      "layers.fc1.width_of=out", "layers.fc1.residual=tail", "layers.fc1.first_bias=true",
      "layers.fc1.init=torch-default"], None),
    # The char GPT with nanogpt-char.yaml's expanded MLPs, 2 windows of 256 characters per rank.
    ("gpt-char expanded mlp, 2x256 tokens", "configs/nets/gpt-char.yaml",
     ["layers.h*.mlp.*.kind=expanded", "layers.h*.mlp.*.factor=1.30209", "layers.h*.mlp.*.depth=2",
      "model.dropout=0", "train.warmup_steps=0"], 2),
]
MODES = ["auto", "narrowest", "planned", "raw"]
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
        col = {k: statistics.median(t[k][WARMUP:]) for k in ("time_step", "time_compute", "time_comm",
                                                            "time_comm_exposed", "comm_bytes")}
        col["choice"] = ""
        if "cut" in f and cut == "auto":
            ch = list(f["cut/choice"].asstr()[:])
            col["choice"] = ", ".join(f"{c}:{ch.count(c)}" for c in ("weight", "raw", "none") if ch.count(c))
    os.remove(os.path.join(runs, name))
    return col


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--xpand", default="build/xpand")
    ap.add_argument("--ranks", type=int, default=2, help="ranks of the data-parallel runs")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=2, help="times every run is repeated, interleaved")
    ap.add_argument("--batch", type=int, default=128, help="per-rank batch (samples)")
    ap.add_argument("--only", default="", help="run only presets whose label contains this text")
    args = ap.parse_args()
    if not os.access(args.xpand, os.X_OK):
        sys.exit(f"error: {args.xpand} is not an executable xpand binary (build it first)")
    if args.steps <= WARMUP:
        sys.exit(f"error: --steps must exceed the {WARMUP} warm-up steps")
    tmp = tempfile.mkdtemp(prefix="xpand-scaling-")
    print(f"# weak scaling: {args.steps} steps (first {WARMUP} dropped), threads 1 per rank, medians per run, "
          f"mean of {args.rounds} interleaved round(s); host {os.uname().nodename}, {os.cpu_count()} CPUs")
    print("| preset | cut | ranks | global batch | step ms | compute ms | comm ms | exposed ms | exposed % "
          "| MB/step | efficiency | auto / best fixed | auto's choice |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    worst = 0.0
    for label, config, sets, batch in PRESETS:
        if args.only not in label:
            continue
        b = batch or args.batch
        out = os.path.join(tmp, label.replace(" ", "_").replace("/", "_"))
        runs = [(1, "raw")] + [(args.ranks, m) for m in MODES]
        got = {r: [] for r in runs}
        for k in range(args.rounds):
            # The 2-rank modes in a rotated order each round: no mode always runs first or last.
            order = [runs[0]] + runs[1:][k % len(MODES):] + runs[1:][:k % len(MODES)]
            for n, mode in order:
                got[(n, mode)].append(run(args.xpand, config, sets, n, b, args.steps, mode, out))
        mean = {r: {k: statistics.mean(m[k] for m in v) for k in v[0] if k != "choice"} for r, v in got.items()}
        base = mean[(1, "raw")]["time_step"]
        best = min(mean[(args.ranks, m)]["time_step"] for m in MODES if m != "auto")
        ratio = mean[(args.ranks, "auto")]["time_step"] / best
        worst = max(worst, ratio)
        for n, mode in runs:
            m = mean[(n, mode)]
            extra = f"{ratio:.3f}" if mode == "auto" and n > 1 else ""
            choice = got[(n, mode)][-1]["choice"] if mode == "auto" and n > 1 else ""
            print(f"| {label} | {mode if n > 1 else '-'} | {n} | {b * n} | {1e3 * m['time_step']:.2f} | "
                  f"{1e3 * m['time_compute']:.2f} | {1e3 * m['time_comm']:.2f} | "
                  f"{1e3 * m['time_comm_exposed']:.2f} | {100 * m['time_comm_exposed'] / m['time_step']:.0f} | "
                  f"{m['comm_bytes'] * 1e-6:.2f} | {base / m['time_step']:.2f} | {extra} | {choice} |", flush=True)
    print(f"# worst auto / best fixed mode: {worst:.3f}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
