#!/usr/bin/python3
"""Scaling table of a scaling study (jobs/scaling.sbatch), from its run files.

    /usr/bin/python3 analysis/scaling_table.py OUT            # OUT/<mode>/r<ranks>/runs/*.h5

For every mode (strong, weak) and rank count it reads the run's /metrics/train rows, leaves out the
first 10% as warm-up, and prints a markdown table: ranks, global batch, median ms/step, samples/s,
speed-up and efficiency against the smallest rank count of that mode (strong: T1 / (r/r1 * Tr);
weak: T1 / Tr), and the share of the step spent in exposed communication. Runs that did not
complete are listed with their status. Exit 1 when OUT holds no scaling runs.
"""
import glob
import argparse
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import xpand_h5 as xh  # noqa: E402


def attr(f, name, default=None):
    v = f.attrs.get(name, default)
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else v


def measure(path):
    with xh.open_swmr(path) as f:  # capped metadata read attempts: a damaged file fails fast
        status = str(attr(f, "status", "?"))
        ranks = int(attr(f, "ranks_per_run", int(attr(f, "world_size", "1"))))
        m = f["metrics/train"] if "metrics/train" in f else None
        if m is None or len(m["step"]) < 2:
            return dict(status=status, ranks=ranks, rows=0)
        t = m["time_step"][:]
        exposed = m["time_comm_exposed"][:] if "time_comm_exposed" in m else np.zeros_like(t)
        samples = m["samples"][:]
        skip = max(1, len(t) // 10)
        batch = int(samples[-1] - samples[-2])
        step = float(np.median(t[skip:]))
        return dict(status=status, ranks=ranks, rows=len(t), batch=batch, step=step,
                    comm=float(np.median(exposed[skip:])) / step if step > 0 else float("nan"))


def main():
    ap = argparse.ArgumentParser(description="Strong and weak scaling tables of jobs/scaling.sbatch output "
                                 "(OUT/strong/r<ranks>/runs, OUT/weak/r<ranks>/runs).")
    ap.add_argument("out", help="the scaling study's output directory")
    out = ap.parse_args().out
    found = False
    for mode in ("strong", "weak"):
        rows = []
        for d in glob.glob(os.path.join(out, mode, "r*")):
            m = re.fullmatch(r"r(\d+)", os.path.basename(d))
            files = sorted(glob.glob(os.path.join(d, "runs", "*.h5")))
            if not m or not files:
                continue
            try:
                rows.append(measure(files[0]))
            except (OSError, KeyError) as e:
                print(f"scaling_table: cannot read {files[0]}: {e}", file=sys.stderr)
        rows = sorted((r for r in rows), key=lambda r: r["ranks"])
        if not rows:
            continue
        found = True
        print(f"### {mode} scaling ({out})\n")
        print("| ranks | global batch | ms/step | samples/s | speed-up | efficiency | exposed comm | status |")
        print("|---:|---:|---:|---:|---:|---:|---:|---|")
        base = next((r for r in rows if r["rows"]), None)
        for r in rows:
            if not r["rows"]:
                print(f"| {r['ranks']} | | | | | | | {r['status']} (no steps) |")
                continue
            speed = base["step"] / r["step"]
            if mode == "strong":
                eff = speed / (r["ranks"] / base["ranks"])
            else:
                eff = speed
                speed = eff * r["ranks"] / base["ranks"]  # throughput gain
            print(f"| {r['ranks']} | {r['batch']} | {1e3 * r['step']:.2f} | {r['batch'] / r['step']:.0f} | "
                  f"{speed:.2f}x | {100 * eff:.0f}% | {100 * r['comm']:.0f}% | {r['status']} |")
        print()
    if not found:
        sys.exit(f"scaling_table: no runs under {out}/strong/r*/runs or {out}/weak/r*/runs")


if __name__ == "__main__":
    main()
