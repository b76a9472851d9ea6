#!/usr/bin/python3
"""Loaders for xpand's HDF5 results (docs/FORMAT.md), with numpy, h5py and PyYAML only.

    import sys; sys.path.insert(0, "analysis")
    import xpand_h5 as xh

    runs = xh.load_runs("out/omega")                  # out/omega/runs/*.h5, one Run each
    for r in runs:
        print(r.run_id, r.status, r.axes, r.kind, r.depth, r.d, xh.final(r, "test_acc"))
    r.config.get("train.lr"); r.train["loss"]; r.eval["test_acc"]; r.singular_values("fc1")
    for row in xh.group(runs, ["kind", "d"]):         # mean/std over seeds of the final metrics
        print(row["kind"], row["d"], row["n"], row["test_acc_mean"], row["test_acc_std"])
    res = xh.d_int90(runs)                            # intrinsic dimension (threshold 0.9)
    print(res["d_int90"], res["D"], res["ratio"], res["table"])

`load_runs(OUT)` reads OUT/runs/*.h5 (not *.part or *.prev-N files); without OUT/runs it reads
OUT/*/runs and OUT/*/*/runs (scaling studies: OUT/<mode>/r<ranks>/runs) and records the subdirectory
as one more axis, `dir`. Runs are read once, in SWMR-read mode (live runs, killed runs and
finished runs all open; `open_swmr` caps HDF5's metadata read attempts as xpand does, so a file
with damaged metadata fails within a second instead of minutes): root attributes, the metric
tables (dicts of numpy arrays) and every snapshot's singular values and rank attributes. Strings
and names are decoded with errors="replace": invalid UTF-8 in a file becomes U+FFFD. Weight
matrices are read only on request (`Run.weight`), from the file again.

Structural features come from the run file's /layers table, which xpand writes at the start of
every run from the layers it built (docs/FORMAT.md); `Run.layers` holds its rows by layer name:

    kind    the parameterizations in use, e.g. dense, expanded, lowrank, subspace, expanded+lowrank
    factor  the largest expansion factor over expanded layers (None when none is expanded)
    depth   the largest depth over expanded layers (1 when none is expanded)
    rank    the smallest rank over lowrank/lora layers (None when none)
    d       param.omega_dim when the network trains in a subspace (None otherwise)
    D       the dense network's parameter count: the collapsed layers (weights and biases) and the
            tensors outside them; when `layers.<name>.kind: subspace` selects some layers, theirs only
    projection  param.projection of a subspace run (None otherwise)

Run files written before /layers existed have no structural features (all None).

Only `completed` runs that are not duplicates enter means (`Run.usable`). Two run files holding the
same resolved configuration (an older binary hashed it to another run id) are duplicates: the
completed one with the most steps and the latest end time is kept and the others point to it
(`Run.duplicate_of`).
"""
import ctypes
import ctypes.util
import glob
import math
import os

import h5py
import numpy as np
import yaml

FEATURES = ("kind", "factor", "depth", "rank", "d", "D", "projection")
EVAL_METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")
# Config sections that do not change what a run computes (not part of the run id).
_NOT_IN_ID = ("output", "device", "threads")


class _MergingLoader(yaml.SafeLoader):
    """A safe YAML loader that merges repeated mapping keys (run files written before xpand nested
    each layer's section once held `layers: {fc1: {kind: ..}, fc2: .., fc1: {rank: ..}}`)."""


def _merging_mapping(loader, node, deep=False):
    out = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        value = loader.construct_object(value_node, deep=True)
        if isinstance(out.get(key), dict) and isinstance(value, dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


_MergingLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _merging_mapping)


def load_config(text):
    """The resolved config of a run file (its `config` attribute) as a nested dict."""
    return yaml.load(text, Loader=_MergingLoader) or {}


# A metric column larger than this must have about its size on disk: a damaged file can declare a
# billion rows it never wrote, which reading would turn into gigabytes of fill values.
_UNWRITTEN_CHECK_BYTES = 64 << 20


class XpandError(Exception):
    """A file or directory that cannot be read as xpand results; the message names it."""


def _text(s):
    """A string or name from h5py as valid UTF-8: h5py decodes variable-length strings with
    surrogateescape, so invalid bytes in a file arrive as lone surrogates (names that do not decode
    arrive as bytes); they become U+FFFD, like bytes decoded with errors="replace"."""
    if isinstance(s, bytes):
        return s.decode("utf-8", "replace")
    try:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a surrogate that is no escaped byte
        return s.encode("utf-8", "replace").decode("utf-8")


def _str(v):
    """An attribute value as Python data: strings (bytes, str, arrays of them) as valid str."""
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, str):
        return _text(v)
    if isinstance(v, np.ndarray):
        return [_str(x) for x in v.tolist()]
    if isinstance(v, np.generic):
        return _str(v.item())
    if isinstance(v, (list, tuple)):
        return [_str(x) for x in v]
    return v


