#!/usr/bin/python3
"""HTML report of an xpand sweep: figures (PNG), tables (CSV) and one self-contained index.html.

    /usr/bin/python3 analysis/report.py OUT                  # writes OUT/report/index.html
    /usr/bin/python3 analysis/report.py OUT --out DIR        # somewhere else
    /usr/bin/python3 analysis/report.py OUT --skip-bad       # leave unreadable run files out

Reads OUT/runs/*.h5 (in SWMR-read mode, so live and killed runs are fine; OUT/index.h5 is not
needed; without OUT/runs, OUT/*/runs and OUT/*/*/runs as jobs/scaling.sbatch writes them). Sections,
each only when the sweep has the data for it (see docs/ANALYSIS.md):

    runs and groups      every run (status, axes, steps, final metrics, wall time); mean +- std per point
    a. curves            train loss, test and train accuracy vs step, one figure per swept axis
    b. structure         final test accuracy vs factor, depth, rank and d (those that vary)
    c. spectra and ranks singular values per layer at the last snapshot; effective, numerical and
                         stable rank per layer (table, vs depth, vs model.activation); rank over
                         snapshot steps next to the test loss
    d. rank-r error      relative Frobenius error of the best rank-r approximation vs r, with the
                         compression mn/(r(m+n)) (as xpand analyze defines it)
    e. d_int90           mean accuracy vs subspace dimension d, the 90%-of-full-space line, d_int90
    f. cost              median step time, bytes all-reduced per step, peak memory per point
    g. scaling           speed-up and efficiency when runs differ in ranks per run

Means and stds are over the seeds of a point, over completed runs only (failed, diverged,
running, preempted and duplicate runs are listed but left out). Exit 1 with a message naming the
file or directory on bad input (missing directory, no run files, unreadable HDF5).
"""
import argparse
import csv
import html
import math
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import matplotlib  # noqa: E402
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator, NullLocator  # noqa: E402

import xpand_h5 as xh  # noqa: E402

