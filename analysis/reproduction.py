#!/usr/bin/python3
"""The numbers of docs/REPRODUCTION.md, from the presets' output directories.

    /usr/bin/python3 analysis/reproduction.py [ROOT]       # ROOT defaults to out/

Reads, where present, ROOT/<dir> for each preset's default output directory (docs/REPRODUCTION.md
lists the commands that fill them): expansive-mnist, expansive-fmnist, expandnets-cnn,
expandnets-cifar3, expandnets-cifar7, lowrank,
omega, omega-notebook, nanogpt-char, lora. For each it prints a markdown section: test accuracy
(or validation loss) mean ± sample std over seeds per sweep point, the comparison the seed claim
makes, and the largest collapse error of the expanded runs. Directories that are missing are
listed as not run. Exit 1 when none is present.
"""
import argparse
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import xpand_h5 as xh  # noqa: E402


def pct(m, s, n):
    if not np.isfinite(m):
        return "-"
    return f"{100 * m:.2f} ± {100 * s:.2f} (n={n})"


def collapse_max(runs):
    errs = [float(np.nanmax(r.eval["collapse_error"])) for r in runs
            if r.usable and "collapse_error" in r.eval and len(r.eval["collapse_error"])]
    return max(errs) if errs else float("nan")


def label_of(row, keys):
    return ", ".join(f"{k}={xh.format_value(row[k])}" for k in keys)