class Config(dict):
    """The resolved configuration as a nested dict, with a dotted getter: `c.get("train.lr")`."""

    def get(self, key, default=None):
        parts = str(key).split(".")
        node, i = self, 0
        while i < len(parts):
            if not isinstance(node, dict):
                return default
            for j in range(len(parts), i, -1):  # longest first: a dotted layer pattern is one key
                k = ".".join(parts[i:j])
                if k in node:
                    node, i = dict.get(node, k), j
                    break
            else:
                return default
        return node


def parse_value(v):
    """An axis value as the config holds it: `'{kind: dense}'` -> {'kind': 'dense'}, numbers stay."""
    if isinstance(v, str):
        try:
            return yaml.safe_load(v)
        except yaml.YAMLError:
            return v
    return v


def format_value(v):
    """A short label of an axis value: '{kind: expanded, factor: 2}' -> 'expanded factor=2'."""
    p = parse_value(v)
    if isinstance(p, dict):
        parts = []
        for k, x in p.items():
            parts.append(str(x) if k == "kind" else f"{k}={x}")
        return " ".join(parts) if parts else "{}"
    if isinstance(p, float):
        return f"{p:g}"
    return str(v)


class Snapshot:
    """One /snapshots/<step>/<layer>: singular values, rank attributes and the weight's shape."""

    def __init__(self, step, layer, sv, attrs, shape, error=""):
        self.step = step
        self.layer = layer
        self.singular_values = sv
        self.numerical_rank = attrs.get("numerical_rank")
        self.effective_rank = attrs.get("effective_rank")
        self.stable_rank = attrs.get("stable_rank")
        self.shape = tuple(shape) if shape is not None else None
        self.error = error
        # A nonlinear expansion (ReLU between its factors) has no single weight: its group holds only
        # its factors (docs/FORMAT.md), and counts as written.
        self.nonlinear = "nonlinear" in attrs

    @property
    def matrix_shape(self):
        """(m, n) of the weight viewed as a matrix (conv: (out, in*kh*kw))."""
        if not self.shape:
            return None
        return int(self.shape[0]), int(np.prod(self.shape[1:])) if len(self.shape) > 1 else 1