STRUCTURE = ("factor", "depth", "rank", "d")
CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 1.5em auto; max-width: 1250px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ccd; padding-bottom: 0.2em;
margin-top: 1.8em; } h3 { margin-bottom: 0.3em; }
table { border-collapse: collapse; font-size: 0.82em; margin: 0.6em 0; }
th, td { border: 1px solid #ccd; padding: 0.2em 0.5em; text-align: right; white-space: nowrap; }
th { background: #eef0f6; } td.l, th.l { text-align: left; } tr:nth-child(even) td { background: #f8f9fc; }
img { max-width: 100%; border: 1px solid #dde; margin: 0.4em 0; }
.note { color: #666; font-style: italic; } .meta { color: #555; font-size: 0.9em; }
.st-completed { color: #1a7f37; } .st-failed, .st-diverged { color: #c0392b; font-weight: bold; }
.st-running, .st-preempted { color: #b7791f; } .scroll { overflow-x: auto; }
nav a { margin-right: 1em; }
"""


def warn(msg):
    print(f"report: {msg}", file=sys.stderr)


# -- formatting ---------------------------------------------------------------------------------

def fmt(x, prec=4):
    """A number for the tables: NaN/None -> '', ints as ints."""
    if x is None:
        return ""
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return str(int(x))
    try:
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(x):
        return "" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return f"{x:.{prec}f}"


def fmt_pm(mean, std, prec=4):
    if mean is None or not np.isfinite(mean):
        return ""
    return f"{mean:.{prec}f} ± {std:.{prec}f}" if np.isfinite(std) else f"{mean:.{prec}f}"


def fmt_g(x, digits=4):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return ""
    return f"{x:.{digits}g}"


def full(x):
    """A number for the CSV files: full precision."""
    if x is None:
        return ""
    if isinstance(x, (float, np.floating)):
        return repr(float(x)) if math.isfinite(x) else ("nan" if math.isnan(x) else repr(float(x)))
    if isinstance(x, np.integer):
        return str(int(x))
    return str(x)


def short_key(key):
    if key.startswith("layers."):
        return key[len("layers."):]
    return key.rsplit(".", 1)[-1]


def value_label(key, value):
    v = xh.format_value(value)
    if key == "param":
        return v
    if key.startswith("layers."):
        return f"{short_key(key)}: {v}"
    return f"{short_key(key)}={v}"


def compression(m, n, r):
    """Scalars of an m x n matrix per scalar of its rank-r factors, mn / (r(m+n)): the one definition
    of xpand analyze (src/param/analysis.cpp) and this report."""
    return m * n / (r * (m + n))


def point_label(point):
    return ", ".join(value_label(k, v) for k, v in point) if point else "all runs"


def esc(s):
    return html.escape(str(s))


def table_html(header, rows, left=(0,)):
    """rows: lists of cells; a cell is text, or (text, css class)."""
    out = ["<div class='scroll'><table><tr>"]
    out += [f"<th class='{'l' if i in left else ''}'>{esc(h)}</th>" for i, h in enumerate(header)]
    out.append("</tr>")
    for row in rows:
        out.append("<tr>")
        for i, cell in enumerate(row):
            cls = "l" if i in left else ""
            if isinstance(cell, tuple):
                cell, extra = cell
                cls = f"{cls} {extra}".strip()
            out.append(f"<td class='{cls}'>{esc(cell)}</td>")
        out.append("</tr>")
    out.append("</table></div>")
    return "".join(out)


# -- the report ---------------------------------------------------------------------------------

class Report:
    def __init__(self, src, out, runs, skipped, threshold):
        self.src = src
        self.out = out
        self.all_runs = runs
        self.runs = [r for r in runs if r.duplicate_of is None]   # duplicates only in the run table
        self.usable = [r for r in self.runs if r.usable]
        self.skipped = skipped
        self.threshold = threshold
        self.sections = []
        self.figures = []
        self.tables = []
        self.axes = xh.axis_keys(self.runs, seed=False)
        self.points = sorted({r.point for r in self.runs}, key=xh.sort_key)
        self.point_colour = self._colours(self.points)
        self.context = xh.context_axes(self.runs)
        self.plt = plt
        plt.rcParams.update({"figure.dpi": 100, "font.size": 10, "axes.grid": True, "grid.alpha": 0.3,
                             "legend.fontsize": 8, "axes.titlesize": 10})

    # helpers --------------------------------------------------------------------------------

    def _colours(self, values):
        n = len(values)
        if n <= 10:
            cmap = matplotlib.colormaps["tab10"]
            return {v: cmap(i) for i, v in enumerate(values)}
        if n <= 20:
            cmap = matplotlib.colormaps["tab20"]
            return {v: cmap(i) for i, v in enumerate(values)}
        cmap = matplotlib.colormaps["viridis"]
        return {v: cmap(0.95 * i / (n - 1)) for i, v in enumerate(values)}

    def value_colours(self, values):
        numeric = all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                      for v in values if v is not None)
        if numeric and len(values) > 2:
            cmap = matplotlib.colormaps["viridis"]
            return {v: cmap(0.9 * i / (len(values) - 1)) for i, v in enumerate(values)}
        return self._colours(values)

    def save(self, fig, name, caption):
        path = os.path.join(self.out, name)
        fig.savefig(path, dpi=100)
        self.plt.close(fig)
        self.figures.append(name)
        return f"<figure><img src='{esc(name)}' alt='{esc(caption)}'><figcaption class='note'>{esc(caption)}</figcaption></figure>"

    def write_csv(self, name, header, rows):
        with open(os.path.join(self.out, name), "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(header)
            for row in rows:
                w.writerow([full(x) for x in row])
        self.tables.append(name)
        return f"<p class='meta'>Table: <a href='{esc(name)}'>{esc(name)}</a></p>"

    def section(self, sid, title, body):
        self.sections.append((sid, title, body))

    def omitted(self, sid, title, why):
        self.sections.append((sid, title, f"<p class='note'>Omitted: {esc(why)}.</p>"))

    @staticmethod
    def legend_cols(labels):
        """Columns of a legend below a 13-inch figure, from its longest label (8 pt)."""
        if not labels:
            return 1
        entry = 6.2 * max(len(str(x)) for x in labels) + 70
        return max(1, min(len(labels), int(1250 // entry)))

    def legend_rows(self, labels):
        return (len(labels) + self.legend_cols(labels) - 1) // self.legend_cols(labels)

    def legend_below(self, fig, handles, labels):
        if handles:
            fig.legend(handles, labels, loc="lower center", ncol=self.legend_cols(labels), frameon=False, fontsize=8)

    def representative_runs(self, point):
        rs = [r for r in self.usable if r.point == point]
        return rs or [r for r in self.runs if r.point == point]

    def context_groups(self, runs):
        """Runs split by the values of the context axes: [(label, runs)]."""
        return [(point_label(k) if k else "", rs) for k, rs in xh.split_context(runs, self.context)]

    # sections --------------------------------------------------------------------------------

    def summary(self):
        keys = xh.axis_keys(self.all_runs, seed=True)
        header = ["run_id", "status"] + keys + ["steps", "train_loss", "train_acc", "test_loss", "test_acc", "wall_s"]
        rows, csv_rows = [], []
        for r in self.all_runs:
            status = r.status if r.duplicate_of is None else f"{r.status} (duplicate of {r.duplicate_of})"
            fin = [xh.final(r, m) for m in xh.EVAL_METRICS]
            steps = f"{r.steps}/{r.total_steps}" if r.total_steps else str(r.steps)
            rows.append([r.run_id, (status, f"st-{r.status}")] + [xh.format_value(r.axes.get(k, "")) for k in keys]
                        + [steps] + [fmt(x) for x in fin] + [fmt(r.wall_seconds, 1)])
            csv_rows.append([r.run_id, r.status, r.duplicate_of or "", r.error] + [r.axes.get(k, "") for k in keys]
                            + [r.features[k] for k in ("kind", "factor", "depth", "rank", "d", "D")]
                            + [r.steps, r.total_steps] + fin + [r.wall_seconds, r.path])
        link = self.write_csv("runs.csv", ["run_id", "status", "duplicate_of", "error"] + keys
                              + ["kind", "factor", "depth", "rank", "d", "D", "steps", "total_steps"]
                              + list(xh.EVAL_METRICS) + ["wall_seconds", "path"], csv_rows)
        errors = [r for r in self.all_runs if r.error]
        body = table_html(header, rows, left=(0, 1))
        if errors:
            body += "<p><b>Errors:</b></p><ul>" + "".join(f"<li><code>{esc(r.run_id)}</code>: {esc(r.error)}</li>"
                                                           for r in errors) + "</ul>"
        self.section("runs", f"Runs ({len(self.all_runs)})", body + link)

        gkeys = [k for k in xh.axis_keys(self.runs, seed=False)]
        feats = [f for f in ("kind", "factor", "depth", "rank", "d") if len({r.value(f) for r in self.runs}) > 1]
        rows, csv_rows = [], []
        for g in xh.group(self.runs, gkeys):
            rs = g["runs"]
            r0 = rs[0]
            rows.append([point_label(tuple((k, g[k]) for k in gkeys))] + [fmt(r0.value(f)) for f in feats]
                        + [f"{g['n']}/{g['n_runs']}"]
                        + [fmt_pm(g[m + "_mean"], g[m + "_std"]) for m in xh.EVAL_METRICS])
            csv_rows.append([g[k] for k in gkeys] + [r0.value(f) for f in feats] + [g["n"], g["n_runs"]]
                            + sum(([g[m + "_mean"], g[m + "_std"]] for m in xh.EVAL_METRICS), []))
        link = self.write_csv("groups.csv", gkeys + feats + ["n_completed", "n_runs"]
                              + sum(([m + "_mean", m + "_std"] for m in xh.EVAL_METRICS), []), csv_rows)
        self.section("groups", "Groups: mean ± std over seeds",
                     "<p class='meta'>n = completed runs / runs of the point; only completed runs enter the "
                     "means.</p>" + table_html(["point"] + feats + ["n"] + [m for m in xh.EVAL_METRICS], rows) + link)

    def curves(self):
        runs = [r for r in self.runs if len(r.train.get("step", [])) or len(r.eval.get("step", []))]
        if not runs:
            return self.omitted("curves", "a. Training curves", "no run has metric rows")
        keys = [k for k in self.axes if len({r.axes.get(k) for r in runs}) > 1]
        if not keys:
            keys = [None]
        body = []
        for key in keys:
            values = sorted({r.axes.get(key) if key else r.point for r in runs}, key=xh.sort_key)
            colours = self.value_colours(values) if key else self.point_colour
            plt = self.plt
            nleg = self.legend_rows([value_label(key, v) if key else point_label(v) for v in values])
            fig, axs = plt.subplots(1, 3, figsize=(13, 3.9 + 0.22 * nleg))
            for r in runs:
                v = r.axes.get(key) if key else r.point
                c = colours[v]
                ls = "-" if r.status == "completed" else "--"
                t = r.train
                if len(t.get("loss", [])):
                    x, y = smooth(t["step"], t["loss"])
                    axs[0].plot(x, y, color=c, lw=1, ls=ls, alpha=0.85)
                e = r.eval
                if len(e.get("step", [])):
                    mk = "o" if len(e["step"]) <= 12 else None
                    axs[1].plot(e["step"], e["test_acc"], color=c, lw=1.2, ls=ls, marker=mk, ms=3)
                    axs[2].plot(e["step"], e["train_acc"], color=c, lw=1.2, ls=ls, marker=mk, ms=3)
            set_loss_scale(axs[0], [r.train.get("loss", np.array([])) for r in runs])
            axs[0].set_title("train loss (moving average over steps)")
            axs[1].set_title("test accuracy")
            axs[2].set_title("train accuracy")
            for ax in axs:
                ax.set_xlabel("step")
            handles = [plt.Line2D([], [], color=colours[v], lw=2) for v in values]
            labels = [value_label(key, v) if key else point_label(v) for v in values]
            self.legend_below(fig, handles, labels)
            fig.tight_layout(rect=(0, legend_space(fig, nleg), 1, 1))
            name = f"curves_{slug(key or 'point')}.png"
            title = f"coloured by {key}" if key else "coloured by point"
            body.append(f"<h3>{esc(title)}</h3>" + self.save(
                fig, name, f"Loss and accuracy vs step, {title}; seeds of a point share a colour; dashed: runs "
                           "that did not complete."))
        self.section("curves", "a. Training curves", "".join(body))

    # For each structural feature: which runs it applies to, and what splits them into series.
    FEATURE_RUNS = {"factor": ("factor", ["depth"]), "depth": ("factor", ["factor"]), "rank": ("rank", ["kind"]),
                    "d": ("d", ["projection"])}

    def feature_runs(self, f, runs):
        """The runs a feature applies to (factor, depth: expanded; rank: lowrank/lora; d: subspace) and
        the keys splitting them into series (the other feature and the context axes that vary)."""
        need, split = self.FEATURE_RUNS.get(f, (None, []))
        rs = [r for r in runs if need is None or r.value(need) is not None]
        keys = [k for k in split + self.context if len({r.value(k) for r in rs}) > 1]
        return rs, keys

    def structure_features(self):
        out = []
        for f in STRUCTURE:
            rs, _ = self.feature_runs(f, self.usable)
            if len({r.value(f) for r in rs}) > 1:
                out.append(f)
        return out

    def series(self, runs, keys):
        """[(label, runs)] split by the values of keys."""
        out = []
        for g in xh.group(runs, keys, metrics=()):
            lab = ", ".join(value_label(k, g[k]) for k in keys if g[k] is not None)
            out.append((lab, g["runs"]))
        return out

    def structure(self):
        feats = self.structure_features()
        if not feats:
            return self.omitted("structure", "b. Final accuracy vs structure",
                                "factor, depth, rank and d do not vary over the completed runs")
        plt = self.plt
        fig, axs = plt.subplots(1, len(feats), figsize=(min(4.6 * len(feats), 13) + 1, 4.2), squeeze=False)
        csv_rows, body = [], []
        dense = [r for r in self.usable if xh.is_full_space(r)]
        for ax, f in zip(axs[0], feats):
            rs, keys = self.feature_runs(f, self.usable)
            for i, (lab, members) in enumerate(self.series(rs, keys)):
                lab = lab or members[0].kind
                rows = xh.group(members, [f], metrics=("test_acc",))
                ax.errorbar([row[f] for row in rows], [row["test_acc_mean"] for row in rows],
                            yerr=[row["test_acc_std"] for row in rows], marker="o", capsize=3, color=f"C{i % 10}",
                            label=lab)
                for row in rows:
                    csv_rows.append([f, row[f], lab, row["test_acc_mean"], row["test_acc_std"], row["n"]])
            if dense:
                dm, ds, dn = xh.mean_std([xh.final(r, "test_acc") for r in dense])
                ax.axhline(dm, color="k", ls="--", lw=1, label=f"dense {dm:.4f}")
                ax.axhspan(dm - ds, dm + ds, color="k", alpha=0.08)
                csv_rows.append([f, "dense", "dense", dm, ds, dn])
            xs = [r.value(f) for r in rs]
            if xs and min(xs) > 0 and max(xs) / min(xs) >= 10:
                ax.set_xscale("log")
            if xs and all(float(x).is_integer() for x in xs):  # factor, depth, rank, d: ticks at the values run
                ticks = sorted(set(int(x) for x in xs))
                ax.set_xticks(ticks)
                ax.set_xticklabels([str(t) for t in ticks])
                ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xlabel(f)
            ax.set_ylabel("final test accuracy")
            ax.set_title(f"test accuracy vs {f}")
            ax.legend(fontsize=7)
        fig.tight_layout()
        body.append(self.save(fig, "structure.png", "Final test accuracy (mean ± std over seeds) vs each structural "
                                                    "feature that varies; dashed: the dense network (band: ± std)."))
        body.append(table_html(["feature", "value", "series", "test_acc mean", "std", "n"],
                               [[r[0], fmt(r[1]), r[2], fmt(r[3]), fmt(r[4]), r[5]] for r in csv_rows], left=(0, 2)))
        body.append(self.write_csv("structure.csv", ["feature", "value", "series", "test_acc_mean", "test_acc_std", "n"],
                                   csv_rows))
        self.section("structure", "b. Final accuracy vs structure", "".join(body))

    def layers(self):
        names = []
        for r in self.runs:
            for step in r.snapshots.values():
                for layer in step:
                    if layer not in names:
                        names.append(layer)
        return names

    def spectra(self):
        layers = self.layers()
        if not layers:
            self.omitted("spectra", "c. Spectra and ranks", "no snapshots (output.snapshot_every, or runs without a final snapshot)")
            self.omitted("rankr", "d. Rank-r approximation", "no snapshots")
            return
        plt = self.plt
        body = []
        ncol = min(4, len(layers))
        nrow = (len(layers) + ncol - 1) // ncol
        nleg = self.legend_rows([point_label(p) for p in self.points])
        fig, axs = plt.subplots(nrow, ncol, figsize=(13, 3.3 * nrow + 0.25 * nleg), squeeze=False)
        self.sv = {}  # (point, layer) -> mean spectrum over seeds, shape, n
        for i, layer in enumerate(layers):
            ax = axs[i // ncol][i % ncol]
            for p in self.points:
                specs, shape = [], None
                for r in self.representative_runs(p):
                    s = r.snapshot(layer)
                    if s is not None and s.singular_values is not None and len(s.singular_values):
                        specs.append(s.singular_values)
                        shape = s.matrix_shape
                if not specs:
                    continue
                k = min(len(s) for s in specs)
                mean = np.mean([s[:k] for s in specs], axis=0)
                self.sv[(p, layer)] = (mean, shape, len(specs))
                ax.plot(np.arange(1, k + 1), mean, color=self.point_colour[p], lw=1.3)
            ax.set_yscale("log")
            ax.set_title(f"{layer}" + (f"  ({shape[0]}×{shape[1]})" if shape else ""))
            ax.set_xlabel("index i")
            ax.set_ylabel("singular value σ_i")
        for j in range(len(layers), nrow * ncol):
            axs[j // ncol][j % ncol].axis("off")
        self.legend_below(fig, [plt.Line2D([], [], color=self.point_colour[p], lw=2) for p in self.points],
                          [point_label(p) for p in self.points])
        fig.tight_layout(rect=(0, legend_space(fig, nleg), 1, 1))
        body.append(self.save(fig, "spectra.png", "Singular values of each layer's collapsed weight at the last snapshot, "
                                                  "mean over the seeds of a point."))

        # rank table: every run, every layer, every snapshot step (attributes and recomputed)
        csv_rows = []
        for r in self.all_runs:
            dtype = r.config.get("dtype", "float32")
            for step in r.snapshot_steps:
                for layer, s in r.snapshots[step].items():
                    sv = s.singular_values
                    shape = s.matrix_shape or (0, 0)
                    calc = xh.spectrum_ranks(sv, shape, dtype) if sv is not None else {}
                    csv_rows.append([r.run_id, r.status, r.duplicate_of or "", point_label(r.point), r.seed, layer, step,
                                     shape[0], shape[1],
                                     s.numerical_rank, s.effective_rank, s.stable_rank,
                                     calc.get("numerical_rank"), calc.get("effective_rank"), calc.get("stable_rank")])
        link = self.write_csv("ranks.csv", ["run_id", "status", "duplicate_of", "point", "seed", "layer", "step", "m", "n",
                                            "numerical_rank", "effective_rank", "stable_rank", "numerical_rank_sv",
                                            "effective_rank_sv", "stable_rank_sv"], csv_rows)
        rows, mean_rows = [], []
        for p in self.points:
            rs = self.representative_runs(p)
            for layer in layers:
                snaps = [r.snapshot(layer) for r in rs]
                snaps = [s for s in snaps if s is not None]
                if not snaps:
                    continue
                eff = xh.mean_std([s.effective_rank for s in snaps])
                num = xh.mean_std([s.numerical_rank for s in snaps])
                stab = xh.mean_std([s.stable_rank for s in snaps])
                shape = snaps[0].matrix_shape or (0, 0)
                rows.append([point_label(p), layer, f"{shape[0]}×{shape[1]}", fmt_pm(eff[0], eff[1], 2),
                             fmt_pm(num[0], num[1], 1), fmt_pm(stab[0], stab[1], 2), min(shape), eff[2]])
                mean_rows.append([point_label(p), layer, shape[0], shape[1], eff[0], eff[1], num[0], num[1],
                                  stab[0], stab[1], eff[2]])
        body.append("<h3>Ranks per layer at the last snapshot</h3>")
        body.append(table_html(["point", "layer", "shape", "effective rank", "numerical rank", "stable rank",
                                "min(m,n)", "runs"], rows, left=(0, 1)))
        body.append(self.write_csv("ranks_by_point.csv", ["point", "layer", "m", "n", "effective_rank_mean",
                                                          "effective_rank_std", "numerical_rank_mean", "numerical_rank_std",
                                                          "stable_rank_mean", "stable_rank_std", "runs"], mean_rows))
        body.append(link.replace("Table:", "Every run, layer and snapshot (attributes and recomputed from σ):"))

        rs = [r for r in self.usable if r.snapshots]
        for key in ("depth", "model.activation"):
            if key == "depth":
                vals = {r.depth for r in self.feature_runs("depth", rs)[0]}
            else:
                vals = {r.value(key) for r in rs}
            if len(vals) < 2:
                body.append(f"<p class='note'>Rank vs {esc(key)}: omitted ({esc(key)} does not vary over the "
                            "completed runs with snapshots).</p>")
                continue
            body.append(f"<h3>Effective rank vs {esc(key)}</h3>" + self.rank_vs(rs, key, layers))
        body.append(self.rank_over_steps(layers))
        self.section("spectra", "c. Spectra and ranks", "".join(body))
        self.rank_r(layers)

    def rank_vs(self, rs, key, layers):
        """Effective rank per layer vs depth (expanded runs, one series per factor, dense as a line) or
        vs a categorical axis (one series per point without that axis)."""
        plt = self.plt
        dense = []
        if key == "depth":
            dense = [r for r in rs if xh.is_full_space(r)]
            members, keys = self.feature_runs("depth", rs)
            series = self.series(members, keys)
        else:
            groups = {}
            for r in rs:
                groups.setdefault(tuple((k, v) for k, v in r.point if k != key), []).append(r)
            series = [(point_label(p), groups[p]) for p in sorted(groups, key=xh.sort_key)]
            compared = [(lab, m) for lab, m in series if len({r.value(key) for r in m}) > 1]
            series = compared or series  # points run with several values of the key, when there are any
        vals = sorted({r.value(key) for _, m in series for r in m}, key=xh.sort_key)
        categorical = key != "depth"
        pos = {v: i for i, v in enumerate(vals)}
        ncol = min(4, len(layers))
        nrow = (len(layers) + ncol - 1) // ncol
        nleg = self.legend_rows([lab or m[0].kind for lab, m in series] + (["dense"] if dense else []))
        fig, axs = plt.subplots(nrow, ncol, figsize=(13, 3.4 * nrow + 0.25 * nleg), squeeze=False)
        csv_rows, handles, labels = [], [], []
        for i, layer in enumerate(layers):
            ax = axs[i // ncol][i % ncol]
            for j, (lab, members) in enumerate(series):
                lab = lab or members[0].kind
                xs, ms, ss = [], [], []
                for v in vals:
                    snaps = [r.snapshot(layer) for r in members if r.value(key) == v]
                    m, s, n = xh.mean_std([x.effective_rank for x in snaps if x is not None])
                    if n:
                        xs.append(pos[v] + 0.08 * (j - (len(series) - 1) / 2) if categorical else v)
                        ms.append(m)
                        ss.append(s)
                        csv_rows.append([key, v, lab, layer, m, s, n])
                if xs:
                    h = ax.errorbar(xs, ms, yerr=ss, marker="o", capsize=3, color=f"C{j % 10}",
                                    ls="none" if categorical and len(xs) < 2 else "-")
                    if i == 0:
                        handles.append(h)
                        labels.append(lab)
            if dense:
                m, s, n = xh.mean_std([x.effective_rank for x in (r.snapshot(layer) for r in dense) if x is not None])
                if n:
                    h = ax.axhline(m, color="k", ls="--", lw=1)
                    csv_rows.append([key, "dense", "dense", layer, m, s, n])
                    if i == 0:
                        handles.append(h)
                        labels.append("dense")
            if categorical:
                ax.set_xticks(range(len(vals)))
                ax.set_xticklabels([str(v) for v in vals])
            else:
                ax.set_xticks(vals)
            ax.set_title(layer)
            ax.set_xlabel(key)
            ax.set_ylabel("effective rank")
        for j in range(len(layers), nrow * ncol):
            axs[j // ncol][j % ncol].axis("off")
        self.legend_below(fig, handles, labels)
        fig.tight_layout(rect=(0, legend_space(fig, nleg), 1, 1))
        name = f"rank_vs_{slug(key)}.png"
        html_ = self.save(fig, name, f"Effective rank per layer at the last snapshot vs {key} (mean ± std over seeds).")
        html_ += self.write_csv(f"rank_vs_{slug(key)}.csv", ["key", "value", "series", "layer", "effective_rank_mean",
                                                              "effective_rank_std", "n"], csv_rows)
        return html_

    def rank_over_steps(self, layers):
        rs = [r for r in self.runs if len(r.snapshot_steps) >= 2]
        if not rs:
            return "<p class='note'>Rank over snapshot steps: omitted (no run has two or more snapshots).</p>"
        plt = self.plt
        n = 1 + len(layers)
        ncol = min(4, n)
        nrow = (n + ncol - 1) // ncol
        points = [p for p in self.points if any(r.point == p for r in rs)]
        nleg = self.legend_rows([point_label(p) for p in points])
        fig, axs = plt.subplots(nrow, ncol, figsize=(13, 3.3 * nrow + 0.25 * nleg), squeeze=False)
        ax0 = axs[0][0]
        for r in rs:
            c = self.point_colour[r.point]
            e = r.eval
            if len(e.get("step", [])):
                ax0.plot(e["step"], e["test_loss"], color=c, lw=1.3)
                ax0.plot(e["step"], e["train_loss"], color=c, lw=0.9, ls=":")
        set_loss_scale(ax0, [r.eval.get("test_loss", np.array([])) for r in rs])
        ax0.set_title("test loss (solid), train loss (dotted)")
        ax0.set_xlabel("step")
        for i, layer in enumerate(layers):
            ax = axs[(i + 1) // ncol][(i + 1) % ncol]
            for r in rs:
                st = [s for s in r.snapshot_steps if layer in r.snapshots[s]]
                ax.plot(st, [r.snapshots[s][layer].effective_rank for s in st], color=self.point_colour[r.point],
                        lw=1.2, marker="o", ms=2.5)
            ax.set_title(f"{layer}: effective rank")
            ax.set_xlabel("step")
        for j in range(n, nrow * ncol):
            axs[j // ncol][j % ncol].axis("off")
        self.legend_below(fig, [plt.Line2D([], [], color=self.point_colour[p], lw=2) for p in points],
                          [point_label(p) for p in points])
        fig.tight_layout(rect=(0, legend_space(fig, nleg), 1, 1))
        return "<h3>Rank over training</h3>" + self.save(
            fig, "rank_over_steps.png", "Effective rank of each layer at every snapshot, next to the test and train "
                                        "loss: a rank that keeps changing after the test loss turns up marks overfitting.")

    def rank_r(self, layers):
        if not self.sv:
            return self.omitted("rankr", "d. Rank-r approximation", "no singular values in the snapshots")
        plt = self.plt
        ncol = min(4, len(layers))
        nrow = (len(layers) + ncol - 1) // ncol
        nleg = self.legend_rows([point_label(p) for p in self.points])
        fig, axs = plt.subplots(nrow, ncol, figsize=(13, 3.6 * nrow + 0.25 * nleg), squeeze=False)
        csv_rows, body = [], []
        tables = []
        for i, layer in enumerate(layers):
            ax = axs[i // ncol][i % ncol]
            shape = None
            errs = {}
            for p in self.points:
                if (p, layer) not in self.sv:
                    continue
                # mean over seeds of each run's error curve
                curves = []
                for r in self.representative_runs(p):
                    s = r.singular_values(layer)
                    if s is not None and len(s):
                        curves.append(xh.rank_r_error(s))
                        shape = r.snapshot(layer).matrix_shape
                k = min(len(c) for c in curves)
                err = np.mean([c[:k] for c in curves], axis=0)
                errs[p] = err
                rr = np.arange(1, k)
                ax.plot(rr, err[1:k], color=self.point_colour[p], lw=1.3)
                m, n = shape if shape else (0, 0)
                for r_ in range(1, k):
                    csv_rows.append([point_label(p), layer, m, n, r_, compression(m, n, r_) if m and n else None,
                                     err[r_], len(curves)])
            ax.set_title(layer + (f"  ({shape[0]}×{shape[1]})" if shape else ""))
            ax.set_xlabel("rank r")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel("‖W − W_r‖_F / ‖W‖_F")
            ax.set_ylim(0, 1.02)
            if shape:
                m, n = shape
                c = m * n / (m + n)  # compression(m, n, r) = c / r, its own inverse up to c
                sec = ax.secondary_xaxis("top", functions=(lambda r, c=c: c / np.maximum(r, 1e-9),
                                                           lambda q, c=c: c / np.maximum(q, 1e-9)))
                sec.set_xlabel("compression mn/(r(m+n))", fontsize=8)
                sec.tick_params(labelsize=7)
                kmax = min(m, n)
                grid = sorted({min(kmax, 2 ** j) for j in range(0, int(math.log2(kmax)) + 1)} | {kmax})
                tables.append((layer, m, n, grid, errs))
        for j in range(len(layers), nrow * ncol):
            axs[j // ncol][j % ncol].axis("off")
        self.legend_below(fig, [plt.Line2D([], [], color=self.point_colour[p], lw=2) for p in self.points],
                          [point_label(p) for p in self.points])
        fig.tight_layout(rect=(0, legend_space(fig, nleg), 1, 1))
        body.append(self.save(fig, "rank_r_error.png", "Relative Frobenius error of the best rank-r approximation, "
                                                       "sqrt(Σ_{i>r} σ_i² / Σ σ_i²), at the last snapshot (mean over seeds); "
                                                       "top axis: the compression mn/(r(m+n)), the matrix's size over "
                                                       "its rank-r factors' (xpand analyze's definition)."))
        for layer, m, n, grid, errs in tables:
            header = [f"{layer} ({m}×{n}): r"] + [str(g) for g in grid]
            rows = [["compression mn/(r(m+n))"] + [fmt(compression(m, n, g), 3) for g in grid]]
            for p, err in errs.items():
                rows.append([point_label(p)] + [fmt(err[g], 4) if g < len(err) else "" for g in grid])
            body.append(table_html(header, rows))
        body.append(self.write_csv("rank_r_error.csv", ["point", "layer", "m", "n", "r", "compression", "error", "runs"],
                                   csv_rows))
        self.section("rankr", "d. Rank-r approximation", "".join(body))

    def dint90(self):
        sub = [r for r in self.usable if r.d is not None]
        if not sub:
            return self.omitted("dint90", "e. Intrinsic dimension (d_int90)", "no completed subspace runs")
        plt = self.plt
        body, csv_rows = [], []
        groups = [(lab, rs) for lab, rs in self.context_groups(self.usable) if any(r.d is not None for r in rs)]
        fig, axs = plt.subplots(1, len(groups), figsize=(min(13, 8 * len(groups)), 4.8), squeeze=False)
        for ax, (lab, rs) in zip(axs[0], groups):
            try:
                res = xh.d_int90(rs, self.threshold)
            except xh.XpandError as e:
                res = None
                note = str(e)
            if res is None:  # no full-space run: the curve alone
                rows = xh.group([r for r in rs if r.d is not None], ["d"], metrics=("test_acc",))
                x = [row["d"] for row in rows]
                ax.errorbar(x, [row["test_acc_mean"] for row in rows], yerr=[row["test_acc_std"] for row in rows],
                            marker="o", capsize=3)
                body.append(f"<p class='note'>{esc(lab)}: {esc(note)}; d_int90 not computed.</p>")
                for row in rows:
                    csv_rows.append([lab, "", row["d"], row["test_acc_mean"], row["test_acc_std"], row["n"], None, None, None])
            else:
                t = res["table"]
                x = [row["d"] for row in t]
                ax.errorbar(x, [row["mean"] for row in t], yerr=[row["std"] for row in t], marker="o", capsize=3,
                            color="C0", label=f"subspace ({res['projection']})")
                for k, (proj, ot) in enumerate(res["others"].items()):
                    ax.errorbar([row["d"] for row in ot], [row["mean"] for row in ot], yerr=[row["std"] for row in ot],
                                marker="s", ls="none", capsize=3, color=f"C{k + 2}", label=f"subspace ({proj})")
                ax.axhline(res["full_mean"], color="k", lw=1.2, label=f"full space {res['full_mean']:.4f}")
                ax.axhline(res["target"], color="C3", ls="--", lw=1.2,
                           label=f"{100 * self.threshold:.0f}% of full = {res['target']:.4f}")
                if res["d_int90"]:
                    ax.axvline(res["d_int90"], color="C3", ls=":", lw=1.2)
                    ax.annotate(f"d_int90 = {res['d_int90']}", (res["d_int90"], 0.03), xycoords=("data", "axes fraction"),
                                textcoords="offset points", xytext=(-5, 0), ha="right", color="C3", fontsize=9)
                D = res["D"]
                summary = [("full-space test accuracy", f"{fmt_pm(res['full_mean'], res['full_std'])} (n = {res['full_n']})"),
                           (f"target ({100 * self.threshold:.0f}%)", fmt(res["target"])),
                           ("d_int90", str(res["d_int90"]) if res["d_int90"] else f"not reached (largest d = {max(x)})"),
                           ("D (dense parameters)", str(D) if D else "unknown"),
                           ("compression D / d_int90", f"{res['ratio']:.1f}" if res["ratio"] else "")]
                body.append((f"<h3>{esc(lab)}</h3>" if lab else "") + table_html(["", ""], [list(s) for s in summary]))
                rows = []
                for proj, tt in [(res["projection"], t)] + list(res["others"].items()):
                    for row in tt:
                        ratio = D / row["d"] if D else None
                        mark = "✓" if np.isfinite(row["mean"]) and row["mean"] >= res["target"] else ""
                        rows.append([row["d"], proj, fmt(row["mean"]), fmt(row["std"]), row["n"], fmt(row["fraction"], 3),
                                     fmt(ratio, 1), mark])
                        csv_rows.append([lab, proj, row["d"], row["mean"], row["std"], row["n"], row["fraction"], ratio,
                                         res["d_int90"] if proj == res["projection"] else None])
                body.append(table_html(["d", "projection", "test_acc mean", "std", "n", "fraction of full", "D/d",
                                        "≥ target"], rows))
                ax.legend(fontsize=8, loc="best")
            ax.set_xscale("log")
            ax.set_xlabel("subspace dimension d")
            ax.set_ylabel("final test accuracy")
            ax.set_title(("d_int90: " + lab) if lab else "d_int90")
        fig.tight_layout()
        body.insert(0, self.save(fig, "dint90.png", "Mean test accuracy over seeds (± std) vs the subspace dimension d; "
                                                    "d_int90 is the smallest d whose mean reaches the dashed line."))
        body.append(self.write_csv("dint90.csv", ["context", "projection", "d", "test_acc_mean", "test_acc_std", "n",
                                                  "fraction", "D_over_d", "d_int90"], csv_rows))
        self.section("dint90", "e. Intrinsic dimension (d_int90)", "".join(body))

    def cost(self):
        rows = []
        for p in self.points:
            rs = [r for r in self.representative_runs(p) if len(r.train.get("time_step", [])) >= 2]
            if not rs:
                continue
            ms = [step_stats(r) for r in rs]
            rows.append((p, {k: xh.mean_std([m[k] for m in ms]) for k in ms[0]}, len(rs)))
        if not rows:
            return self.omitted("cost", "f. Cost: step time, communication, memory", "no run has train rows")
        plt = self.plt
        labels = [point_label(p) for p, _, _ in rows]
        h = max(3.0, 0.32 * len(rows) + 1.3)
        fig, axs = plt.subplots(1, 3, figsize=(13, h), sharey=True)
        y = np.arange(len(rows))
        for ax, key, title, scale in ((axs[0], "step_s", "median step time (ms)", 1e3),
                                      (axs[1], "comm_bytes", "all-reduced per step (MB)", 1e-6),
                                      (axs[2], "mem_peak", "peak memory (MiB)", 1 / 2 ** 20)):
            vals = [s[key][0] * scale for _, s, _ in rows]
            errs = [s[key][1] * scale for _, s, _ in rows]
            ax.set_title(title)
            if any(v > 0 for v in vals):
                ax.barh(y, vals, xerr=errs, color=[self.point_colour[p] for p, _, _ in rows], capsize=2)
            else:
                ax.text(0.5, 0.5, "none (one rank per run)" if key == "comm_bytes" else "not recorded",
                        transform=ax.transAxes, ha="center", va="center", color="#666")
                ax.set_xticks([])
        axs[0].invert_yaxis()
        axs[0].set_yticks(y)
        axs[0].set_yticklabels(labels, fontsize=8)
        fig.tight_layout()
        body = self.save(fig, "cost.png", "Per point, mean over seeds: median time_step after the first 10% of rows, "
                                          "median comm_bytes per step, largest mem_peak.")
        trows, crows = [], []
        for p, s, n in rows:
            trows.append([point_label(p), fmt(1e3 * s["step_s"][0], 2), fmt(s["samples_s"][0], 0),
                          fmt(s["comm_bytes"][0] * 1e-6, 3), fmt(s["mem_peak"][0] / 2 ** 20, 1), n])
            crows.append([point_label(p), s["step_s"][0], s["step_s"][1], s["samples_s"][0], s["comm_bytes"][0],
                          s["mem_peak"][0], n])
        body += table_html(["point", "ms/step", "samples/s", "MB/step all-reduced", "peak MiB", "runs"], trows)
        body += self.write_csv("cost.csv", ["point", "step_s", "step_s_std", "samples_per_s", "comm_bytes_per_step",
                                            "mem_peak_bytes", "runs"], crows)
        self.section("cost", "f. Cost: step time, communication, memory", body)

    def scaling(self):
        ranks = {r.ranks_per_run for r in self.runs}
        if len(ranks) < 2:
            return self.omitted("scaling", "g. Scaling efficiency",
                                f"every run trained on {ranks.pop() if ranks else '?'} rank(s) (ranks_per_run does not vary)")
        # one series per point without the directory and rank-related axes
        def base(r):
            return tuple((k, v) for k, v in r.point if k not in ("dir",))
        series = {}
        for r in self.runs:
            if len(r.train.get("time_step", [])) >= 2:
                mode = "weak" if "weak" in r.subdir else ("strong" if "strong" in r.subdir else "")
                series.setdefault((mode, base(r)), []).append(r)
        plt = self.plt
        fig, axs = plt.subplots(1, 2, figsize=(12, 4.2))
        trows, crows = [], []
        for i, ((mode, b), rs) in enumerate(sorted(series.items(), key=lambda kv: xh.sort_key(kv[0]))):
            by = {}
            for r in rs:
                by.setdefault(r.ranks_per_run, []).append(step_stats(r))
            rk = sorted(by)
            if len(rk) < 2:
                continue
            st = {k: float(np.mean([m["step_s"] for m in v])) for k, v in by.items()}
            batch = {k: float(np.mean([m["batch"] for m in v])) for k, v in by.items()}
            r1 = rk[0]
            if not mode:  # weak when the global batch grows with the ranks
                mode = "weak" if abs(batch[rk[-1]] / batch[r1] - rk[-1] / r1) < 1e-6 else "strong"
            speeds, effs = [], []
            for k in rk:
                speed = st[r1] / st[k]
                if mode == "strong":
                    eff = speed / (k / r1)
                else:
                    eff = speed
                    speed = eff * k / r1
                speeds.append(speed)
                effs.append(eff)
                lab = f"{mode}: {point_label(b)}" if b else mode
                trows.append([lab, k, fmt(batch[k], 0), fmt(1e3 * st[k], 2), fmt(batch[k] / st[k], 0),
                              f"{speed:.2f}x", f"{100 * eff:.0f}%"])
                crows.append([mode, point_label(b), k, batch[k], st[k], batch[k] / st[k], speed, eff])
            axs[0].plot(rk, speeds, marker="o", label=lab, color=f"C{i}")
            axs[1].plot(rk, effs, marker="o", color=f"C{i}")
        if not trows:
            plt.close(fig)
            return self.omitted("scaling", "g. Scaling efficiency", "no point was trained on two rank counts")
        allk = sorted(ranks)
        axs[0].plot(allk, [k / allk[0] for k in allk], "k--", lw=1, label="ideal")
        axs[0].set_title("speed-up vs ranks")
        axs[1].set_title("efficiency vs ranks")
        axs[1].axhline(1, color="k", ls="--", lw=1)
        for ax in axs:
            ax.set_xlabel("ranks per run")
            ax.set_xscale("log", base=2)
            ax.set_xticks(allk)
            ax.set_xticklabels([str(k) for k in allk])
        axs[0].legend(fontsize=7)
        fig.tight_layout()
        body = self.save(fig, "scaling.png", "Speed-up and efficiency against the smallest rank count (strong: "
                                             "T1 / (r/r1 · Tr); weak: T1 / Tr), from the median step time.")
        body += table_html(["series", "ranks", "global batch", "ms/step", "samples/s", "speed-up", "efficiency"], trows)
        body += self.write_csv("scaling.csv", ["mode", "point", "ranks", "global_batch", "step_s", "samples_per_s",
                                               "speedup", "efficiency"], crows)
        self.section("scaling", "g. Scaling efficiency", body)

    # output ----------------------------------------------------------------------------------

    def write(self):
        statuses = {}
        for r in self.all_runs:
            statuses[r.status] = statuses.get(r.status, 0) + 1
        dups = [r for r in self.all_runs if r.duplicate_of]
        r0 = self.runs[0]
        model = r0.config.get("model.kind", "")
        widths = r0.config.get("model.widths")
        meta = [f"<b>{esc(os.path.abspath(self.src))}</b>",
                f"{len(self.all_runs)} run files: " + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())),
                f"data: {esc(r0.config.get('data.name', ''))}; model: {esc(model)}"
                + (f" {esc('-'.join(str(w) for w in widths))}" if isinstance(widths, list) else "")
                + (f"; D = {r0.D} dense parameters" if r0.D else ""),
                "swept axes: " + (", ".join(esc(k) for k in xh.axis_keys(self.runs)) or "none"),
                f"generated {time.strftime('%Y-%m-%d %H:%M:%S')} by analysis/report.py"]
        notes = []
        if dups:
            notes.append(f"{len(dups)} run file(s) repeat the configuration of another run (an older run id) and are "
                         "left out of every mean and figure: " + ", ".join(esc(r.run_id) for r in dups))
        for path, msg in self.skipped:
            notes.append(f"unreadable, skipped: {esc(path)}: {esc(msg)}")
        toc = " ".join(f"<a href='#{sid}'>{esc(title)}</a>" for sid, title, _ in self.sections)
        parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'>",
                 f"<title>xpand report: {esc(os.path.basename(os.path.abspath(self.src)))}</title>",
                 f"<style>{CSS}</style></head><body>",
                 f"<h1>xpand report: {esc(os.path.basename(os.path.abspath(self.src)))}</h1>",
                 "<p class='meta'>" + "<br>".join(meta) + "</p>"]
        parts += [f"<p class='note'>{n}</p>" for n in notes]
        parts.append(f"<nav>{toc}</nav>")
        for sid, title, body in self.sections:
            parts.append(f"<h2 id='{sid}'>{esc(title)}</h2>{body}")
        parts.append("</body></html>\n")
        path = os.path.join(self.out, "index.html")
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(parts))
        return path


# -- numerics -----------------------------------------------------------------------------------

def smooth(x, y, points=60):
    """A moving average over len/points rows (finite values only)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(y)
    x, y = x[ok], y[ok]
    w = max(1, len(y) // points)
    if w == 1 or len(y) < 2 * w:
        return x, y
    k = np.ones(w) / w
    return np.convolve(x, k, mode="valid"), np.convolve(y, k, mode="valid")


def set_loss_scale(ax, cols):
    """Log scale when the losses span more than 20x; the top at the 99.5th percentile, so that a
    diverged run does not flatten the others."""
    vals = np.concatenate([np.asarray(c, dtype=float) for c in cols]) if cols else np.array([])
    vals = vals[np.isfinite(vals)]
    if not len(vals):
        return
    lo, hi = vals.min(), np.percentile(vals, 99.5)
    if lo > 0 and hi / lo > 20:
        ax.set_yscale("log")
        ax.set_ylim(lo * 0.9, hi * 1.2)
    elif hi > lo:
        pad = 0.05 * (hi - lo)
        ax.set_ylim(lo - pad, hi + pad)


def step_stats(run):
    """Median step time after the first 10% of rows, samples/s, bytes per step, peak memory."""
    t = run.train
    n = len(t["time_step"])
    skip = n // 10
    step = float(np.median(t["time_step"][skip:]))
    samples = t.get("samples")
    batch = float(samples[-1] - samples[-2]) if samples is not None and n >= 2 else float("nan")
    comm = float(np.median(t["comm_bytes"][skip:])) if "comm_bytes" in t else float("nan")
    mem = float(np.max(t["mem_peak"])) if "mem_peak" in t and n else float("nan")
    return dict(step_s=step, samples_s=batch / step if step > 0 else float("nan"), comm_bytes=comm, mem_peak=mem,
                batch=batch)


def legend_space(fig, rows):
    """The fraction of a figure's height that a legend of `rows` rows of 8 pt text needs below it."""
    return min(0.6, (0.17 * rows + 0.12) / fig.get_size_inches()[1])


def slug(s):
    return "".join(c if c.isalnum() else "_" for c in str(s)).strip("_") or "x"


def main():
    ap = argparse.ArgumentParser(description="HTML report of an xpand sweep (figures, CSV tables, index.html).")
    ap.add_argument("dir", help="the sweep's output directory (holding runs/*.h5)")
    ap.add_argument("--out", help="where to write the report (default DIR/report)")
    ap.add_argument("--skip-bad", action="store_true", help="leave unreadable run files out instead of stopping")
    ap.add_argument("--threshold", type=float, default=0.9, help="d_int fraction of the full-space accuracy (0.9)")
    args = ap.parse_args()
    t0 = time.time()
    src = args.dir
    if not os.path.isdir(src):
        warn(f"{src}: no such directory")
        return 1
    skipped = []
    try:
        runs = xh.load_runs(src, errors=skipped if args.skip_bad else "raise")
    except xh.XpandError as e:
        warn(f"cannot read {e} (--skip-bad leaves unreadable run files out)")
        return 1
    for path, msg in skipped:
        warn(f"skipping unreadable {msg}")
    if not runs:
        warn(f"no run files in {os.path.join(src, 'runs')} (expected runs/<run_id>.h5)")
        return 1
    out = args.out or os.path.join(src, "report")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        warn(f"cannot create {out}: {e}")
        return 1
    # Runs that the sweep axes do not separate but whose configs differ (e.g. a dense and an expanded
    # run trained with `xpand train`) are told apart by the config keys that differ.
    added = xh.add_config_axes(runs)
    if added:
        print(f"report: runs not separated by sweep axes differ in {', '.join(added)}; grouped by those too")
    rep = Report(src, out, runs, skipped, args.threshold)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for name in ("summary", "curves", "structure", "spectra", "dint90", "cost", "scaling"):
            getattr(rep, name)()
    order = ["runs", "groups", "curves", "structure", "spectra", "rankr", "dint90", "cost", "scaling"]
    rep.sections.sort(key=lambda s: order.index(s[0]))
    path = rep.write()
    print(f"report: {path} ({len(runs)} runs, {len(rep.figures)} figures, {len(rep.tables)} tables, "
          f"{time.time() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
