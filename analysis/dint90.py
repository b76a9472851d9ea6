#!/usr/bin/python3
"""Intrinsic dimension of a subspace sweep (configs/omega.yaml), from its run files.

    /usr/bin/python3 analysis/dint90.py OUT                   # OUT/runs/*.h5
    /usr/bin/python3 analysis/dint90.py OUT --threshold 0.8 --metric test_acc

Prints the full-space accuracy (mean over the seeds of the completed runs whose layers are all dense,
not in a subspace), a markdown table of d vs the mean accuracy over seeds (std, seeds, fraction of
the full space, D/d), d_int90 (the smallest d whose mean reaches 0.9 x the full-space mean),
the crossing interpolated linearly in log d between grid points (on the mean curve, and on each
seed's own curve with their mean and std) and the compression D/d_int90. Subspace runs of the projection most runs use make the curve; the others get
their own table. When the sweep varies other axes (model.activation, data.name, ...), each
combination is reported on its own. Only completed runs count; duplicates (the same configuration
under an older run id) count once. Exit 1 with a message when OUT has no run files, no completed
subspace run or no completed full-space run.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import xpand_h5 as xh  # noqa: E402


def table(rows, D):
    print("| d | mean | std | n | fraction of full | D/d |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ratio = f"{D / r['d']:.1f}" if D else ""
        print(f"| {r['d']} | {r['mean']:.4f} | {r['std']:.4f} | {r['n']} | {r['fraction']:.3f} | {ratio} |")


def main():
    ap = argparse.ArgumentParser(description="d_int90 of a subspace sweep")
    ap.add_argument("dir", help="the sweep's output directory (holding runs/*.h5)")
    ap.add_argument("--threshold", type=float, default=0.9, help="fraction of the full-space accuracy (0.9)")
    ap.add_argument("--metric", default="test_acc", help="final eval metric (test_acc)")
    args = ap.parse_args()
    try:
        runs = xh.load_runs(args.dir)
    except xh.XpandError as e:
        sys.exit(f"dint90: cannot read {e}")
    if not runs:
        sys.exit(f"dint90: no run files in {os.path.join(args.dir, 'runs')}")
    contexts = xh.split_context([r for r in runs if r.usable])
    results, errors = [], []
    for ctx, rs in contexts:
        try:
            results.append((ctx, xh.d_int90(rs, args.threshold, args.metric)))
        except xh.XpandError as e:
            errors.append((ctx, str(e)))
    if not results:
        statuses = sorted({r.status for r in runs})
        why = errors[0][1] if errors else f"no completed runs ({len(runs)} run files: {', '.join(statuses)})"
        sys.exit(f"dint90: {args.dir}: {why}")
    pct = f"{100 * args.threshold:g}%"
    for ctx, res in results:
        label = ", ".join(f"{k}={xh.format_value(v)}" for k, v in ctx)
        print(f"### d_int{100 * args.threshold:g} of {args.dir}" + (f" ({label})" if label else "") + "\n")
        print(f"full-space {args.metric}: {res['full_mean']:.4f} ± {res['full_std']:.4f} (n = {res['full_n']})")
        print(f"target ({pct} of full): {res['target']:.4f}\n")
        print(f"subspace runs, projection {res['projection']}:\n")
        table(res["table"], res["D"])
        for proj, rows in res["others"].items():
            print(f"\nprojection {proj}:\n")
            table(rows, res["D"])
        print()
        if res["d_int90"]:
            print(f"d_int90: {res['d_int90']} (the first grid point whose mean reaches the target)")
            if res["d_int90_interp"]:
                print(f"d_int90, interpolated (log d) between grid points on the mean curve: {res['d_int90_interp']:.0f}")
            per = ", ".join(f"seed {k}: {'not reached' if v is None else f'{v:.0f}'}"
                            for k, v in res["d_int90_seeds"].items())
            print(f"d_int90 per seed's own curve: {per}; mean ± std {res['d_int90_seed_mean']:.0f} ± "
                  f"{res['d_int90_seed_std']:.0f} (n = {res['d_int90_seed_n']})")
        else:
            print(f"d_int90: not reached (largest d = {res['table'][-1]['d']}, "
                  f"{res['table'][-1]['fraction']:.3f} of full)")
        print(f"D: {res['D'] if res['D'] else 'unknown'}")
        if res["ratio"]:
            print(f"D/d_int90: {res['ratio']:.1f}")
        print()
    for ctx, msg in errors:  # other combinations of the context axes, when they hold subspace runs
        if any(r.d is not None for r in dict(contexts)[ctx]):
            label = ", ".join(f"{k}={xh.format_value(v)}" for k, v in ctx)
            print(f"dint90: {label}: {msg}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