class Run:
    """One run file. Attributes: path, run_id, name, status, error, axes (dict), axis_keys, config
    (Config), attrs (root attributes), steps, total_steps, wall_seconds, ranks_per_run, train and
    eval (dicts of numpy arrays), snapshots ({step: {layer: Snapshot}}), subdir (the directory
    below the loaded root, for nested layouts), duplicate_of (run_id or None)."""

    def __init__(self, path, root=None):
        self.path = path
        self.subdir = ""
        if root is not None:
            rel = os.path.relpath(os.path.dirname(os.path.dirname(os.path.abspath(path))), os.path.abspath(root))
            self.subdir = "" if rel == "." else rel
        self.duplicate_of = None
        try:
            with _open(path) as f:
                self._read(f)
        except XpandError:
            raise
        except (OSError, KeyError, ValueError, TypeError, yaml.YAMLError) as e:
            raise XpandError(f"{path}: {e}") from e
        except (RuntimeError, AttributeError) as e:  # h5py on damaged metadata; a dataset where a group belongs
            raise XpandError(f"{path}: {type(e).__name__}: {e}") from e

    # -- reading -------------------------------------------------------------------------------

    def _read(self, f):
        a = {_text(k): _str(f.attrs[k]) for k in f.attrs.keys()}
        if "run_id" not in a or "config" not in a:
            raise XpandError(f"{self.path}: not an xpand run file (no run_id/config attribute)")
        if not isinstance(a["config"], str):
            raise XpandError(f"{self.path}: the config attribute is not a string")
        self.attrs = a
        self.run_id = str(a["run_id"])
        self.name = str(a.get("name", ""))
        self.status = str(a.get("status", "?"))
        self.error = str(a.get("error", ""))
        cfg = load_config(a["config"])
        if not isinstance(cfg, dict):
            raise XpandError(f"{self.path}: the config attribute is not a YAML mapping")
        self.config = Config(cfg)
        axes = a.get("axes", "")
        if isinstance(axes, str):
            axes = [axes] if axes else []
        self.axis_keys = [str(k) for k in axes if k]
        self.axes = {k: a.get(k, self.config.get(k)) for k in self.axis_keys}
        if self.subdir:  # nested layouts (OUT/<mode>/r<ranks>/runs): the directory is one more axis
            self.axis_keys.insert(0, "dir")
            self.axes = {"dir": self.subdir, **self.axes}
        self.total_steps = int(a.get("total_steps", 0) or 0)
        self.wall_seconds = float(a["wall_seconds"]) if "wall_seconds" in a else float("nan")
        self.ranks_per_run = int(a.get("ranks_per_run", int(a.get("world_size", "1") or 1)))
        self.train = self._table(f, "metrics/train")
        self.eval = self._table(f, "metrics/eval")
        steps = a.get("steps")
        n = len(self.train.get("step", []))
        self.steps = int(steps) if steps is not None and self.status != "running" else (
            int(self.train["step"][-1]) if n else 0)
        self.snapshots = {}
        names = {}  # step -> group name
        if "snapshots" in f:
            for name in sorted(f["snapshots"].keys()):
                try:
                    step = int(name)
                except ValueError:
                    continue
                layers = {}
                for layer, g in f["snapshots"][name].items():
                    if not isinstance(g, h5py.Group) or layer == "network":  # network: tensors outside layers
                        continue
                    sv = g["singular_values"][:] if "singular_values" in g else None
                    shape = g["weight"].shape if "weight" in g else None
                    attrs = {_text(k): _str(g.attrs[k]) for k in g.attrs.keys()}
                    layer = _text(layer)  # a name that is not UTF-8 is shown with U+FFFD
                    layers[layer] = Snapshot(step, layer, sv, attrs, shape, str(attrs.get("spectrum_error", "")))
                if layers:
                    self.snapshots[step] = layers
                    names[step] = name
        # The newest snapshot of a run that is writing it, or whose writer was killed or failed in
        # the middle, may be half-written: fewer layers than the one before, or a layer without its
        # weight. The defaults below skip it; it stays readable by its step.
        # xpand sets the group's `layers` attribute after the last layer; older files are judged by
        # their contents (each layer's weight comes first, its spectrum last).
        self.incomplete_snapshot = None
        if self.snapshots and self.status != "completed":
            steps_ = sorted(self.snapshots)
            newest = self.snapshots[steps_[-1]]
            group = f["snapshots"][names[steps_[-1]]]
            if "layers" in group.attrs:
                done = len(newest) == int(group.attrs["layers"])
            else:
                done = len(steps_) == 1 or len(newest) >= len(self.snapshots[steps_[-2]])
            done = done and all(s.nonlinear or (s.shape is not None and (s.singular_values is not None or s.error))
                                for s in newest.values())
            if not done:
                self.incomplete_snapshot = steps_[-1]
        self.layers, self.other_params = None, 0  # /layers: name -> row (dict of column -> value)
        if "layers" in f and isinstance(f["layers"], h5py.Group) and "name" in f["layers"]:
            g = f["layers"]
            cols = {_text(k): [(_text(v) if isinstance(v, bytes) else v) for v in g[k][()].tolist()]
                    for k in g.keys() if isinstance(g[k], h5py.Dataset) and g[k].ndim == 1}
            n = len(cols["name"])
            if all(len(v) == n for v in cols.values()):
                self.layers = {cols["name"][i]: {k: v[i] for k, v in cols.items()} for i in range(n)}
                self.other_params = int(g.attrs.get("other_params", 0))
        self._features = None

    @staticmethod
    def _table(f, name):
        if name not in f:
            return {}
        g = f[name]
        cols = {}
        for k, d in g.items():
            if isinstance(d, h5py.Dataset):
                if f.swmr_mode:
                    d.refresh()
                nbytes = d.size * d.dtype.itemsize
                if nbytes > _UNWRITTEN_CHECK_BYTES and d.id.get_storage_size() < nbytes // 2:
                    raise XpandError(f"{f.filename}: /{name}/{_text(k)} declares {d.shape} rows but holds "
                                     f"{d.id.get_storage_size()} bytes (a damaged file)")
                cols[_text(k)] = d[:]
        if cols:  # a live file may show one column a row ahead of another
            n = min(len(v) for v in cols.values())
            cols = {k: v[:n] for k, v in cols.items()}
        return cols

    # -- identity ------------------------------------------------------------------------------

    @property
    def seed(self):
        return self.axes.get("seed", self.config.get("seed"))

    @property
    def point(self):
        """The run's sweep point: ((axis, value), ...) over every axis but the seed."""
        return tuple((k, self.axes[k]) for k in self.axis_keys if k != "seed")

    @property
    def identity(self):
        """The resolved config without output.*, device and threads, as a canonical string."""
        c = {k: v for k, v in self.config.items() if k not in _NOT_IN_ID}
        return yaml.safe_dump(c, sort_keys=True)

    @property
    def usable(self):
        """Completed and not a duplicate: the runs that enter means."""
        return self.status == "completed" and self.duplicate_of is None

    def value(self, key):
        """A feature (kind, factor, depth, rank, d, D, projection), an axis, or a dotted config key."""
        if key in FEATURES:
            return self.features[key]
        if key in self.axes:
            return self.axes[key]
        if key == "ranks_per_run":
            return self.ranks_per_run
        return self.config.get(key)

    # -- structure -----------------------------------------------------------------------------

    @property
    def layer_names(self):
        """Layer names in forward order: from /layers, else from the last snapshot."""
        if self.layers:
            return list(self.layers)
        if self.snapshots:
            return list(self.snapshots[self._last_complete_step()].keys())
        return []

    @property
    def features(self):
        if self._features is None:
            self._features = self._derive()
        return self._features

    def _derive(self):
        """The structural features from /layers (see the module's docstring)."""
        if not self.layers:
            return dict(kind=None, factor=None, depth=None, rank=None, d=None, D=None, projection=None)
        rows = list(self.layers.values())
        param = self.config.get("param") or {}
        kinds = [r["kind"] for r in rows]
        subspace = "subspace" in kinds
        others = sorted(set(kinds) - {"dense", "subspace"})
        kind = "+".join((["subspace"] if subspace else []) + others) or "dense"
        expanded = [r for r in rows if r["kind"] == "expanded"]
        factor = max((float(r["factor"]) for r in expanded), default=None)
        if factor is not None and factor == int(factor):
            factor = int(factor)
        depth = max((int(r["depth"]) for r in expanded), default=1)
        ranks = [int(r["rank"]) for r in rows if r["kind"] in ("lowrank", "lora")]
        # A subspace over some layers (layers.<name>.kind: subspace) measures against theirs only.
        some = subspace and param.get("kind") != "subspace"
        counted = [r for r in rows if r["kind"] == "subspace"] if some else rows
        D = sum(int(r["collapsed"]) for r in counted) + (0 if some else self.other_params)
        return dict(kind=kind, factor=factor, depth=depth, rank=min(ranks) if ranks else None,
                    d=int(param.get("omega_dim", 0)) if subspace else None, D=D,
                    projection=str(param.get("projection", "")) if subspace else None)

    kind = property(lambda self: self.features["kind"])
    factor = property(lambda self: self.features["factor"])
    depth = property(lambda self: self.features["depth"])
    rank = property(lambda self: self.features["rank"])
    d = property(lambda self: self.features["d"])
    D = property(lambda self: self.features["D"])

    # -- snapshots -----------------------------------------------------------------------------

    @property
    def snapshot_steps(self):
        return sorted(self.snapshots)

    def _last_complete_step(self):
        steps = [s for s in self.snapshots if s != self.incomplete_snapshot]
        return max(steps) if steps else max(self.snapshots)

    def snapshot(self, layer, step=None):
        """The Snapshot of a layer at a step (default: the last complete snapshot); None when absent."""
        if not self.snapshots:
            return None
        step = self._last_complete_step() if step is None else int(step)
        return self.snapshots.get(step, {}).get(layer)

    def singular_values(self, layer, step=None):
        s = self.snapshot(layer, step)
        return None if s is None else s.singular_values

    def ranks(self, layer, step=None):
        """{numerical_rank, effective_rank, stable_rank} of a layer's snapshot (attributes)."""
        s = self.snapshot(layer, step)
        if s is None:
            return None
        return dict(numerical_rank=s.numerical_rank, effective_rank=s.effective_rank, stable_rank=s.stable_rank)

    def weight(self, layer, step=None):
        """The collapsed weight of a snapshot (default: the last complete one), read from the file now."""
        step = self._last_complete_step() if step is None else int(step)
        with _open(self.path) as f:
            g = f[f"snapshots/{step:08d}/{layer}"]
            if "nonlinear" in g.attrs:
                raise XpandError(f"{self.path}: layer {layer} is a nonlinear expansion (ReLU between its factors): "
                                 f"it has no single weight; its factors are under {g.name}/factors")
            return g["weight"][:]

    def __repr__(self):
        return f"Run({self.run_id}, {self.status}, {self.axes})"


