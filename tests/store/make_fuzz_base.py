#!/usr/bin/python3
"""Makes tests/store/fuzz_base.h5, the run file that the store fuzz test damages.

tests/cli/store_fuzz.sh (ctest cli_store_fuzz) does not train: it cuts its corpus from the
committed tests/store/fuzz_base.h5, so that a seed flips the same bytes on every machine and every
run.  This script makes that file once; commit the result.  Regenerate it only when the run-file
schema changes (docs/FORMAT.md), then rerun the fuzz and commit both:

    /usr/bin/python3 tests/store/make_fuzz_base.py build/xpand            # writes tests/store/fuzz_base.h5
    /usr/bin/python3 tests/store/make_fuzz_base.py build/xpand OUT.h5     # somewhere else
    sha256sum tests/store/fuzz_base.h5                                    # run it twice: same digest

What it does:
  1. `xpand train` of a tiny run (teacher data, mlp [16, 24, 12, 4], expanded factor 2, 3 epochs,
     snapshots every 10 steps with factors, threads: 1) in a scratch directory, `--out out`.
     Training on one thread is deterministic; the run file still holds what differs between runs.
  2. Every value that depends on when, where or by which build it ran is set to a fixed value:
     start_time, end_time, wall_seconds, hostname(s), git_commit, the library versions, blas_core,
     output.dir in the config, and the timing and memory columns of /metrics/train.  An attribute
     or column this script does not know stops it: decide whether it is deterministic first.
  3. A fresh file is written with h5py (libver latest, so SWMR-read opens it; no object time
     stamps; attributes, groups and datasets in sorted order; each dataset with the trained one's
     type, extent and creation properties: chunks, maximum shape, filters such as Fletcher-32),
     so that its bytes depend only on its content.  /checkpoint stays the
     external link a run file has (../checkpoints/<run_id>.h5); it dangles, as in a run file copied
     without its checkpoint, and no fuzzed command follows it.
The result is checked: `xpand inspect`, `inspect --json` and `collapse` must accept it.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

import h5py
import numpy as np

CONFIG = """\
name: tiny
seed: 3
threads: 1
data: {name: teacher, teacher_inputs: 16, teacher_classes: 4, train_size: 500, test_size: 200, batch_size: 64}
model: {kind: mlp, widths: [16, 24, 12, 4]}
param: {kind: expanded, factor: 2}
train: {optimizer: adam, lr: 0.01, epochs: 3, eval_every: 5}
output: {snapshot_every: 10, snapshot_factors: true}
"""

# Root attributes set to fixed values (they record the time, the machine or the build).
FIXED_ATTRS = {
    "start_time": "2000-01-01T00:00:00Z",
    "end_time": "2000-01-01T00:00:01Z",
    "wall_seconds": 1.0,
    "hostname": "host",
    "hostnames": ["host"],
    "git_commit": "000000000000",
    "xpand_version": "0.0.0",
    "torch_version": "0.0.0",
    "mpi_version": "none",
    "nccl_version": "",
    "hdf5_version": "0.0.0",
    "blas_core": "",
}
# Root attributes that follow from the config alone (checked by training twice).
STABLE_ATTRS = {
    "schema_version", "run_id", "name", "status", "error", "config", "axes", "total_steps", "steps_per_epoch",
    "steps", "world_size", "ranks_per_run", "world_ranks", "devices", "device", "threads", "seed", "dist_backend",
    "dist_cut", "grad_accum", "dataset_source", "resumes", "resumed_from_step", "trainable_params",
}
# /metrics/train columns set to fixed values; every other column is deterministic.
FIXED_COLUMNS = {"time_step": 0.001, "time_compute": 0.001, "mem_peak": 100 << 20}
STABLE_COLUMNS = {
    "train": {"step", "epoch", "samples", "loss", "lr", "grad_norm", "time_comm", "time_comm_exposed", "comm_bytes"},
    "eval": {"step", "train_loss", "train_acc", "test_loss", "test_acc", "collapse_error"},
}


def die(msg):
    print(f"make_fuzz_base: {msg}", file=sys.stderr)
    sys.exit(1)


def train(xpand, scratch):
    with open(os.path.join(scratch, "tiny.yaml"), "w") as f:
        f.write(CONFIG)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([xpand, "train", "tiny.yaml", "--out", "out"], cwd=scratch, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        die(f"xpand train exited {proc.returncode}:\n{proc.stdout.decode(errors='replace')}")
    runs = sorted(os.listdir(os.path.join(scratch, "out", "runs")))
    if len(runs) != 1:
        die(f"expected one run file, found {runs}")
    return os.path.join(scratch, "out", "runs", runs[0])


def fixed_config(text):
    return re.sub(r"(?m)^(output:\n(?:  .*\n)*?  dir: ).*$", r"\1out", text)


def root_attrs(src):
    """(name, value, dtype) of every root attribute, in name order, with fixed values put in."""
    out = []
    for name in sorted(src.attrs.keys()):
        dtype = src.attrs.get_id(name).dtype
        value = src.attrs[name]
        if name in FIXED_ATTRS:
            value = FIXED_ATTRS[name]
            if isinstance(value, list):
                value = np.array(value, dtype=dtype)
        elif name == "config":
            value = fixed_config(value)
        elif name not in STABLE_ATTRS:
            die(f"unknown root attribute {name!r} = {value!r}: add it to FIXED_ATTRS or STABLE_ATTRS")
        out.append((name, value, dtype))
    return out


def new_group(parent, name):
    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    gcpl.set_obj_track_times(False)
    return h5py.Group(h5py.h5g.create(parent.id, name.encode(), gcpl=gcpl))


def copy_attrs(src, dst):
    for name in sorted(src.attrs.keys()):
        dst.attrs.create(name, src.attrs[name], dtype=src.attrs.get_id(name).dtype)


def copy_tree(src, dst, path=""):
    """Groups and datasets of src below dst, sorted by name; links as links."""
    for name in sorted(src.keys()):
        full = f"{path}/{name}"
        link = src.get(name, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            dst[name] = h5py.ExternalLink(link.filename, link.path)
            continue
        if isinstance(link, h5py.SoftLink):
            dst[name] = h5py.SoftLink(link.path)
            continue
        obj = src[name]
        if isinstance(obj, h5py.Group):
            copy_tree(obj, new_group(dst, name), full)
        else:
            data = obj[()]
            if full.startswith("/metrics/"):
                table, column = full.split("/")[2:4]
                if table == "train" and column in FIXED_COLUMNS:
                    data = np.full(obj.shape, FIXED_COLUMNS[column], dtype=obj.dtype)
                elif column not in STABLE_COLUMNS.get(table, ()):
                    die(f"unknown metrics column {full}: add it to FIXED_COLUMNS or STABLE_COLUMNS")
            # The trained dataset's own creation properties (layout, chunks, filters such as
            # Fletcher-32, fill value), its type and its extent, without the time stamps.
            dcpl = obj.id.get_create_plist()
            dcpl.set_obj_track_times(False)
            dsid = h5py.h5d.create(dst.id, name.encode(), obj.id.get_type(), obj.id.get_space(), dcpl=dcpl)
            if obj.size:
                h5py.Dataset(dsid)[()] = data
        copy_attrs(obj, dst[name])


def verify(src, dst):
    """The rewritten file has the trained one's objects, types, shapes and dataset properties."""
    for name in src.attrs.keys():
        a, b = src.attrs.get_id(name), dst.attrs.get_id(name)
        if a.get_type() != b.get_type() or a.shape != b.shape:
            die(f"attribute {name!r} changed its type or shape")

    def same(name, obj):
        other = dst.get(name)
        if type(other) is not type(obj):
            die(f"{name}: missing or of another kind in the rewritten file")
        if isinstance(obj, h5py.Dataset):
            props = lambda d: (d.dtype, d.shape, d.maxshape, d.chunks, d.fletcher32, d.compression, d.shuffle,
                               d.id.get_create_plist().get_layout(), d.id.get_create_plist().get_nfilters())
            if props(obj) != props(other):
                die(f"{name}: dataset properties differ: {props(obj)} != {props(other)}")
            if not name.startswith("metrics/train/") or name.split("/")[-1] not in FIXED_COLUMNS:
                if not np.array_equal(obj[()], other[()], equal_nan=obj.dtype.kind == "f"):
                    die(f"{name}: data differ")
        for attr in obj.attrs.keys():
            if not np.array_equal(obj.attrs[attr], other.attrs[attr]):
                die(f"{name}: attribute {attr} differs")

    src.visititems(same)