def accuracy_table(runs, keys, names=None):
    rows = xh.group(runs, keys)
    print("| point | test accuracy % (mean ± std) | train loss | steps | s per run |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        used = [r for r in row["runs"] if r.usable]
        steps = sorted({r.steps for r in used})
        wall = xh.mean_std([r.wall_seconds for r in used])[0] if used else float("nan")
        name = names(row) if names else label_of(row, keys)
        print(f"| {name} | {pct(row['test_acc_mean'], row['test_acc_std'], row['n'])} | "
              f"{row['train_loss_mean']:.4f} | {','.join(map(str, steps))} | {wall:.1f} |")
    return rows


def expansive(root, name):
    runs = xh.load_runs(os.path.join(root, name), errors="skip")
    print(f"### {name}\n")
    # The seed's Net(expansive=True) with n expansive layers is fc1 at depth n + 1 (configs/expansive-mnist.yaml).
    def label(r):
        return "baseline (dense)" if r["depth"] == 1 else f"{r['depth'] - 1} expansive layers (depth {r['depth']})"
    rows = accuracy_table(runs, ["depth"], label)
    base = next(r for r in rows if r["depth"] == 1)
    for r in rows:
        if r["depth"] > 1:
            diff = r["test_acc_mean"] - base["test_acc_mean"]
            print(f"\n{label(r)} - baseline: {100 * diff:+.2f} points "
                  f"(baseline std {100 * base['test_acc_std']:.2f}, expanded std {100 * r['test_acc_std']:.2f})")
    print(f"\nlargest collapse error (expanded form vs collapsed): {collapse_max(runs):.2e}\n")


def expandnets(root, name):
    runs = xh.load_runs(os.path.join(root, name), errors="skip")
    print(f"### {name}\n")
    keys = ["layers.conv1", "layers.conv[23]", "layers.fc1"]

    def label(row):
        conv, fc = str(row.get("layers.conv[23]", "")), str(row.get("layers.fc1", ""))
        c = "CK" if "ck" in conv else "CL" if "cl" in conv else ""
        f = "FC" if "expanded" in fc else ""
        nonlinear = " nonlinear" if "nonlinear" in conv + fc else ""
        return ("+".join(x for x in (c, f) if x) or "baseline") + nonlinear
    rows = accuracy_table(runs, keys, label)
    order = sorted(rows, key=lambda r: -r["test_acc_mean"])
    print("\nordering by mean test accuracy: " + " > ".join(label(r) for r in order))
    print(f"\nlargest collapse error (linear expansions): {collapse_max(runs):.2e}\n")


def lowrank(root):
    runs = xh.load_runs(os.path.join(root, "lowrank"), errors="skip")
    print("### lowrank\n")
    rows = xh.group(runs, ["rank"])
    print("| network | trainable params | test accuracy % (mean ± std) |")
    print("|---|---:|---:|")
    for row in rows:
        used = [r for r in row["runs"] if r.usable]
        params = sorted({int(r.attrs["trainable_params"]) for r in used if "trainable_params" in r.attrs})
        ranks = "dense"
        if used and row["rank"] is not None:
            ranks = "ranks " + str([(used[0].layers or {}).get(f"fc{i}", {}).get("rank") or None for i in (1, 2, 3, 4)])
        print(f"| {ranks} | {','.join(f'{p:,}' for p in params)} | {pct(row['test_acc_mean'], row['test_acc_std'], row['n'])} |")
    dense = [r for r in runs if r.usable and r.rank is None]
    if dense:
        print("\nnumerical rank (at float32 precision) and effective rank of the dense network's trained "
              "weights, last snapshot, per seed:\n")
        print("| layer | shape | min(dims) | numerical rank | effective rank |")
        print("|---|---|---:|---|---|")
        for layer in dense[0].layer_names:
            snaps = [r.snapshot(layer) for r in dense]
            shape = snaps[0].matrix_shape
            nr = ", ".join(str(int(s.numerical_rank)) for s in snaps)
            er = ", ".join(f"{float(s.effective_rank):.0f}" for s in snaps)
            print(f"| {layer} | {shape[0]}×{shape[1]} | {min(shape)} | {nr} | {er} |")
    print()


def omega(root, name):
    runs = xh.load_runs(os.path.join(root, name), errors="skip")
    print(f"### {name}\n")
    if name == "omega-notebook":
        accuracy_table(runs, ["param.anchor", "d"])
        print()
        return
    res = xh.d_int90(runs)
    print(f"full space: {pct(res['full_mean'], res['full_std'], res['full_n'])}; 90% of it: {100 * res['target']:.2f}%\n")
    print(f"| d ({res['projection']}) | test accuracy % | of full space |")
    print("|---:|---:|---:|")
    for row in res["table"]:
        print(f"| {row['d']} | {pct(row['mean'], row['std'], row['n'])} | {row['fraction']:.3f} |")
    for proj, table in res["others"].items():
        for row in table:
            print(f"| {row['d']} ({proj}) | {pct(row['mean'], row['std'], row['n'])} | {row['fraction']:.3f} |")
    ratio = f", D/d = {res['ratio']:.0f}" if res["ratio"] else ""
    print(f"\nd_int90 = {res['d_int90']} (D = {res['D']}{ratio})\n")


def nanogpt(root):
    runs = xh.load_runs(os.path.join(root, "nanogpt-char"), errors="skip")
    print("### nanogpt-char\n")
    print("| MLPs | seed | steps | tokens/step | val loss by step | ms/step (median) |")
    print("|---|---:|---:|---:|---|---:|")
    for r in sorted(runs, key=lambda r: (str(r.kind), r.seed or 0)):
        if r.duplicate_of is not None:
            continue
        ev = r.eval
        losses = ", ".join(f"{int(s)}: {v:.4f}" for s, v in zip(ev.get("step", []), ev.get("test_loss", [])))
        t = r.train.get("time_step", np.array([]))
        ms = 1e3 * float(np.median(t[len(t) // 10:])) if len(t) > 1 else float("nan")
        tokens = int(r.config.get("data.batch_size")) * int(r.config.get("data.block_size"))
        print(f"| {r.kind} | {r.seed} | {r.steps} ({r.status}) | {tokens} | {losses} | {ms:.0f} |")
    rows = xh.group([r for r in runs if r.usable], ["kind"], metrics=("test_loss",))
    if any(row["n"] > 1 for row in rows):
        print("\nfinal validation loss, mean ± std over seeds: " + "; ".join(
            f"{row['kind']} {row['test_loss_mean']:.4f} ± {row['test_loss_std']:.4f} (n={row['n']})" for row in rows))
    print()


def main():
    ap = argparse.ArgumentParser(description="The reproduction tables of docs/REPRODUCTION.md, from the preset "
                                 "sweeps' output (ROOT/<preset>/runs).")
    ap.add_argument("root", nargs="?", default="out", help="the directory holding the presets' outputs (default: out)")
    root = ap.parse_args().root
    sections = [("expansive-mnist", lambda: expansive(root, "expansive-mnist")),
                ("expansive-fmnist", lambda: expansive(root, "expansive-fmnist")),
                ("expandnets-cnn", lambda: expandnets(root, "expandnets-cnn")),
                ("expandnets-cifar3", lambda: expandnets(root, "expandnets-cifar3")),
                ("expandnets-cifar7", lambda: expandnets(root, "expandnets-cifar7")),
                ("lowrank", lambda: lowrank(root)),
                ("omega", lambda: omega(root, "omega")),
                ("omega-notebook", lambda: omega(root, "omega-notebook")),
                ("nanogpt-char", lambda: nanogpt(root))]
    found = 0
    for name, fn in sections:
        if not os.path.isdir(os.path.join(root, name)):
            print(f"### {name}\n\nnot run ({root}/{name} is missing)\n")
            continue
        found += 1
        try:
            fn()
        except (xh.XpandError, StopIteration, KeyError) as e:
            print(f"{name}: cannot summarise: {e}\n")
    if os.path.isdir(os.path.join(root, "lora")):
        found += 1
        print("### lora\n")
        sys.stdout.flush()
        subprocess.call([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lora_table.py"),
                         os.path.join(root, "lora")])
    if not found:
        sys.exit(f"reproduction: none of the presets' output directories is under {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