# SWMR readers re-read metadata whose checksum fails, in case a writer is half-way through updating
# it. HDF5's default is 100 attempts with growing sleeps, so one damaged header byte makes opening a
# file take minutes; a live writer's metadata settles within a few attempts. xpand's own reader
# uses the same cap (kSwmrReadAttempts in src/store/run_file.cpp).
SWMR_READ_ATTEMPTS = 6


def _hdf5_library():
    """The HDF5 shared library that h5py uses (ctypes), or None. Older h5py (3.7) has no binding of
    H5Pset_metadata_read_attempts; the library h5py loaded is found in this process's memory map."""
    global _HDF5_LIB
    if _HDF5_LIB is False:
        _HDF5_LIB = None
        paths = []
        try:
            with open("/proc/self/maps") as maps:
                for line in maps:
                    fields = line.split(None, 5)
                    path = fields[5].strip() if len(fields) == 6 else ""
                    name = os.path.basename(path)
                    if name.startswith("libhdf5") and "hl" not in name and path not in paths:
                        paths.append(path)
        except OSError:
            pass
        found = (ctypes.util.find_library("hdf5_serial"), ctypes.util.find_library("hdf5"))
        for path in paths + [p for p in found if p]:
            try:
                lib = ctypes.CDLL(path)
                fn = lib.H5Pset_metadata_read_attempts
            except (OSError, AttributeError):
                continue
            fn.argtypes, fn.restype = [ctypes.c_int64, ctypes.c_uint], ctypes.c_int
            _HDF5_LIB = lib
            break
    return _HDF5_LIB


_HDF5_LIB = False


