#!/usr/bin/env python3
"""Checks that a run file written by xpand holds every field of docs/FORMAT.md (schema version 2),
read with h5py alone, and that the values agree with each other and with what the test asked for.

Usage: check_schema.py RUN.h5 --steps N --evals E --snapshots S1,S2,... --layers fc1,fc2 \
           [--factors] [--axis KEY=VALUE ...] [--live]

--live: the file belongs to a run that is still training (opened with swmr=True; status running,
        and no end-of-run fields are required). Exit 0 and "OK" when everything holds.
"""
import argparse
import sys

import h5py
import numpy as np

ROOT_STR = ["run_id", "status", "error", "config", "name", "xpand_version", "git_commit", "torch_version",
            "mpi_version", "nccl_version", "hdf5_version", "hostname", "device", "start_time", "end_time",
            "dataset_source", "dist_backend"]
ROOT_INT = ["schema_version", "total_steps", "steps_per_epoch", "steps", "ranks_per_run", "world_ranks",
            "resumed_from_step", "resumes", "trainable_params", "world_size", "seed", "threads", "grad_accum",
            "num_classes"]
ROOT_FLOAT = ["input_div", "input_mean", "input_std"]
ROOT_LIST = ["hostnames", "devices"]
TRAIN = ["step", "epoch", "samples", "loss", "lr", "grad_norm", "time_step", "time_compute", "time_comm",
         "time_comm_exposed", "comm_bytes", "mem_peak"]
