#!/usr/bin/python3
"""Checks analysis/report.py's output against the run files, read here with h5py directly.

    check_report.py OUT [--report DIR] [--figures a.png,b.png] [--omitted scaling,...] [--min-runs N]
    check_report.py --png FILE [FILE ...]        # only: each file is a PNG with real content

OUT holds runs/*.h5 and the report (default OUT/report). Checks: every <img> of index.html is a
relative path to a PNG that exists, is larger than 100x100 and is not blank (many colours, pixel
std); the expected figures are there and the sections listed as omitted say so; the run table
(HTML, 4 decimals) and runs.csv (full precision) hold each run's status and last /metrics/eval row;
ranks.csv holds every snapshot's rank attributes and its ranks recomputed from the singular values
agree with them; groups.csv and dint90.csv hold the means over seeds computed here, and d_int90 is
the smallest d reaching 90% of the full-space mean. Prints one line per check; exit 1 on a failure.
"""
import argparse
import csv
import glob
import math
import os
import struct
import sys
from html.parser import HTMLParser

import h5py
import numpy as np
import yaml

FAILED = []


def ok(msg):
    print(f"    ok: {msg}")


def bad(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    FAILED.append(msg)


# -- PNG ----------------------------------------------------------------------------------------

def check_png(path, min_size=100, min_colours=16, min_std=0.03):
    """Signature, IHDR size, and decoded content: distinct colours and pixel spread."""
    try:
        with open(path, "rb") as f:
            head = f.read(33)
    except OSError as e:
        return f"{path}: {e}"
    if len(head) < 33 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return f"{path}: not a PNG (bad signature or no IHDR)"
    w, h = struct.unpack(">II", head[16:24])
    if w <= min_size or h <= min_size:
        return f"{path}: {w}x{h} pixels, want more than {min_size}x{min_size}"
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.image as mimg
    try:
        img = mimg.imread(path)
    except Exception as e:  # noqa: BLE001 - any decoder error is a bad file
        return f"{path}: cannot decode: {e}"
    rgb = img[..., :3] if img.ndim == 3 else img[..., None]
    if rgb.dtype != np.uint8:
        rgb8 = np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)
    else:
        rgb8 = rgb
    flat = rgb8.reshape(-1, rgb8.shape[-1])
    colours = len(np.unique(flat.view(np.dtype((np.void, flat.dtype.itemsize * flat.shape[1])))))
    std = float(np.asarray(rgb, dtype=float).std()) / (255.0 if rgb.dtype == np.uint8 else 1.0)
    if colours < min_colours or std < min_std:
        return f"{path}: looks blank ({colours} colours, pixel std {std:.4f})"
    return (w, h, colours, std)


# -- HTML ---------------------------------------------------------------------------------------

class Page(HTMLParser):
    """The images, the sections (h2 id -> text) and the tables (with the section they are in)."""

    def __init__(self):
        super().__init__()
        self.imgs, self.tables, self.sections = [], [], {}
        self.section = None
        self._cell = None
        self._row = None
        self._h2 = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        elif tag == "h2":
            self.section = a.get("id")
            self.sections[self.section] = ""
            self._h2 = True
        elif tag == "table":
            self.tables.append((self.section, []))
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[-1][1].append(self._row)
            self._row = None
        elif tag == "h2":
            self._h2 = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        elif self.section is not None:
            self.sections[self.section] += data


# -- run files ----------------------------------------------------------------------------------

def s(v):
    return v.decode() if isinstance(v, bytes) else v