def swmr_fapl(attempts=SWMR_READ_ATTEMPTS):
    """A file access property list for SWMR reading with at most `attempts` metadata reads."""
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_EARLIEST, h5py.h5f.LIBVER_LATEST)  # h5py's default
    if hasattr(fapl, "set_metadata_read_attempts"):
        fapl.set_metadata_read_attempts(attempts)
    else:
        lib = _hdf5_library()
        if lib is None or lib.H5Pset_metadata_read_attempts(fapl.id, attempts) < 0:
            return None  # HDF5's default then; still correct, only slow on damaged files
    return fapl


def open_swmr(path, attempts=SWMR_READ_ATTEMPTS):
    """h5py.File(path, "r", swmr=True) with the metadata read attempts capped."""
    fapl = swmr_fapl(attempts)
    if fapl is None:
        return h5py.File(path, "r", swmr=True)
    fid = h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDONLY | h5py.h5f.ACC_SWMR_READ, fapl=fapl)
    return h5py.File(fid)


def _open(path):
    """SWMR-read mode (live and killed runs) with capped metadata read attempts (open_swmr); the
    ordinary mode for files written without SWMR (output.swmr: false), which SWMR-read refuses."""
    try:
        return open_swmr(path)
    except OSError as e:
        try:
            return h5py.File(path, "r")
        except OSError:
            raise e from None


# -- loading ------------------------------------------------------------------------------------

def run_files(out_dir, nested=True):
    """The run files of an output directory: out_dir/runs/*.h5 (not *.part, not .prev-*). With
    nested, a directory without runs/ is searched one and two levels down (scaling studies:
    OUT/<mode>/r<ranks>/runs/*.h5)."""
    def listing(d):
        return sorted(p for p in glob.glob(os.path.join(d, "runs", "*.h5"))
                      if ".prev-" not in os.path.basename(p) and os.path.isfile(p))
    files = listing(out_dir)
    if not files and nested and not os.path.isdir(os.path.join(out_dir, "runs")):
        for pattern in ("*", os.path.join("*", "*")):
            for d in sorted(glob.glob(os.path.join(out_dir, pattern))):
                if os.path.isdir(os.path.join(d, "runs")):
                    files += listing(d)
            if files:
                break
    return files


def load_runs(out_dir, errors="raise", dedupe=True, nested=True):
    """Every run of an output directory, as Run objects sorted by (subdir, point, seed, run_id).

    errors: "raise" (XpandError naming the file), "skip" (leave unreadable files out) or a list,
    to which (path, message) pairs are appended. Raises XpandError when the directory is missing.
    """
    if not os.path.isdir(out_dir):
        raise XpandError(f"{out_dir}: no such directory")
    runs = []
    for path in run_files(out_dir, nested):
        try:
            runs.append(Run(path, out_dir))
        except XpandError as e:
            if errors == "raise":
                raise
            if isinstance(errors, list):
                errors.append((path, str(e)))
    if dedupe:
        mark_duplicates(runs)
    runs.sort(key=lambda r: (r.subdir, _sort_key(r.point), _sort_key(r.seed), r.run_id))
    return runs


def mark_duplicates(runs):
    """Sets duplicate_of on every run whose resolved config another run of the same directory holds."""
    by = {}
    for r in runs:
        by.setdefault((r.subdir, r.identity), []).append(r)
    for same in by.values():
        if len(same) < 2:
            continue
        same.sort(key=lambda r: (r.status == "completed", r.steps, str(r.attrs.get("end_time", "")),
                                 str(r.attrs.get("start_time", ""))), reverse=True)
        for r in same[1:]:
            r.duplicate_of = same[0].run_id


def _sort_key(v):
    """Sorts mixed values: None, then numbers, then strings, then mappings (by kind, then their
    entries in order, numbers as numbers); tuples element-wise."""
    if isinstance(v, tuple):
        return tuple(_sort_key(x) for x in v)
    if v is None:
        return (0, 0.0, "", ())
    if isinstance(v, (bool, np.bool_, int, float, np.integer, np.floating)):
        x = float(v)
        return (1, x if not math.isnan(x) else math.inf, "", ())
    p = parse_value(v)
    if isinstance(p, dict):
        return (3, 0.0, str(p.get("kind", "")), tuple((str(k), _sort_key(x)) for k, x in p.items() if k != "kind"))
    if isinstance(p, (int, float)) and not isinstance(p, bool):
        return (1, float(p), "", ())
    return (2, 0.0, str(v), ())


sort_key = _sort_key


# -- metrics ------------------------------------------------------------------------------------