EVAL = ["step", "train_loss", "train_acc", "test_loss", "test_acc", "collapse_error"]
INT_COLUMNS = {"step", "samples", "comm_bytes", "mem_peak"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--evals", type=int)
    ap.add_argument("--snapshots", default="")
    ap.add_argument("--layers", default="")
    ap.add_argument("--factors", action="store_true")
    ap.add_argument("--axis", action="append", default=[])
    ap.add_argument("--live", action="store_true")
    a = ap.parse_args()
    errors = []

    def need(cond, msg):
        if not cond:
            errors.append(msg)

    with h5py.File(a.file, "r", swmr=a.live) as f:
        at = f.attrs
        for k in ROOT_STR:
            need(k in at and isinstance(at[k], str), f"root attribute {k!r} missing or not a string")
        for k in ROOT_INT:
            need(k in at and isinstance(at[k], (np.integer, int)), f"root attribute {k!r} missing or not an integer")
        for k in ROOT_FLOAT:
            need(k in at and isinstance(at[k], (float, np.floating)), f"root attribute {k!r} missing or not a float")
        need(isinstance(at.get("axes"), np.ndarray) and at["axes"].ndim == 1,
             f"axes is not a 1-D string array: {at.get('axes')!r}")
        need(isinstance(at.get("input_shape"), np.ndarray) and at["input_shape"].dtype.kind == "i",
             "input_shape is not an int64 array")
        for k in ROOT_LIST:
            need(k in at and len(at[k]) == int(at["ranks_per_run"]), f"root attribute {k!r}: one entry per rank")
        need(isinstance(at.get("wall_seconds"), (float, np.floating)), "wall_seconds is not a float64")
        need(at["schema_version"] == 2, f"schema_version {at['schema_version']}")
        need(at["hdf5_version"].startswith("1."), f"hdf5_version {at['hdf5_version']!r}")
        need(at["mpi_version"] != "", "mpi_version is empty")
        need(at["run_id"].startswith(at["name"] + "-"), "run_id is not <name>-<hash>")
        need("model:" in at["config"] and "train:" in at["config"], "config is not the resolved YAML")
        axes = list(at["axes"])
        for spec in a.axis:
            key, value = spec.split("=", 1)
            need(key in axes, f"axis {key} not listed in the axes attribute {axes}")
            need(key in at and str(at[key]) == value, f"axis attribute {key} = {at.get(key)!r}, expected {value}")
        if a.live:
            need(at["status"] == "running", f"live file has status {at['status']!r}")
        else:
            need(at["status"] == "completed", f"status {at['status']!r} ({at['error']})")
            need(at["error"] == "", "error is set on a completed run")
            need(at["steps"] == a.steps, f"steps attribute {at['steps']}, expected {a.steps}")
            need(at["end_time"] >= at["start_time"] and at["end_time"] != "", "end_time")

        tables = {"train": TRAIN, "eval": EVAL}
        lengths = {}
        for t, cols in tables.items():
            for c in cols:
                p = f"metrics/{t}/{c}"
                if p not in f:
                    errors.append(f"missing {p}")
                    continue
                d = f[p]
                need(d.ndim == 1 and d.maxshape == (None,) and d.chunks is not None,
                     f"{p} is not 1-D, chunked and unlimited")
                want = np.int64 if c in INT_COLUMNS and t == "train" or c == "step" else np.float64
                need(d.dtype == want, f"{p} has dtype {d.dtype}, expected {np.dtype(want)}")
                lengths.setdefault(t, set()).add(d.shape[0])
            need(len(lengths.get(t, ())) == 1, f"/metrics/{t} columns have different lengths {lengths.get(t)}")
        steps = f["metrics/train/step"][:]
        need(np.array_equal(steps, np.arange(1, len(steps) + 1)), "train steps are not 1, 2, 3, ...")
        if not a.live:
            need(len(steps) == a.steps, f"{len(steps)} train rows, expected {a.steps}")
            need(f["metrics/eval/step"].shape[0] == a.evals, f"{f['metrics/eval/step'].shape[0]} eval rows")
            need(np.all(f["metrics/train/mem_peak"][:] > 0), "mem_peak is not positive")
            need(np.all(f["metrics/train/time_step"][:] > 0), "time_step is not positive")

        # /layers: one row per layer, written at the start; its counts are the snapshot's shapes.
        L = f.get("layers")
        need(L is not None and "name" in L, "no /layers table")
        if L is not None and "name" in L and a.layers:
            names = list(L["name"].asstr()[:])
            need(names == a.layers.split(","), f"/layers/name {names}, expected {a.layers}")
            for col in ("kind", "shape", "order", "factor", "depth", "rank", "inner", "collapsed", "trainable", "cut",
                        "flops_per_sample"):
                need(col in L and L[col].shape == (len(names),), f"/layers/{col} missing or not one value per layer")
            need("other_params" in L.attrs, "/layers lacks other_params")
            last = sorted(f["snapshots"])[-1] if "snapshots" in f and len(f["snapshots"]) else None
            if last and not a.live and all(c in L for c in ("collapsed", "shape")):
                for i, n in enumerate(names):
                    g = f[f"snapshots/{last}/{n}"]
                    want = int(np.prod(g["weight"].shape)) + (g["bias"].shape[0] if "bias" in g else 0)
                    need(int(L["collapsed"][i]) == want, f"/layers/collapsed of {n}: {L['collapsed'][i]}, snapshot {want}")
                    need(L["shape"].asstr()[i].replace("x", " ").split() == [str(d) for d in g["weight"].shape],
                         f"/layers/shape of {n}: {L['shape'].asstr()[i]} vs {g['weight'].shape}")
        snaps = sorted(f["snapshots"]) if "snapshots" in f else []
        if a.snapshots and not a.live:
            want = [f"{int(s):08d}" for s in a.snapshots.split(",")]
            need(snaps == want, f"snapshots {snaps}, expected {want}")
        for s in snaps:
            if not a.live:
                need(f[f"snapshots/{s}"].attrs.get("step") == int(s), f"snapshots/{s} lacks its step attribute")
            # The tensors outside the layers equal the trained ones at the last snapshot.
            net = f"snapshots/{s}/network"
            if not a.live and s == snaps[-1] and net in f and "checkpoint" in f:
                for name, d in f[net].items():
                    src = next((f"{k}/{name}" for k in ("params", "buffers") if f"{k}/{name}" in f["checkpoint"]), None)
                    need(src is not None, f"{net}/{name} is not a tensor of the network")
                    if src is not None:
                        need(np.array_equal(d[()], f["checkpoint"][src][()].astype(np.float64)),
                             f"{net}/{name} differs from the checkpoint's")
            for layer in a.layers.split(",") if a.layers else []:
                g = f"snapshots/{s}/{layer}"
                if g not in f:
                    errors.append(f"missing {g}")
                    continue
                w = f[g + "/weight"][()]
                sv = f[g + "/singular_values"][()]
                need(w.ndim in (2, 4) and w.dtype == np.float64, f"{g}/weight shape {w.shape} dtype {w.dtype}")
                m = w.reshape(w.shape[0], -1)
                ref = np.linalg.svd(m, compute_uv=False)
                need(sv.shape == ref.shape and np.allclose(sv, ref, rtol=1e-5, atol=1e-6 * ref.max()),
                     f"{g}/singular_values differ from numpy's SVD of the weight")
                # The layer's own bias, when the network has one, equals the trained tensor at the
                # last snapshot (the checkpoint holds it in the training dtype).
                if not a.live and "checkpoint" in f and f"params/{layer}_bias" in f["checkpoint"]:
                    need(g + "/bias" in f, f"missing {g}/bias")
                    if g + "/bias" in f and s == snaps[-1]:
                        b = f[g + "/bias"][()]
                        ref_b = f["checkpoint"][f"params/{layer}_bias"][()].astype(np.float64)
                        need(b.dtype == np.float64 and np.array_equal(b, ref_b), f"{g}/bias differs from the checkpoint's")
                ga = f[g].attrs
                for k in ("numerical_rank", "effective_rank", "stable_rank"):
                    need(k in ga, f"{g} lacks attribute {k}")
                if "stable_rank" in ga:
                    need(abs(ga["stable_rank"] - (ref ** 2).sum() / ref[0] ** 2) < 1e-6 * ga["stable_rank"],
                         f"{g} stable_rank {ga['stable_rank']} != |W|_F^2/|W|_2^2")
                if "numerical_rank" in ga:
                    need(0 < ga["numerical_rank"] <= min(m.shape), f"{g} numerical_rank {ga['numerical_rank']}")
                if a.factors:
                    fac = f[g + "/factors"]
                    mats = [fac[k][()] for k in sorted(fac, key=int)]
                    need(len(mats) >= 1, f"{g}/factors is empty")
                    # Plain expanded chains: the product of the factors is the collapsed weight.
                    chain = [x for x in mats if x.ndim == 2]
                    if len(chain) == len(mats):
                        prod = chain[0]
                        for x in chain[1:]:
                            prod = x @ prod
                        need(np.allclose(prod, w, rtol=1e-5, atol=1e-6), f"{g}: product of factors != weight")

        if not a.live:
            need("checkpoint" in f, "no /checkpoint link")
            if "checkpoint" in f:
                c = f["checkpoint"]
                for k in ("params", "buffers", "optimizer", "rng"):
                    need(k in c, f"/checkpoint lacks {k}")
                need(c.attrs["step"] == a.steps, f"/checkpoint step {c.attrs['step']}, expected {a.steps}")
                need(c["rng/cpu"].dtype == np.uint8 and c["rng/cpu"].shape[0] == at["ranks_per_run"], "rng/cpu")
    for e in errors:
        print(f"check_schema.py: {a.file}: FAIL: {e}", file=sys.stderr)
    if not errors:
        print(f"{a.file}: OK")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
