#!/usr/bin/env python3
"""Compares the run files of two xpand output directories, number for number.

    /usr/bin/python3 analysis/compare_runs.py BEFORE_DIR AFTER_DIR

Every run file under BEFORE_DIR (runs/<run_id>.h5, found recursively) must exist under AFTER_DIR
with the same relative path, and every dataset in it must be bit-identical: metrics (step, loss,
accuracy, gradient norm, collapse error, ...), snapshots (weights, biases, factors, spectra) and the
checkpoint's parameters and optimizer state. Columns that measure the machine rather than the
model (times, memory, bytes per second) and provenance attributes (times, hosts, versions) are
left out. Exit status 0 when everything matches, 1 otherwise (each difference is printed).
"""
import argparse
import os
import sys

import h5py
import numpy as np

# Columns of /metrics/* that record how long or how much memory, not what was computed.
MACHINE_COLUMNS = {"time_step", "time_comm", "time_comm_exposed", "time_compute", "mem_peak", "time",
                   "wall_time", "samples_per_s", "mfu", "time_eval"}


def datasets(f):
    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            out[name] = obj
    f.visititems(visit)
    return out


def compare_file(a_path, b_path):
    problems = []
    with h5py.File(a_path, "r") as a, h5py.File(b_path, "r") as b:
        da, db = datasets(a), datasets(b)
        for name in sorted(set(da) | set(db)):
            if name.split("/")[-1] in MACHINE_COLUMNS:
                continue
            if name not in da or name not in db:
                problems.append(f"{name}: only in {'before' if name in da else 'after'}")
                continue
            x, y = da[name][()], db[name][()]
            if isinstance(x, np.ndarray) and x.dtype.kind in "fiu":
                if x.shape != y.shape:
                    problems.append(f"{name}: shape {x.shape} vs {y.shape}")
                elif x.tobytes() != y.tobytes():
                    diff = np.abs(x.astype(np.float64) - y.astype(np.float64))
                    problems.append(f"{name}: {np.count_nonzero(diff)} of {x.size} values differ "
                                    f"(max |diff| {np.nanmax(diff):.3g})")
            elif not np.array_equal(np.asarray(x), np.asarray(y)):
                problems.append(f"{name}: differs")
        for key in ("status", "steps", "run_id"):
            if a.attrs.get(key) != b.attrs.get(key):
                problems.append(f"attribute {key}: {a.attrs.get(key)!r} vs {b.attrs.get(key)!r}")
    return problems


def run_files(root):
    for dirpath, _, files in os.walk(root):
        for f in files:
            path = os.path.join(dirpath, f)
            if f.endswith(".h5") and f != "index.h5" and ".prev-" not in f:
                yield os.path.relpath(path, root)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1], epilog=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before")
    ap.add_argument("after")
    args = ap.parse_args()
    files = sorted(run_files(args.before))
    if not files:
        sys.exit(f"compare_runs: no run files under {args.before}")
    bad = 0
    for rel in files:
        b_path = os.path.join(args.after, rel)
        if not os.path.exists(b_path):
            print(f"{rel}: missing in {args.after}")
            bad += 1
            continue
        problems = compare_file(os.path.join(args.before, rel), b_path)
        n = len(datasets(h5py.File(b_path, "r")))
        print(f"{rel}: {'identical' if not problems else 'DIFFERENT'} ({n} datasets)")
        for p in problems:
            print("   ", p)
        bad += bool(problems)
    extra = sorted(set(run_files(args.after)) - set(files))
    for rel in extra:
        print(f"{rel}: only in {args.after}")
    print(f"compare_runs: {len(files) - bad} of {len(files)} files identical" + (f", {len(extra)} extra" if extra else ""))
    sys.exit(1 if bad or extra else 0)


if __name__ == "__main__":
    main()