def final(run, metric):
    """The last value of a metric: an eval column (test_acc, ...), a train column (loss, ...) or a
    numeric root attribute (wall_seconds, steps). NaN when the run has none."""
    for table in (run.eval, run.train):
        col = table.get(metric)
        if col is not None:
            return float(col[-1]) if len(col) else float("nan")
    if metric == "steps":
        return float(run.steps)
    v = run.attrs.get(metric)
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def mean_std(values):
    """Mean and sample std (ddof 1; 0 for one value) of the finite values, and their count."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v)


def group(runs, keys=None, metrics=EVAL_METRICS, only_usable=True):
    """Rows of {key: value, ..., n, n_runs, runs, <metric>_mean, <metric>_std} over the runs sharing
    the values of `keys` (default: the sweep point, every axis but the seed), sorted by the keys.
    Means and stds are over the usable runs (completed, no duplicate) with a finite value; n counts
    them, n_runs counts every run of the group."""
    if keys is None:
        keys = axis_keys(runs, seed=False)
    groups = {}
    for r in runs:
        if r.duplicate_of is not None:
            continue
        groups.setdefault(tuple(r.value(k) for k in keys), []).append(r)
    rows = []
    for vals in sorted(groups, key=_sort_key):
        members = groups[vals]
        used = [r for r in members if r.usable or not only_usable]
        row = dict(zip(keys, vals))
        row["runs"] = members
        row["n_runs"] = len(members)
        for m in metrics:
            mean, std, n = mean_std([final(r, m) for r in used])
            row[m + "_mean"], row[m + "_std"] = mean, std
            row["n"] = max(row.get("n", 0), n)
        if not metrics:
            row["n"] = len(used)
        rows.append(row)
    return rows


def axis_keys(runs, seed=True):
    """The union of the runs' axes, in the order they first appear."""
    keys = []
    for r in runs:
        for k in r.axis_keys:
            if k not in keys and (seed or k != "seed"):
                keys.append(k)
    return keys


# Keys that do not tell experiments apart (the run id counts them at their defaults: docs/SWEEPS.md);
# the same list as operational_keys() in src/config/config.cpp (declared in src/config/operational.h).
_OPERATIONAL = ("train.log_every", "dist.backend", "dist.bucket_mb", "dist.first_bucket_mb", "dist.timeout_s",
                "dist.link_gbps", "dist.latency_us", "dist.gemm_gflops")