def read_runs(out):
    runs = {}
    for path in sorted(glob.glob(os.path.join(out, "runs", "*.h5"))):
        with h5py.File(path, "r", swmr=True) as f:
            a = {k: s(f.attrs[k]) for k in f.attrs}
            ev = {k: f["metrics/eval"][k][:] for k in f["metrics/eval"]} if "metrics/eval" in f else {}
            snaps = {}
            for step in f.get("snapshots", {}):
                for layer, g in f["snapshots"][step].items():
                    snaps[(int(step), layer)] = dict(sv=g["singular_values"][:], shape=g["weight"].shape,
                                                     **{k: g.attrs[k] for k in g.attrs})
        cfg = yaml.safe_load(a["config"])
        axes = a.get("axes", "")
        axes = [axes] if isinstance(axes, str) and axes else [x for x in (axes if not isinstance(axes, str) else [])]
        runs[a["run_id"]] = dict(path=path, attrs=a, eval=ev, snaps=snaps, config=cfg, axes=[s(x) for x in axes])
    return runs


def last(run, col):
    v = run["eval"].get(col)
    return float(v[-1]) if v is not None and len(v) else float("nan")


def same_config(runs):
    """Run ids whose resolved config (without output, device, threads) another, better run repeats."""
    dup = set()
    by = {}
    for rid, r in runs.items():
        key = yaml.safe_dump({k: v for k, v in r["config"].items() if k not in ("output", "device", "threads")},
                             sort_keys=True)
        by.setdefault(key, []).append(rid)
    for ids in by.values():
        ids.sort(key=lambda i: (runs[i]["attrs"]["status"] == "completed", int(runs[i]["attrs"].get("steps", 0)),
                                str(runs[i]["attrs"].get("end_time", ""))), reverse=True)
        dup.update(ids[1:])
    return dup


def cell(v):
    """An axis attribute as report.py's CSV writes it."""
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return str(v)


def close(a, b, rel=1e-9):
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return abs(a - b) <= rel * max(1.0, abs(a), abs(b))


def num(text):
    return float(text) if text not in ("", "nan") else float("nan")


# -- checks -------------------------------------------------------------------------------------