def rewrite(src_path, out_path):
    tmp = out_path + ".tmp"
    if os.path.exists(tmp):
        os.remove(tmp)
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl.set_obj_track_times(False)
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_LATEST, h5py.h5f.LIBVER_LATEST)
    with h5py.File(src_path, "r", swmr=True) as src:
        attrs = root_attrs(src)
        with h5py.File(h5py.h5f.create(tmp.encode(), h5py.h5f.ACC_EXCL, fcpl=fcpl, fapl=fapl)) as dst:
            for name, value, dtype in attrs:
                dst.attrs.create(name, value, dtype=dtype)
            copy_tree(src, dst)
            verify(src, dst)
    os.replace(tmp, out_path)


def check(xpand, path, scratch):
    for args in (["inspect", path], ["inspect", path, "--json"],
                 ["collapse", path, "-o", os.path.join(scratch, "model.h5")]):
        proc = subprocess.run([xpand] + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if proc.returncode != 0:
            die(f"`xpand {' '.join(args[:1] + args[2:])}` rejects the result (exit {proc.returncode}): "
                f"{proc.stderr.decode(errors='replace').strip()}")
    with h5py.File(path, "r", swmr=True) as f:
        assert f.attrs["status"] == "completed"


def main(argv):
    if len(argv) not in (1, 2):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 1
    xpand = os.path.abspath(argv[0])
    here = os.path.dirname(os.path.abspath(__file__))
    out = os.path.abspath(argv[1]) if len(argv) == 2 else os.path.join(here, "fuzz_base.h5")
    if not os.access(xpand, os.X_OK):
        die(f"{xpand} is not an executable")
    scratch = tempfile.mkdtemp(prefix="xpand-fuzz-base-")
    try:
        rewrite(train(xpand, scratch), out)
        check(xpand, out, scratch)
    finally:
        shutil.rmtree(scratch)
    print(f"{out}: {os.path.getsize(out)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