def flat_config(node, prefix=""):
    """The resolved config as {dotted key: value} over its leaves (lists are leaves)."""
    out = {}
    if isinstance(node, dict):
        for k, v in node.items():
            out.update(flat_config(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = tuple(node) if isinstance(node, list) else node
    return out


def config_axes(runs):
    """The config keys that tell runs apart where their sweep axes do not: among runs with the same
    point (axes but the seed), the dotted keys whose values differ (seed, output.*, device, threads
    and the operational keys aside). Runs trained with `xpand train` (no axes), e.g. one dense and one
    expanded run, are then two groups labelled by what differs between them."""
    def skip(k):
        return k in ("seed", "name") or k.split(".")[0] in _NOT_IN_ID or k in _OPERATIONAL

    by_point = {}
    for r in runs:
        by_point.setdefault(r.point, []).append(r)
    keys = []
    for members in by_point.values():
        flats = [flat_config(r.config) for r in members]
        found = False
        for k in sorted(set().union(*flats)) if flats else []:
            if skip(k):
                continue
            # Only values a run holds count: a key that an older file lacks (added later, at its
            # default) does not split the seeds of one point.
            if len({repr(f[k]) for f in flats if k in f}) > 1:
                found = True
                if k not in keys:
                    keys.append(k)
        # Runs that differ in their name only are still different runs.
        if not found and len({f.get("name") for f in flats}) > 1 and "name" not in keys:
            keys.append("name")
    return keys


def add_config_axes(runs):
    """Adds config_axes(runs) to each run's axes (the value its config holds; None where it has none),
    so that points, groups and labels follow them. Returns the keys added."""
    keys = [k for k in config_axes(runs) if not any(k in r.axis_keys for r in runs)]
    for r in runs:
        for k in keys:
            v = r.config.get(k)
            r.axes[k] = yaml.safe_dump(v, default_flow_style=True).strip() if isinstance(v, (list, dict)) else v
            r.axis_keys.append(k)
    return keys


def context_axes(runs):
    """The swept axes that set neither the parameterization nor its learning rate (model.activation,
    data.name, ...): comparisons across kinds (d_int90, structure plots) are made within each
    combination of their values."""
    return [k for k in axis_keys(runs, seed=False)
            if not (k == "param" or k.startswith("param.") or k.startswith("layers.") or k == "train.lr")]


def split_context(runs, keys=None):
    """[(((axis, value), ...), runs)] for every combination of the context axes' values."""
    keys = context_axes(runs) if keys is None else keys
    groups = {}
    for r in runs:
        groups.setdefault(tuple((k, r.axes.get(k)) for k in keys), []).append(r)
    return [(k, groups[k]) for k in sorted(groups, key=_sort_key)]


def varying(runs, key):
    """The distinct values a key takes over the runs (sorted), when more than one; else []."""
    vals = {r.value(key) for r in runs if r.duplicate_of is None}
    return sorted(vals, key=_sort_key) if len(vals) > 1 else []


# -- intrinsic dimension ------------------------------------------------------------------------

def is_full_space(run):
    """A run of the full parameter space: ordinary training, every layer dense."""
    return run.kind == "dense"


def d_int90(runs, threshold=0.9, metric="test_acc", projection=None):
    """The intrinsic dimension: the smallest d whose mean `metric` over seeds reaches `threshold`
    times the mean of the full-space runs (every layer dense, no subspace).

    Subspace runs of one projection enter (default: the projection most runs use). Returns a dict:
    full_mean, full_std, full_n, target, d_int90 (None when no d reaches the target), D (the
    dense parameter count, when known), ratio (D / d_int90), projection, table (rows of d, mean,
    std, n, fraction of the full mean), others ({projection: table} of the other projections), and
    between grid points: d_int90_interp (the mean curve's crossing, linear in log d, see crossing()),
    d_int90_seeds ({seed: crossing of that seed's own curve or None}), d_int90_seed_mean / _std / _n.
    Raises XpandError when there is no usable subspace or no usable full-space run."""
    usable = [r for r in runs if r.usable]
    sub = [r for r in usable if r.d is not None]
    full = [r for r in usable if is_full_space(r)]
    if not sub:
        old = sum(1 for r in runs if r.layers is None)
        raise XpandError("no completed subspace runs (param.kind: subspace)" +
                         (f"; {old} run file(s) predate the /layers table that says which runs train in a "
                          "subspace: train them again" if old else ""))
    if not full:
        raise XpandError("no completed full-space run (every layer dense, no subspace) to compare with")
    fm, fs, fn = mean_std([final(r, metric) for r in full])
    target = threshold * fm
    by_proj = {}
    for r in sub:
        by_proj.setdefault(r.features["projection"], []).append(r)
    if projection is None:
        projection = max(sorted(by_proj), key=lambda p: len(by_proj[p]))
    if projection not in by_proj:
        raise XpandError(f"no completed subspace runs with projection {projection}")

    def table(rs):
        rows = []
        for d in sorted({r.d for r in rs}):
            m, s, n = mean_std([final(r, metric) for r in rs if r.d == d])
            rows.append(dict(d=d, mean=m, std=s, n=n, fraction=m / fm if fm else float("nan")))
        return rows

    rows = table(by_proj[projection])
    hit = next((row["d"] for row in rows if np.isfinite(row["mean"]) and row["mean"] >= target), None)
    D = next((r.D for r in sub + full if r.D), None)
    # Between grid points: where the mean curve crosses the target, linear in log d; and the same
    # crossing for each seed's own curve (its spread is the estimate's).
    interp = crossing([row["d"] for row in rows], [row["mean"] for row in rows], target)
    per_seed = {}
    for r in by_proj[projection]:
        per_seed.setdefault(r.seed, {})[r.d] = final(r, metric)
    seeds = {}
    for seed, curve in sorted(per_seed.items(), key=lambda kv: str(kv[0])):
        ds = sorted(curve)
        seeds[seed] = crossing(ds, [curve[d] for d in ds], target)
    reached = [v for v in seeds.values() if v is not None]
    sm, ss, sn = mean_std(reached) if reached else (float("nan"), float("nan"), 0)
    return dict(metric=metric, threshold=threshold, full_mean=fm, full_std=fs, full_n=fn, target=target,
                d_int90=hit, D=D, ratio=(D / hit) if (D and hit) else None, projection=projection,
                d_int90_interp=interp, d_int90_seeds=seeds, d_int90_seed_mean=sm, d_int90_seed_std=ss,
                d_int90_seed_n=sn,
                table=rows, others={p: table(rs) for p, rs in sorted(by_proj.items()) if p != projection})


def crossing(ds, values, target):
    """Where a curve (values at increasing ds) first reaches target, interpolated linearly in log d
    between the last grid point below and the first at or above it; the first d itself when it
    already reaches; None when no point does."""
    prev = None
    for d, v in zip(ds, values):
        if not np.isfinite(v):
            continue
        if v >= target:
            if prev is None:
                return float(d)
            (d0, v0) = prev
            t = (target - v0) / (v - v0)
            return float(np.exp(np.log(d0) + t * (np.log(d) - np.log(d0))))
        prev = (d, v)
    return None


# -- spectra ------------------------------------------------------------------------------------

def spectrum_ranks(sv, shape, dtype="float32"):
    """numerical, effective and stable rank from singular values, as xpand computes them."""
    sv = np.asarray(sv, dtype=float)
    if len(sv) == 0 or sv[0] == 0:
        return dict(numerical_rank=0, effective_rank=0.0, stable_rank=0.0)
    eps = np.finfo(np.float64 if dtype == "float64" else np.float32).eps
    tol = max(shape) * eps * sv[0]
    p = sv / sv.sum()
    p = p[p > 0]
    return dict(numerical_rank=int((sv > tol).sum()), effective_rank=float(np.exp(-(p * np.log(p)).sum())),
                stable_rank=float((sv ** 2).sum() / sv[0] ** 2))


def rank_r_error(sv):
    """Relative Frobenius error of the best rank-r approximation, r = 0..len(sv):
    sqrt(sum_{i>r} s_i^2 / sum s_i^2)."""
    sq = np.asarray(sv, dtype=float) ** 2
    total = sq.sum()
    tail = np.concatenate([np.cumsum(sq[::-1])[::-1], [0.0]])
    return np.sqrt(np.maximum(tail, 0) / total) if total > 0 else np.zeros(len(sq) + 1)


class Model:
    """An exported model (xpand collapse, docs/FORMAT.md "Model files"): `state_dict` (name ->
    numpy array, in layer order), `arch` (dict: model, layer_order, input_shape, num_classes, and
    per kind widths/activation/residual, channels/kernel_size/padding/fc/batch_norm/pool, or
    n_layer/n_head/n_embd/block_size/vocab), `config` (the run's resolved config), run_id, step."""

    def __init__(self, state_dict, arch, config, run_id, step):
        self.state_dict, self.arch, self.config, self.run_id, self.step = state_dict, arch, config, run_id, step

    def normalize(self, raw):
        """Raw inputs (uint8 pixels) as the network takes them: (raw / input_div - mean) / std, in float32
        as xpand computes them (xpand_torch's modules take them in a float64 model too)."""
        a = self.arch
        x = np.asarray(raw, dtype=np.float32) / np.float32(a["input_div"])
        return ((x - np.float32(a["input_mean"])) / np.float32(a["input_std"])).astype(np.float32)


_MODEL_ARCH_KEYS = ("model", "dtype", "layer_order", "input_shape", "num_classes", "activation", "input_div",
                    "input_mean", "input_std", "widths", "residual", "channels", "kernel_size", "padding", "fc",
                    "batch_norm", "batch_norm_eps", "pool", "n_layer", "n_head", "n_embd", "block_size", "vocab",
                    "layer_norm_eps")


def _plain(v):
    """An attribute value as plain Python: str, int, float, or a list of them."""
    if isinstance(v, (bytes, np.bytes_)):
        return v.decode("utf-8", errors="replace")
    if isinstance(v, np.ndarray):
        return [_plain(x) for x in v.tolist()] if v.dtype.kind in "OSU" else v.tolist()
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    return v


def load_model(path):
    """Reads a model file written by `xpand collapse -o MODEL.h5` or `-o MODEL.pt` (the .pt needs
    PyTorch). Returns a Model; XpandError when the file is not one."""
    if str(path).endswith(".pt"):
        import torch
        d = torch.load(path, map_location="cpu")
        if not isinstance(d, dict) or "state_dict" not in d or "architecture" not in d:
            raise XpandError(f"{path}: not an xpand model (.pt without state_dict and architecture)")
        arch = dict(d["architecture"])
        sd = {k: v.numpy() for k, v in d["state_dict"].items()}
        return Model(sd, {k: arch[k] for k in _MODEL_ARCH_KEYS if k in arch}, load_config(arch.get("config", "")),
                     arch.get("run_id", ""), int(arch.get("step", 0)))
    with _open(path) as f:
        if _plain(f.attrs.get("kind", "")) != "xpand collapsed model":
            raise XpandError(f"{path}: not an xpand model file (no kind attribute 'xpand collapsed model')")
        if int(f.attrs.get("format_version", 1)) != 2:
            raise XpandError(f"{path}: model format version {f.attrs.get('format_version', 1)}, this reader "
                             "knows 2: export it again with xpand collapse")
        arch = {k: _plain(f.attrs[k]) for k in _MODEL_ARCH_KEYS if k in f.attrs}
        sd = {k: f["state_dict"][k][()] for k in f["state_dict"]}
        order = arch["layer_order"]

        parts = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]

        def rank(name):  # forward order of the modules, then PyTorch's order within one
            best = [i for i, m in enumerate(order) if name.startswith(m + ".")]
            last = name.rsplit(".", 1)[-1]
            return (max(best, key=lambda i: len(order[i])) if best else len(order),
                    parts.index(last) if last in parts else len(parts))
        sd = {k: sd[k] for k in sorted(sd, key=rank)}
        return Model(sd, arch, load_config(_plain(f.attrs.get("config", ""))), _plain(f.attrs.get("run_id", "")),
                     int(f.attrs.get("step", 0)))


if __name__ == "__main__":
    import argparse
    import sys
    ap = argparse.ArgumentParser(description="xpand's HDF5 loaders (a module: import xpand_h5). Run directly, "
                                 "it lists the runs of an output directory.", epilog=__doc__.split("\n\n")[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="output directory (OUT/runs/*.h5)")
    args = ap.parse_args()
    try:
        for r in load_runs(args.out, errors="skip"):
            print(r.run_id, r.status, r.kind, final(r, "test_acc"))
    except (XpandError, OSError) as e:
        sys.exit(f"xpand_h5.py: {e}")