def check(out, report, figures, omitted, min_runs):
    index = os.path.join(report, "index.html")
    if not os.path.isfile(index):
        bad(f"{index} is missing")
        return
    page = Page()
    with open(index, encoding="utf-8") as f:
        page.feed(f.read())
    runs = read_runs(out)
    if len(runs) < min_runs:
        bad(f"only {len(runs)} run files under {out}/runs, want at least {min_runs}")
    dups = same_config(runs)

    # images
    if not page.imgs:
        bad("index.html has no <img>")
    for src in page.imgs:
        if os.path.isabs(src) or "://" in src:
            bad(f"<img src={src}> is not a relative path")
            continue
        res = check_png(os.path.join(report, src))
        if isinstance(res, str):
            bad(res)
    good = [x for x in page.imgs if not isinstance(check_png(os.path.join(report, x)), str)]
    ok(f"{len(good)}/{len(page.imgs)} images: relative, PNG > 100x100, not blank")
    missing = [f for f in figures if f not in page.imgs]
    if missing:
        bad(f"expected figures missing from index.html: {missing} (have {page.imgs})")
    else:
        ok(f"expected figures present: {', '.join(figures)}")
    for sec in omitted:
        text = page.sections.get(sec)
        if text is None or "Omitted" not in text:
            bad(f"section {sec} should be there and say 'Omitted' (got {text!r})")
    if omitted:
        ok(f"omitted sections marked: {', '.join(omitted)}")

    # run table (HTML) and runs.csv
    table = next((rows for sec, rows in page.tables if sec == "runs"), None)
    if not table or table[0][:2] != ["run_id", "status"]:
        bad("no run table (run_id, status, ...) in the runs section")
        return
    head = table[0]
    html_rows = {r[0]: dict(zip(head, r)) for r in table[1:]}
    with open(os.path.join(report, "runs.csv"), newline="") as f:
        csv_rows = {r["run_id"]: r for r in csv.DictReader(f)}
    n = 0
    for rid, run in runs.items():
        h, c = html_rows.get(rid), csv_rows.get(rid)
        if h is None or c is None:
            bad(f"{rid} ({run['path']}) missing from the run table or runs.csv")
            continue
        status = run["attrs"]["status"]
        if not h["status"].startswith(status) or c["status"] != status:
            bad(f"{rid}: status {h['status']!r}/{c['status']!r}, file says {status!r}")
        for col in ("test_acc", "test_loss", "train_acc", "train_loss"):
            want = last(run, col)
            shown = "" if math.isnan(want) else f"{want:.4f}"
            if h[col] != shown:
                bad(f"{rid}: HTML {col} {h[col]!r}, last /metrics/eval row gives {shown!r}")
            if not close(want, num(c[col]), 1e-12):
                bad(f"{rid}: runs.csv {col} {c[col]}, last /metrics/eval row gives {want!r}")
        n += 1
    ok(f"{n} runs: status and final train/test loss and accuracy in the run table and runs.csv match the files")

    # ranks.csv against snapshot attributes and singular values
    path = os.path.join(report, "ranks.csv")
    if any(r["snaps"] for r in runs.values()):
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        seen = set()
        for row in rows:
            run = runs.get(row["run_id"])
            snap = run and run["snaps"].get((int(row["step"]), row["layer"]))
            if snap is None:
                bad(f"ranks.csv: {row['run_id']} {row['step']} {row['layer']} is not a snapshot in the files")
                continue
            seen.add((row["run_id"], int(row["step"]), row["layer"]))
            if int(row["numerical_rank"]) != int(snap["numerical_rank"]) or \
                    int(row["numerical_rank_sv"]) != int(snap["numerical_rank"]):
                bad(f"ranks.csv {row['run_id']} {row['step']} {row['layer']}: numerical rank {row['numerical_rank']}/"
                    f"{row['numerical_rank_sv']}, attribute {snap['numerical_rank']}")
            for k in ("effective_rank", "stable_rank"):
                if not close(float(row[k]), float(snap[k])) or not close(float(row[k + "_sv"]), float(snap[k]), 1e-8):
                    bad(f"ranks.csv {row['run_id']} {row['step']} {row['layer']}: {k} {row[k]}/{row[k + '_sv']}, "
                        f"attribute {snap[k]}")
            # and here, from the singular values directly
            sv = snap["sv"]
            p = sv / sv.sum()
            p = p[p > 0]
            if not close(float(np.exp(-(p * np.log(p)).sum())), float(snap["effective_rank"]), 1e-8):
                bad(f"{row['run_id']} {row['layer']}: effective rank from singular values differs from the attribute")
        want = {(rid, st, ly) for rid, r in runs.items() for (st, ly) in r["snaps"]}
        if want - seen:
            bad(f"ranks.csv lacks {len(want - seen)} snapshots, e.g. {sorted(want - seen)[:3]}")
        ok(f"ranks.csv: {len(rows)} rows; ranks equal the snapshot attributes and the singular values")

    # groups.csv: means over seeds of the completed, non-duplicate runs
    with open(os.path.join(report, "groups.csv"), newline="") as f:
        groups = list(csv.DictReader(f))
    axes = []
    for r in runs.values():
        axes += [a for a in r["axes"] if a != "seed" and a not in axes]
    checked = 0
    for g in groups:
        members = [rid for rid, r in runs.items() if rid not in dups
                   and all(cell(r["attrs"].get(a, "")) == g[a] for a in axes)]
        if not members:
            bad(f"groups.csv row {[g[a] for a in axes]} matches no run file")
            continue
        done = [last(runs[rid], "test_acc") for rid in members if runs[rid]["attrs"]["status"] == "completed"]
        done = [x for x in done if math.isfinite(x)]
        want = float(np.mean(done)) if done else float("nan")
        if not close(want, num(g["test_acc_mean"])) or int(g["n_completed"]) != len(done):
            bad(f"groups.csv {[g[a] for a in axes]}: test_acc_mean {g['test_acc_mean']} n {g['n_completed']}, "
                f"files give {want} over {len(done)}")
        checked += 1
    ok(f"groups.csv: {checked} points, means over completed seeds match")

    # dint90.csv
    sub = {rid: r for rid, r in runs.items() if r["config"]["param"]["kind"] == "subspace"
           and r["attrs"]["status"] == "completed" and rid not in dups}
    if sub:
        def is_dense(r):
            layers = r["config"].get("layers") or {}
            return r["config"]["param"]["kind"] == "dense" and all(
                (v or {}).get("kind", "dense") == "dense" for v in layers.values())
        with open(os.path.join(report, "dint90.csv"), newline="") as f:
            rows = list(csv.DictReader(f))
        # the context split: the sweep's axes other than param*, layers*, train.lr and seed
        ctx = [a for a in axes if not (a == "param" or a.startswith("param.") or a.startswith("layers.")
                                       or a == "train.lr")]
        contexts = {}
        for rid, r in runs.items():
            if rid in dups or r["attrs"]["status"] != "completed":
                continue
            contexts.setdefault(tuple(cell(r["attrs"].get(a, "")) for a in ctx), []).append(r)
        found = 0
        for key, members in contexts.items():
            subs = [r for r in members if r["config"]["param"]["kind"] == "subspace"]
            full = [last(r, "test_acc") for r in members if is_dense(r)]
            if not subs or not full:
                continue
            target = 0.9 * float(np.mean(full))
            projs = {}
            for r in subs:
                projs.setdefault(r["config"]["param"]["projection"], []).append(r)
            main = max(sorted(projs), key=lambda p: len(projs[p]))
            dint = None
            for d in sorted({r["config"]["param"]["omega_dim"] for r in projs[main]}):
                m = float(np.mean([last(r, "test_acc") for r in projs[main] if r["config"]["param"]["omega_dim"] == d]))
                row = [x for x in rows if x["projection"] == main and int(x["d"]) == d]
                if len(row) != 1:
                    bad(f"dint90.csv: want one row for d={d} ({main}), got {len(row)}")
                    continue
                if not close(m, float(row[0]["test_acc_mean"])):
                    bad(f"dint90.csv d={d}: mean {row[0]['test_acc_mean']}, files give {m}")
                if dint is None and m >= target:
                    dint = d
                found += 1
            got = {x["d_int90"] for x in rows if x["projection"] == main}
            if got != {str(dint) if dint is not None else ""}:
                bad(f"dint90.csv: d_int90 {got}, files give {dint} (target {target:.4f})")
            shown = [row[1] for sec, t in page.tables if sec == "dint90" for row in t if row and row[0] == "d_int90"]
            if dint is not None and str(dint) not in shown:
                bad(f"the d_int90 section shows d_int90 {shown}, files give {dint}")
            ok(f"d_int90 {dint} (target {target:.4f}); {found} rows of dint90.csv match means over seeds")
        if not found:
            bad("subspace runs but no d_int90 rows were checked (no full-space run?)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?")
    ap.add_argument("--report")
    ap.add_argument("--figures", default="")
    ap.add_argument("--omitted", default="")
    ap.add_argument("--min-runs", type=int, default=1)
    ap.add_argument("--png", nargs="+", help="only check these PNG files")
    args = ap.parse_args()
    if args.png:
        for p in args.png:
            res = check_png(p, min_colours=64, min_std=0.05)
            if isinstance(res, str):
                bad(res)
            else:
                ok(f"{p}: {res[0]}x{res[1]} PNG, {res[2]} colours, pixel std {res[3]:.3f}")
    elif args.out:
        check(args.out, args.report or os.path.join(args.out, "report"),
              [x for x in args.figures.split(",") if x], [x for x in args.omitted.split(",") if x], args.min_runs)
    else:
        ap.error("OUT or --png is required")
    if FAILED:
        print(f"check_report: {len(FAILED)} check(s) failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
