#!/usr/bin/python3
"""Fuzz test for xpand's run-file readers (`xpand inspect`, `inspect --json`, `--csv`, `collapse`).

Run files outlive the program that wrote them: they get copied half-way, truncated by a full disk,
hit by bit rot, written by other tools, or are not xpand files at all (someone's HDF5 data set, a
YAML file named .h5).  Whatever the file, the readers must end with a one-line `xpand: ...` message
on stderr and exit 1 or 2; they must never crash (signal, uncaught exception -> abort), hang,
quietly accept a file that is not a run file, or print text that is not UTF-8.  This script cuts a
corpus of bad inputs from one good run file and checks exactly that:

  truncation  the good file cut at offsets spread over its whole size (0, 1, 7, 8, ..., size-1);
              a truncated HDF5 file is never valid, so the readers must reject it.
  byteflip    copies with 1, 8 or 64 bytes xor-ed, a 512-byte block zeroed or a 4096-byte block
              overwritten with random data, partly inside the first 4 KiB (superblock and root
              metadata) and partly anywhere in the file.  A flip inside raw data leaves a valid
              file, so exit 0 is fine here; a non-zero exit must still come with a message.
  foreign     HDF5 files made with h5py: empty, unrelated data, wrong attribute types, newer
              schema, missing attributes, malformed metrics tables and snapshots, unwritten huge
              datasets, link loops, dangling external links, compound/enum/array attributes.
              Most are derived from the good file with exactly one defect, so the readers get past
              their first checks and meet the defect.  These must be rejected, except by a command
              that never reads the damaged part (collapse ignores the metrics and the snapshots it
              does not collapse) and for two odd-but-valid files (see FOREIGN_RECIPES).
  attr        one attribute of the good file damaged, each a file of its own; exit 0 is fine
              (the attribute may be one the readers do not need), a non-zero exit needs a message:
                str-raw   bytes overwritten inside a string attribute's value where it lies in the
                          file (HDF5's global heap, which has no checksum): invalid UTF-8 (overlong
                          0xC0 0x80, surrogates 0xED 0xA0 0x80, 0xF4 0x90 above U+10FFFF, lone
                          0xFF/0xFE/0x80, cut sequences), NUL, control characters, quotes, xor
                str-h5    strings written with h5py: the same sequences in run_id, name, status,
                          config, hostnames, axes and axis values, attribute, column and layer
                          names; embedded NUL in fixed-length UTF-8 strings; a 1 MiB value
                num       numeric attributes with one bit flipped or set to NaN, inf, 0, -1,
                          INT64_MIN/MAX (root and snapshot attributes)
                type      a string where a number belongs and the reverse, arrays where scalars
                          belong, empty arrays, null dataspaces, fixed-length strings, non-YAML config
                del       every root attribute deleted in turn
  non-hdf5    empty, text and random files, an HDF5 signature followed by garbage, a directory
              and a dangling symlink named like a run file; all must be rejected.

Commands: byteflip files, damaged strings and foreign files that may be accepted get `inspect
FILE` and `inspect FILE --json`; the other files (damage that both forms meet alike while reading)
one of the two, in turn; damaged strings also `inspect FILE --csv` and, where the string shows in
the table of runs, `inspect DIR --csv` on a directory holding only that file; every third file
(every sixth attr file) `collapse FILE -o WORK_DIR/out/...`.  Each command has a 30 s timeout.  Verdicts:
  CRASH  killed by a signal (return code < 0, or > 128 as a shell reports it)
  HANG   still running after the timeout (killed)
  FAIL   a must-reject input accepted (exit 0), an exit code other than 0/1/2, a non-zero exit
         without an `xpand:` line on stderr, stdout that is not strict UTF-8 after exit 0,
         `inspect --json` exiting 0 with output that json.loads rejects, or `inspect`'s table
         holding a raw control character (C0 but tab and newline, DEL, C1: docs/FORMAT.md says the
         tables show them as \\xNN).
Children run under prlimit with a 4 GiB address-space limit (--mem-limit-gib), so that a reader
trusting a huge declared size fails with an allocation error instead of eating the machine's
memory, a 1 GiB file-size limit (runaway output is a FAIL, not a full disk) and no core files.

Seeds.  The corpus is a function of the good file, the seed and --count only (no time, path, hash
or directory order enters it); `corpus ... sha256` lines print digests of it, so two runs can be
compared (tests/cli/store_fuzz.sh does, in CI).  The good file in CI is the committed
tests/store/fuzz_base.h5 (tests/store/make_fuzz_base.py).
  --seed 1          one fixed seed (default); --seed 1,2,3 several, each its own corpus
  --seed random     a seed drawn from os.urandom; --seed random:4 four of them.  Exploring mode:
                    every seed is printed before its corpus is built, and a failure prints the
                    command that replays it (--seed S --count N).

usage: /usr/bin/python3 tests/store/fuzz_inspect.py XPAND GOOD_RUN_FILE WORK_DIR
            [--count N] [--seed S|S,S..|random|random:K] [--jobs J] [--corpus-only] [--only REGEX]
  e.g. /usr/bin/python3 tests/store/fuzz_inspect.py build/xpand tests/store/fuzz_base.h5 /tmp/fuzz \\
            --seed random --count 2000 --jobs 2
Exit 0 when every command passed (last line `fuzz: N passed, 0 failed`), 1 otherwise.
"""
import argparse
import collections
import concurrent.futures
import ctypes
import hashlib
import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

try:
    import h5py
    import numpy as np
except ImportError as e:  # e.g. a venv python on PATH without h5py
    print(f"fuzz_inspect.py: cannot import h5py/numpy ({e}); run it with /usr/bin/python3", file=sys.stderr)
    sys.exit(1)

TIMEOUT_S = 30
MIN_PER_CATEGORY = {"truncation": 40, "byteflip": 40, "foreign": 30, "attr": 60, "non-hdf5": 10}
MUST_REJECT = {"truncation", "non-hdf5", "foreign"}  # byteflip and attr may legitimately stay valid
STDOUT_LIMIT = 64 << 20  # larger output is not checked
HUGE = 10**9  # declared length of "huge" unwritten datasets
FSIZE_LIMIT = 1 << 30  # a command writing more (stdout or a file) gets SIGXFSZ: output runs away


def parse_seeds(text):
    """--seed: '1', '1,2,3', 'random' or 'random:K' -> (seeds, drawn at random)."""
    if text == "random" or text.startswith("random:"):
        k = int(text.split(":", 1)[1]) if ":" in text else 1
        if k < 1:
            raise argparse.ArgumentTypeError("random:K needs K >= 1")
        return [int.from_bytes(os.urandom(4), "big") for _ in range(k)], True
    try:
        seeds = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seed {text!r}: want an integer, a comma list, random or random:K")
    return seeds, False


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("xpand", help="the xpand binary")
    p.add_argument("good", help="a valid xpand run file (.h5), e.g. tests/store/fuzz_base.h5")
    p.add_argument("work_dir", help="scratch directory (emptied first)")
    p.add_argument("--count", type=int, default=200, help="generate at least this many files per seed (default 200)")
    p.add_argument("--seed", type=parse_seeds, default=([1], False),
                   help="corpus seed(s): S, S,S,..., random or random:K (default 1)")
    p.add_argument("--jobs", type=int, default=2, help="commands run in parallel (default 2)")
    p.add_argument("--mem-limit-gib", type=float, default=4,
                   help="address-space limit per command in GiB, 0 for none (default 4)")
    p.add_argument("--corpus-only", action="store_true", help="build the corpus and print its digests; run nothing")
    p.add_argument("--only", metavar="REGEX", help="run only the corpus files whose name matches (the corpus is "
                                                   "built in full, so names are those of the full run)")
    args = p.parse_args(argv)
    if args.jobs < 1 or args.count < 0:
        p.error("--jobs must be >= 1 and --count >= 0")
    return args


# --- corpus: truncations and byte flips ----------------------------------------------------------

def truncation_offsets(size, rng, count):
    """Offsets to cut at: fixed small ones, an even spread over the file, a few random, the end."""
    fixed = [0, 1, 7, 8, 9, 16, 40, 48, 96, 100, 128, 256, 512, 1000, 1024, 2048, 4095, 4096, 4097, 8192]
    n_spread = max(16, count // 15)
    spread = [size * k // (n_spread + 1) for k in range(1, n_spread + 1)]
    rand = [rng.randrange(size) for _ in range(max(4, count // 60))]
    tail = [size - 4096, size - 512, size - 8, size - 1]
    return sorted({o for o in fixed + spread + rand + tail if 0 <= o < size})


def make_truncations(good_bytes, corpus, rng, count):
    entries = []
    for off in truncation_offsets(len(good_bytes), rng, count):
        entries.append(write_entry(corpus, "truncation", f"cut{off}", good_bytes[:off]))
    return entries


FLIP_KINDS = [  # (name, block length, how the block is changed)
    ("xor1", 1, "xor"),
    ("xor8", 8, "xor"),
    ("xor64", 64, "xor"),
    ("zero512", 512, "zero"),
    ("rand4096", 4096, "random"),
]


def flip_offsets(size, length, n, rng):
    """n block offsets: a third inside the first 4 KiB (HDF5 metadata), the rest one per stratum."""
    last = max(size - length, 0)
    head = [rng.randrange(min(4096, last + 1)) for _ in range(n // 3)]
    strata = n - len(head)
    spread = [min(last, rng.randrange(size * k // strata, max(size * (k + 1) // strata, size * k // strata + 1)))
              for k in range(strata)]
    return head + spread


def flipped(good_bytes, off, length, how, rng):
    data = bytearray(good_bytes)
    end = min(off + length, len(data))
    for i in range(off, end):
        if how == "xor":
            data[i] ^= rng.randrange(1, 256)
        elif how == "zero":
            data[i] = 0
        else:
            data[i] = rng.randrange(256)
    return bytes(data)


def make_byteflips(good_bytes, corpus, rng, n_total):
    entries = []
    per_kind = -(-n_total // len(FLIP_KINDS))
    for name, length, how in FLIP_KINDS:
        for off in flip_offsets(len(good_bytes), length, per_kind, rng):
            data = flipped(good_bytes, off, length, how, rng)
            entries.append(write_entry(corpus, "byteflip", f"{name}-at{off}", data))
    return entries


# --- corpus: foreign HDF5 files ------------------------------------------------------------------
# A recipe is (name, builder, may_accept).  scratch_* builders write a new file at a path; all other
# builders get an r+ h5py.File on a copy of the good file and damage it in exactly one place.
# may_accept names the commands allowed to exit 0 on the result: a file that is unusual but still a
# valid run file (ANY), or a defect in a part that command does not read (collapse never reads the
# metrics, and reads only the snapshot it collapses).  Groups and files are made without object
# time stamps (new_group, new_file), so that a recipe gives the same bytes whenever it runs.

COMMANDS = ("inspect", "inspect --json", "inspect --csv", "inspect DIR --csv", "collapse")
STRICT = frozenset()
ANY = frozenset(COMMANDS)
NOT_COLLAPSE = frozenset({"collapse"})  # collapse may succeed: the defect is elsewhere

COMPOUND = np.dtype([("code", "i4"), ("text", "S12")])
ENUM = h5py.enum_dtype({"running": 0, "completed": 1, "failed": 2}, basetype="i1")


def new_file(path, libver="latest"):
    """An h5py file for writing whose root group has no time stamps."""
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl.set_obj_track_times(False)
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    low = h5py.h5f.LIBVER_LATEST if libver == "latest" else h5py.h5f.LIBVER_EARLIEST
    fapl.set_libver_bounds(low, h5py.h5f.LIBVER_LATEST)
    return h5py.File(h5py.h5f.create(os.fsencode(path), h5py.h5f.ACC_TRUNC, fcpl=fcpl, fapl=fapl))


def new_group(f, path):
    """f.create_group(path) (parents must exist) without time stamps."""
    parent, _, name = path.rstrip("/").rpartition("/")
    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    gcpl.set_obj_track_times(False)
    h5py.h5g.create((f[parent] if parent else f).id, name.encode("utf-8", "surrogateescape"), gcpl=gcpl)
    return f[path]


def scratch_empty(path):
    new_file(path).close()


def scratch_unrelated(path):
    with new_file(path) as f:
        f["images"] = np.random.default_rng(0).random((64, 8, 8))
        f["labels"] = np.arange(64, dtype="i4")
        f.attrs["title"] = "some other program's data"


def scratch_link_loop(path):
    with new_file(path) as f:
        f["a"] = h5py.SoftLink("/b")
        f["b"] = h5py.SoftLink("/a")


def scratch_external_missing(path):
    with new_file(path) as f:
        f["metrics"] = h5py.ExternalLink("no-such-file.h5", "/metrics")
        f["snapshots"] = h5py.ExternalLink("no-such-file.h5", "/snapshots")


def scratch_attrs_only(path):  # a run file before its first metrics row and snapshot
    with new_file(path) as f:
        f.attrs["schema_version"] = np.int64(2)
        f.attrs["run_id"] = "attrs-only"
        f.attrs["status"] = "completed"
        f.attrs["config"] = "name: attrs-only\n"


def scratch_old_format(path):  # the trainer's layout, default (oldest) file format, text schema
    with new_file(path, libver="earliest") as f:
        f.attrs["schema_version"] = "two"
        new_group(f, "metrics")
        new_group(f, "metrics/train")["step"] = np.arange(3)
        new_group(f, "snapshots")


def set_attr(f, name, value, dtype=None):
    if name in f.attrs:
        del f.attrs[name]
    f.attrs.create(name, value, dtype=dtype)


def delete(f, path):
    if path in f.attrs:
        del f.attrs[path]
    else:
        del f[path]


def hdf5_library():
    """The HDF5 shared library h5py loaded (ctypes), found in this process's memory map; or None."""
    with open("/proc/self/maps") as maps:
        paths = sorted({line.split(None, 5)[5].strip() for line in maps if len(line.split(None, 5)) == 6})
    for path in paths:
        name = os.path.basename(path)
        if name.startswith("libhdf5") and "hl" not in name:
            try:
                return ctypes.CDLL(path)
            except OSError:
                pass
    return None


def commit_type(f, path, dtype):
    """f[path] = dtype (a named datatype) without time stamps.  h5py gives no datatype creation
    property list, so H5Tcommit2 is called through ctypes (plain h5py when that fails)."""
    parent, _, name = path.rpartition("/")
    lib = hdf5_library()
    if lib is None:
        f[path] = dtype
        return
    hid = ctypes.c_int64
    lib.H5Pcreate.argtypes, lib.H5Pcreate.restype = [hid], hid
    lib.H5Pset_obj_track_times.argtypes = [hid, ctypes.c_uint]
    lib.H5Pclose.argtypes = [hid]
    lib.H5Tcommit2.argtypes = [hid, ctypes.c_char_p, hid, hid, hid, hid]
    tcpl = lib.H5Pcreate(hid.in_dll(lib, "H5P_CLS_DATATYPE_CREATE_ID_g").value)
    tid = h5py.h5t.py_create(dtype).copy()
    group = f[parent or "/"]  # held: its id must stay open during the call
    try:
        if tcpl < 0 or lib.H5Pset_obj_track_times(tcpl, 0) < 0 or \
                lib.H5Tcommit2(group.id.id, name.encode(), tid.id, 0, tcpl, 0) < 0:
            raise RuntimeError(f"H5Tcommit2 {path} failed")
    finally:
        if tcpl >= 0:
            lib.H5Pclose(tcpl)


def replace(f, path, link=None, **dataset_args):
    """Puts a dataset (dataset_args), a link (h5py.SoftLink/ExternalLink) or a named datatype
    (np.dtype) at path."""
    del f[path]
    if link is None:
        f.create_dataset(path, **dataset_args)
    elif isinstance(link, np.dtype):
        commit_type(f, path, link)
    else:
        f[path] = link


def vlen_scalar(values):
    v = np.empty((), dtype=object)
    v[()] = values
    return v


def rows(f, table):
    return f[f"metrics/{table}/step"].shape[0]


def snapshot(f, which):
    """Path of the first (which=0) or last (which=-1) snapshot group."""
    return "snapshots/" + sorted(f["snapshots"].keys())[which]


def weight(f):
    """Path of the first layer's weight in the last snapshot (the one collapse reads)."""
    snap = snapshot(f, -1)
    return f"{snap}/{sorted(f[snap].keys())[0]}/weight"


def huge_column(f, path, dtype="f8"):
    replace(f, path, shape=(HUGE,), maxshape=(None,), chunks=(4096,), dtype=dtype)


def metrics_huge_all(f):
    for table in ("train", "eval"):
        for name in sorted(f[f"metrics/{table}"].keys()):
            huge_column(f, f"metrics/{table}/{name}", "i8" if name == "step" else "f8")


def soft_loop(f, a, b):
    """a -> b and b -> a, replacing whatever a held."""
    if a in f:
        del f[a]
    f[a] = h5py.SoftLink("/" + b)
    f[b] = h5py.SoftLink("/" + a)


def snapshots_non_numeric(f):
    for k in sorted(f["snapshots"].keys()):
        f["snapshots"].move(k, f"step-{k}")


def snapshots_hard_link_cycle(f):
    f["snapshots/99999999"] = f["snapshots"]  # a group that contains itself


FOREIGN_RECIPES = [
    # files from scratch
    ("empty-hdf5", scratch_empty, STRICT),
    ("unrelated-datasets", scratch_unrelated, STRICT),
    ("root-link-loop", scratch_link_loop, STRICT),
    ("external-links-missing", scratch_external_missing, STRICT),
    ("attrs-only-no-groups", scratch_attrs_only, ANY),
    ("old-format-schema-text", scratch_old_format, STRICT),
    # root attributes
    ("status-int", lambda f: set_attr(f, "status", np.int64(1)), STRICT),
    ("status-missing", lambda f: delete(f, "status"), STRICT),
    ("status-enum", lambda f: set_attr(f, "status", 1, dtype=ENUM), STRICT),
    ("status-compound", lambda f: set_attr(f, "status", np.array((1, b"completed"), COMPOUND), COMPOUND), STRICT),
    ("status-two-strings", lambda f: set_attr(f, "status", np.array([b"completed", b"failed"])), STRICT),
    ("schema-string", lambda f: set_attr(f, "schema_version", "2"), STRICT),
    ("schema-99", lambda f: set_attr(f, "schema_version", np.int64(99)), STRICT),
    ("schema-negative", lambda f: set_attr(f, "schema_version", np.int64(-1)), STRICT),
    ("schema-missing", lambda f: delete(f, "schema_version"), STRICT),
    ("schema-null-space", lambda f: set_attr(f, "schema_version", h5py.Empty("i8")), STRICT),
    ("schema-array-type", lambda f: set_attr(f, "schema_version", np.array([2, 2, 2]), np.dtype(("i8", (3,)))), STRICT),
    ("schema-compound", lambda f: set_attr(f, "schema_version", np.array((2, b"v2"), COMPOUND), COMPOUND), STRICT),
    ("run-id-missing", lambda f: delete(f, "run_id"), STRICT),
    ("run-id-vlen-ints", lambda f: set_attr(f, "run_id", vlen_scalar(np.arange(4)), h5py.vlen_dtype("i8")), STRICT),
    ("run-id-not-utf8", lambda f: set_attr(f, "run_id", np.bytes_(b"run\xff\xfe\"\\\x01id")), ANY),
    ("config-int", lambda f: set_attr(f, "config", np.int64(7)), STRICT),
    # metrics
    ("metrics-column-2d",
     lambda f: replace(f, "metrics/train/loss", data=np.zeros((rows(f, "train"), 2))), NOT_COLLAPSE),
    ("metrics-column-string",
     lambda f: replace(f, "metrics/train/loss", data=np.array([b"x"] * rows(f, "train"))), NOT_COLLAPSE),
    ("metrics-step-string",
     lambda f: replace(f, "metrics/eval/step", data=np.array([b"5"] * rows(f, "eval"))), NOT_COLLAPSE),
    ("metrics-lengths-differ", lambda f: f["metrics/eval/test_acc"].resize((1,)), NOT_COLLAPSE),
    ("metrics-column-scalar", lambda f: replace(f, "metrics/train/loss", data=np.float64(1.5)), NOT_COLLAPSE),
    ("metrics-column-null-space", lambda f: replace(f, "metrics/train/loss", data=h5py.Empty("f8")), NOT_COLLAPSE),
    ("metrics-column-named-type", lambda f: replace(f, "metrics/train/loss", link=np.dtype("f8")), NOT_COLLAPSE),
    ("metrics-train-dataset", lambda f: replace(f, "metrics/train", data=np.arange(10)), NOT_COLLAPSE),
    ("metrics-dataset", lambda f: replace(f, "metrics", data=np.arange(10)), NOT_COLLAPSE),
    ("metrics-external-missing",
     lambda f: replace(f, "metrics", link=h5py.ExternalLink("no-such-file.h5", "/metrics")), NOT_COLLAPSE),
    ("metrics-column-soft-loop", lambda f: soft_loop(f, "metrics/train/loss", "metrics/train/loss_b"), NOT_COLLAPSE),
    ("metrics-huge-column", lambda f: huge_column(f, "metrics/train/loss"), NOT_COLLAPSE),
    ("metrics-huge-all-columns", metrics_huge_all, NOT_COLLAPSE),
    # snapshots
    ("snapshot-first-as-dataset", lambda f: replace(f, snapshot(f, 0), data=np.zeros((4, 4))), NOT_COLLAPSE),
    ("snapshot-last-as-dataset", lambda f: replace(f, snapshot(f, -1), data=np.zeros((4, 4))), STRICT),
    ("weight-string", lambda f: replace(f, weight(f), data=np.array([b"w"] * 6)), STRICT),
    ("weight-3d", lambda f: replace(f, weight(f), data=np.zeros((2, 3, 4))), STRICT),
    ("weight-1d", lambda f: replace(f, weight(f), data=np.zeros(12)), STRICT),
    ("weight-missing", lambda f: delete(f, weight(f)), STRICT),
    ("weight-huge-unwritten",
     lambda f: replace(f, weight(f), shape=(10**6, 10**6), chunks=(64, 64), dtype="f8"), STRICT),
    ("snapshot-no-layers", lambda f: new_group(f, "snapshots/99999999"), STRICT),
    ("snapshots-non-numeric", snapshots_non_numeric, STRICT),
    ("snapshots-dataset", lambda f: replace(f, "snapshots", data=np.arange(3)), STRICT),
    ("snapshot-soft-loop", lambda f: soft_loop(f, "snapshots/99999998", "snapshots/99999999"), STRICT),
    ("snapshots-hard-link-cycle", snapshots_hard_link_cycle, STRICT),
]
# Root attributes whose absence FOREIGN_RECIPES already covers (the readers must reject those).
DELETED_BY_FOREIGN = {"status", "schema_version", "run_id"}


def derived_entry(good_path, corpus, category, name, build, may_accept, **flags):
    """A corpus file: a copy of the good file changed by build(h5py.File r+)."""
    entry = new_entry(corpus, category, name, may_accept, **flags)
    shutil.copyfile(good_path, entry["path"])
    with h5py.File(entry["path"], "r+") as f:
        build(f)
    return entry


def make_foreign(good_path, corpus):
    entries = []
    for name, build, may_accept in FOREIGN_RECIPES:
        if build.__name__.startswith("scratch_"):
            entry = new_entry(corpus, "foreign", name, may_accept)
            build(entry["path"])
            entries.append(entry)
        else:
            entries.append(derived_entry(good_path, corpus, "foreign", name, build, may_accept))
    return entries


# --- corpus: damaged attributes ------------------------------------------------------------------

# Byte sequences for string values: invalid UTF-8 that a reader must not pass on as text, and valid
# text that needs escaping (JSON, CSV, a terminal).
BAD_TEXT = [
    ("overlong-nul", b"\xc0\x80"),
    ("overlong-slash", b"\xe0\x80\xaf"),
    ("surrogate", b"\xed\xa0\x80"),
    ("above-max", b"\xf4\x90\x80\x80"),
    ("lone-ff", b"\xff"),
    ("lone-fe", b"\xfe"),
    ("continuation", b"\x80\xbf"),
    ("cut-sequence", b"\xe2\x82"),
    ("nul", b"\x00"),
    ("controls", b"\x01\x1b[2J\x07\x08\x7f"),
    ("c1-control", b"\xc2\x85\xc2\x9b"),
    ("json-specials", b"\"\\\n\r\t,"),
    ("bidi-override", "\u202e\u2028".encode()),
]
TABLE_ATTRS = {"run_id", "status", "error", "axes"}  # strings that `inspect DIR` shows in its table


def root_attr_names(f):
    return sorted(f.attrs.keys())


def is_vlen_str(f, name):
    t = f.attrs.get_id(name).get_type()
    return isinstance(t, h5py.h5t.TypeStringID) and t.is_variable_str()


def string_spans(good_path, good_bytes):
    """[(attribute, offset, length)]: where the bytes of each non-empty variable-length string
    attribute value lie in the file.  Such a value is a global-heap object, preceded by its 8-byte
    little-endian size.  Equal values of several attributes are separate objects: the k-th of them
    in the file is taken for the k-th attribute by name (the order tests/store/make_fuzz_base.py
    writes them in)."""
    spans, seen = [], set()
    with h5py.File(good_path, "r") as f:
        for name in root_attr_names(f):
            if not is_vlen_str(f, name):
                continue
            value = f.attrs[name]
            for text in ([value] if isinstance(value, str) else list(np.asarray(value).ravel())):
                raw = text.encode("utf-8", "surrogateescape")
                if not raw:
                    continue
                i = good_bytes.find(raw)
                while i >= 0:
                    if i >= 8 and good_bytes[i - 8:i] == len(raw).to_bytes(8, "little") and i not in seen:
                        seen.add(i)
                        spans.append((name, i, len(raw)))
                        break
                    i = good_bytes.find(raw, i + 1)
    return spans


def make_string_flips(good_bytes, spans, corpus, rng, n):
    """n copies, each with a BAD_TEXT sequence (or xor-ed bytes) written over part of one string
    value.  Spans are visited in turn and the sequences rotate, so a few files cover every value."""
    kinds = BAD_TEXT + [("xor", None)]
    entries = []
    for k in range(n if spans else 0):
        name, off, length = spans[k % len(spans)]
        kind, seq = kinds[(k + k // len(spans)) % len(kinds)]
        data = bytearray(good_bytes)
        if seq is None:
            for _ in range(min(length, 1 + rng.randrange(3))):
                data[off + rng.randrange(length)] ^= rng.randrange(1, 256)
        else:
            seq = seq[:length]
            at = off + (length - len(seq) if kind == "cut-sequence" else rng.randrange(length - len(seq) + 1))
            data[at:at + len(seq)] = seq
        entries.append(write_entry(corpus, "attr", f"str-raw-{name}-{kind}", bytes(data), strings=True,
                                   table=name in TABLE_ATTRS))
    return entries


def utf8_attr(f, name, raw):
    """Writes a string attribute holding raw bytes (or a list of them) as they are, UTF-8 character
    set: variable-length (h5py does not check the bytes), or fixed-length when they hold NUL, which
    variable-length strings cannot."""
    items = raw if isinstance(raw, list) else [raw]
    if any(b"\0" in r for r in items):
        fixed_utf8_attr(f, name, raw)
        return
    value = np.array(raw, dtype=h5py.string_dtype("utf-8"))
    set_attr(f, name, value, dtype=h5py.string_dtype("utf-8"))


def fixed_utf8_attr(f, name, raw, pad=h5py.h5t.STR_NULLPAD):
    """A fixed-length string attribute (scalar, or 1-D for a list) with the UTF-8 character set."""
    if name in f.attrs:
        del f.attrs[name]
    items = raw if isinstance(raw, list) else [raw]
    size = max([1] + [len(r) for r in items])
    t = h5py.h5t.C_S1.copy()
    t.set_size(size)
    t.set_cset(h5py.h5t.CSET_UTF8)
    t.set_strpad(pad)
    space = h5py.h5s.create_simple((len(items),)) if isinstance(raw, list) else h5py.h5s.create(h5py.h5s.SCALAR)
    aid = h5py.h5a.create(f.id, name if isinstance(name, bytes) else name.encode(), t, space)
    aid.write(np.array(raw, dtype=f"S{size}"), mtype=t)


def spliced(f, name, seq):
    """The attribute's current value with seq put in its middle."""
    raw = f.attrs[name].encode("utf-8", "surrogateescape")
    return raw[:len(raw) // 2] + seq + raw[len(raw) // 2:]


def with_axes(f, values):
    """Makes the run a swept one: axes = the keys of values, one attribute per axis.  Keys and
    string values are bytes (passed to HDF5 as they are) or str."""
    keys = [k if isinstance(k, bytes) else k.encode() for k in values]
    utf8_attr(f, "axes", keys)
    for key, value in zip(keys, values.values()):
        if isinstance(value, bytes):
            utf8_attr(f, key, value)
        else:
            set_attr(f, key, value, dtype=getattr(value, "dtype", None))


def raw_attr(f, raw_name, value):
    """An attribute whose name is raw bytes (h5py passes them through)."""
    f.attrs.create(raw_name, value)


def rename(f, path, raw_name):
    """Moves the object at path to raw_name (bytes, e.g. not UTF-8) in the same group."""
    parent = path.rpartition("/")[0]
    f[parent].id.move(path.rpartition("/")[2].encode(), raw_name)


def last_layer_group(f):
    return f"{snapshot(f, -1)}/{sorted(f[snapshot(f, -1)].keys())[0]}"


H5_STRING_TARGETS = ["run_id", "name", "status", "error", "config", "axis-value", "hostname", "hostnames",
                     "dataset_source", "start_time", "git_commit", "devices", "blas_core", "device"]


def h5_string(target, seq):
    """A builder writing seq into the target string with h5py (utf8_attr)."""
    def build(f):
        if target == "axis-value":
            with_axes(f, {"model.activation": b"re" + seq + b"lu"})
        elif target in ("hostnames", "devices"):
            utf8_attr(f, target, [b"ok", b"x" + seq + b"y"])
        else:
            utf8_attr(f, target, spliced(f, target, seq))
    return build


def h5_string_recipes(rng, n_random):
    """(name, build, table): each BAD_TEXT sequence written through h5py into one string (the
    sequences rotate over H5_STRING_TARGETS), n_random more target/sequence pairs drawn with rng,
    and names and layouts the raw flips cannot make."""
    pairs = [(t, BAD_TEXT[i % len(BAD_TEXT)]) for i, t in enumerate(H5_STRING_TARGETS)]
    pairs += [(H5_STRING_TARGETS[rng.randrange(len(H5_STRING_TARGETS))], BAD_TEXT[rng.randrange(len(BAD_TEXT))])
              for _ in range(n_random)]
    out = [(f"{t}-{kind}", h5_string(t, seq), t in TABLE_ATTRS or t == "axis-value") for t, (kind, seq) in pairs]
    out += [
        ("run_id-embedded-nul", lambda f: fixed_utf8_attr(f, "run_id", b"tiny-\x00079eac9d5f2f8858"), True),
        ("status-embedded-nul", lambda f: fixed_utf8_attr(f, "status", b"completed\x00\xff"), True),
        ("error-nul-terminated", lambda f: fixed_utf8_attr(f, "error", b"bad\xc0\x80\x00tail",
                                                            pad=h5py.h5t.STR_NULLTERM), True),
        ("error-1mib-invalid", lambda f: utf8_attr(f, "error", b"\xff\xc0\x80\x01\"" * (1 << 18)), True),
        ("config-invalid-in-key", lambda f: utf8_attr(f, "config", spliced(f, "config", b"\nk\xffey: 1\n")), False),
        ("axes-key-invalid", lambda f: with_axes(f, {b"model.act\xffivation": b"relu"}), True),
        ("axes-many-invalid", lambda f: with_axes(f, {"seed": np.int64(3), "param.factor": np.float64(2),
                                                      "data.name": b"tea\xed\xa0\x80cher"}), True),
        ("attr-name-invalid", lambda f: raw_attr(f, b"note\xff\xc0\x80", "x"), False),
        ("column-name-invalid", lambda f: rename(f, "metrics/train/loss", b"lo\xffss"), False),
        ("column-name-controls", lambda f: rename(f, "metrics/eval/test_acc", b"test\x1b[2J,\"acc"), False),
        ("layer-name-invalid", lambda f: rename(f, last_layer_group(f), b"fc\xc0\x801"), False),
    ]
    return out


INT64_MIN, INT64_MAX = np.iinfo(np.int64).min, np.iinfo(np.int64).max
SPECIAL_NUMBERS = [float("nan"), float("inf"), float("-inf"), 0, -1, INT64_MIN, INT64_MAX, 2**53 + 1, 5e-324, 1e308]


def numeric_targets(f):
    """(group path, attribute): numeric root attributes and the last snapshot's rank attributes."""
    root = [("/", n) for n in root_attr_names(f) if f.attrs.get_id(n).dtype.kind in "iuf"
            and f.attrs.get_id(n).shape == ()]
    layer = last_layer_group(f)
    return root + [(layer, n) for n in sorted(f[layer].attrs.keys()) if f[layer].attrs.get_id(n).dtype.kind in "iuf"]


def numeric_mutation(f, group, name, how):
    """how: ('bit', b) flips bit b of the stored value; ('value', v) stores v in the same type."""
    attrs = f[group].attrs
    dtype = attrs.get_id(name).dtype
    value = np.asarray(attrs[name], dtype=dtype).copy()
    if how[0] == "bit":
        bits = value.view(np.uint64 if dtype.itemsize == 8 else np.dtype(f"u{dtype.itemsize}"))
        bits ^= np.array(1 << (how[1] % (8 * dtype.itemsize)), dtype=bits.dtype)
    elif dtype.kind == "f":
        value = np.array(float(how[1]), dtype=dtype)
    else:  # an integer attribute: NaN and -inf become its minimum, inf and huge values its maximum
        v, info = how[1], np.iinfo(dtype)
        if isinstance(v, float):
            v = info.min if v != v or v == float("-inf") else info.max if v == float("inf") else int(v)
        value = np.array(max(info.min, min(info.max, v)), dtype=dtype)
    del attrs[name]
    attrs.create(name, value, dtype=dtype)


def make_numeric(good_path, corpus, rng, n):
    with h5py.File(good_path, "r") as f:
        targets = numeric_targets(f)
    entries = []
    for k in range(max(n, len(targets)) if targets else 0):
        group, name = targets[k % len(targets)]
        how = ("bit", rng.randrange(64)) if (k // len(targets)) % 2 == 0 else \
            ("value", SPECIAL_NUMBERS[rng.randrange(len(SPECIAL_NUMBERS))])
        label = f"{name}-bit{how[1]}" if how[0] == "bit" else f"{name}-{how[1]!r}".replace("'", "")
        entries.append(derived_entry(good_path, corpus, "attr", f"num-{label}",
                                     (lambda g, a, h: lambda f: numeric_mutation(f, g, a, h))(group, name, how), ANY))
    return entries


TYPE_RECIPES = [  # (name, build): one attribute of the wrong type or shape
    ("steps-string", lambda f: set_attr(f, "steps", "21")),
    ("total_steps-string", lambda f: set_attr(f, "total_steps", "twenty-one")),
    ("wall_seconds-string", lambda f: set_attr(f, "wall_seconds", "1.0")),
    ("ranks_per_run-string", lambda f: set_attr(f, "ranks_per_run", "1")),
    ("trainable_params-string", lambda f: set_attr(f, "trainable_params", "4072")),
    ("world_size-int", lambda f: set_attr(f, "world_size", np.int64(1))),
    ("hostname-int", lambda f: set_attr(f, "hostname", np.int64(7))),
    ("name-float", lambda f: set_attr(f, "name", np.float64(3.5))),
    ("error-int", lambda f: set_attr(f, "error", np.int64(1))),
    ("axes-int", lambda f: set_attr(f, "axes", np.int64(1))),
    ("hostnames-int-array", lambda f: set_attr(f, "hostnames", np.arange(3))),
    ("devices-scalar-string", lambda f: set_attr(f, "devices", "cpu")),
    ("steps-array", lambda f: set_attr(f, "steps", np.array([21, 22], dtype="i8"))),
    ("wall_seconds-array", lambda f: set_attr(f, "wall_seconds", np.array([1.0, 2.0]))),
    ("total_steps-float", lambda f: set_attr(f, "total_steps", np.float64(21.5))),
    ("schema-float", lambda f: set_attr(f, "schema_version", np.float64(2.0))),
    ("schema-int8", lambda f: set_attr(f, "schema_version", np.int8(2))),
    ("schema-array-2", lambda f: set_attr(f, "schema_version", np.array([2, 2], dtype="i8"))),
    ("run_id-array", lambda f: set_attr(f, "run_id", np.array(["a", "b"], dtype=h5py.string_dtype()))),
    ("run_id-fixed-ascii", lambda f: set_attr(f, "run_id", np.bytes_(b"tiny-079eac9d5f2f8858"))),
    ("run_id-empty", lambda f: set_attr(f, "run_id", "")),
    ("name-array", lambda f: set_attr(f, "name", np.array(["tiny", "other"], dtype=h5py.string_dtype()))),
    ("config-array", lambda f: set_attr(f, "config", np.array(["name: a\n", "name: b\n"], dtype=h5py.string_dtype()))),
    ("config-empty", lambda f: set_attr(f, "config", "")),
    ("config-not-yaml", lambda f: set_attr(f, "config", ":\n- [unclosed\n\t{")),
    ("config-null-space", lambda f: set_attr(f, "config", h5py.Empty(h5py.string_dtype()))),
    ("status-fixed-ascii", lambda f: set_attr(f, "status", np.bytes_(b"completed"))),
    ("status-empty-array", lambda f: set_attr(f, "status", np.array([], dtype=h5py.string_dtype()))),
    ("hostnames-empty-array", lambda f: set_attr(f, "hostnames", np.array([], dtype=h5py.string_dtype()))),
    ("steps-empty-array", lambda f: set_attr(f, "steps", np.array([], dtype="i8"))),
    ("axes-lists-missing-attr", lambda f: set_attr(f, "axes", np.array(["param.factor"], dtype=h5py.string_dtype()))),
    ("axis-value-compound", lambda f: with_axes(f, {"param.factor": np.array((2, b"two"), COMPOUND)})),
    ("axes-vlen-ints", lambda f: set_attr(f, "axes", vlen_scalar(np.arange(3)), h5py.vlen_dtype("i8"))),
    ("rank-attr-string", lambda f: set_attr(f[last_layer_group(f)], "effective_rank", "high")),
]


def make_attr_cases(good_path, good_bytes, corpus, rng, count):
    """The attr category: raw string flips, h5py-written strings, numeric flips, wrong types and
    deleted attributes.  The fixed recipes all run; the seeded ones grow with count."""
    entries = []
    spans = string_spans(good_path, good_bytes)
    entries += make_string_flips(good_bytes, spans, corpus, rng, max(len(spans), count // 10))
    for name, build, table in h5_string_recipes(rng, count // 40):
        entries.append(derived_entry(good_path, corpus, "attr", f"str-h5-{name}", build, ANY, strings=True,
                                     table=table))
    entries += make_numeric(good_path, corpus, rng, count // 20)
    for name, build in TYPE_RECIPES:
        entries.append(derived_entry(good_path, corpus, "attr", f"type-{name}", build, ANY))
    with h5py.File(good_path, "r") as f:
        names = root_attr_names(f)
    for name in names:
        if name not in DELETED_BY_FOREIGN:
            entries.append(derived_entry(good_path, corpus, "attr", f"del-{name}",
                                         (lambda a: lambda f: delete(f, a))(name), ANY))
    return entries


# --- corpus: files that are not HDF5 at all ------------------------------------------------------

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def make_non_hdf5(corpus, rng):
    def rand(n):
        return bytes(rng.randrange(256) for _ in range(n))

    files = [
        ("zero-bytes", b""),
        ("text", b"hello, this is not a run file\n"),
        ("yaml-config", b"name: tiny\nseed: 3\nmodel: {kind: mlp, widths: [16, 4]}\n"),
        ("json", b'{"run_id": "x", "status": "completed", "schema_version": 2}\n'),
        ("random-1", rand(1)),
        ("random-100", rand(100)),
        ("random-4096", rand(4096)),
        ("random-65536", rand(65536)),
        ("signature-only", HDF5_SIGNATURE),
        ("signature-garbage", HDF5_SIGNATURE + rand(4088)),
        ("signature-zeros", HDF5_SIGNATURE + bytes(8192)),
        ("signature-ff", HDF5_SIGNATURE + b"\xff" * 8192),
        ("userblock-signature-garbage", rand(512) + HDF5_SIGNATURE + rand(2048)),
    ]
    entries = [write_entry(corpus, "non-hdf5", name, data) for name, data in files]
    directory = new_entry(corpus, "non-hdf5", "directory")
    os.mkdir(directory["path"])
    dangling = new_entry(corpus, "non-hdf5", "dangling-symlink")
    os.symlink("no-such-target.h5", dangling["path"])
    return entries + [directory, dangling]


# --- corpus assembly -----------------------------------------------------------------------------

_serial = [0]


def new_entry(corpus, category, desc, may_accept=None, strings=False, table=False):
    """A corpus file's record; may_accept: the commands allowed to exit 0 (default by category);
    strings: a damaged string (adds `inspect --csv`); table: one `inspect DIR` shows."""
    _serial[0] += 1
    safe = "".join(c if c.isalnum() or c in "-_.+" else "_" for c in desc)
    name = f"{_serial[0]:04d}-{category}-{safe}.h5"
    if may_accept is None:
        may_accept = STRICT if category in MUST_REJECT else ANY
    return {"name": name, "path": os.path.join(corpus, name), "category": category, "may_accept": may_accept,
            "strings": strings, "table": table}


def write_entry(corpus, category, desc, data, **flags):
    entry = new_entry(corpus, category, desc, **flags)
    with open(entry["path"], "wb") as out:
        out.write(data)
    return entry


def build_corpus(good_path, corpus, seed, count):
    _serial[0] = 0
    rng = random.Random(seed)
    with open(good_path, "rb") as f:
        good_bytes = f.read()
    entries = make_truncations(good_bytes, corpus, rng, count)
    entries += make_foreign(good_path, corpus)
    entries += make_attr_cases(good_path, good_bytes, corpus, rng, count)
    entries += make_non_hdf5(corpus, rng)
    n_flips = max(MIN_PER_CATEGORY["byteflip"], count - len(entries))
    entries += make_byteflips(good_bytes, corpus, rng, n_flips)
    return entries


def corpus_digests(entries):
    """sha256 over every corpus file (name, kind, bytes or link target), in corpus order: 'all', and
    'bytes' over the files cut from the good file's bytes alone (no h5py), which are the same on
    every machine whatever its HDF5 version."""
    digests = {"all": hashlib.sha256(), "bytes": hashlib.sha256()}
    for e in entries:
        path = e["path"]
        if os.path.islink(path):
            blob = b"L" + os.fsencode(os.readlink(path))
        elif os.path.isdir(path):
            blob = b"D"
        else:
            with open(path, "rb") as f:
                blob = b"F" + f.read()
        record = e["name"].encode() + b"\0" + hashlib.sha256(blob).digest()
        digests["all"].update(record)
        if e["category"] in ("truncation", "byteflip", "non-hdf5") or "-str-raw-" in e["name"]:
            digests["bytes"].update(record)
    return {k: v.hexdigest() for k, v in digests.items()}


# --- running xpand -------------------------------------------------------------------------------

def limit_prefix(mem_limit_gib):
    """prlimit prefix: no core files, bounded file size, an address-space cap when asked for."""
    prlimit = shutil.which("prlimit")
    if not prlimit:
        return []
    prefix = [prlimit, "--core=0", f"--fsize={FSIZE_LIMIT}"]
    if mem_limit_gib > 0:
        prefix.append(f"--as={int(mem_limit_gib * (1 << 30))}")
    return prefix + ["--"]


def run_command(argv, cwd):
    """Runs argv (own process group, killed whole on timeout); returns rc, timed_out, stderr, stdout."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=cwd,
                                start_new_session=True)
        try:
            rc, timed_out = proc.wait(timeout=TIMEOUT_S), False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc, timed_out = proc.wait(), True
        seconds = time.monotonic() - start
        size = out.seek(0, os.SEEK_END)
        out.seek(0)
        stdout = out.read() if size <= STDOUT_LIMIT else None
        err.seek(max(0, err.seek(0, os.SEEK_END) - 65536))
        stderr = err.read().decode("utf-8", errors="replace")
    return {"rc": rc, "timed_out": timed_out, "stderr": stderr, "stdout": stdout, "seconds": seconds}


def run_dir(entry, dirs):
    """An output directory whose runs/ holds only this entry's file (a hard link, else a copy)."""
    d = os.path.join(dirs, entry["name"][:-3])
    os.makedirs(os.path.join(d, "runs"))
    target = os.path.join(d, "runs", entry["name"])
    try:
        os.link(entry["path"], target)
    except OSError:
        shutil.copyfile(entry["path"], target)
    return d


def commands_for(entries, xpand, out_dir, dirs, chosen=None):
    """(entry, label, argv) for every command (see the module docstring); with chosen, only for
    those entries (the commands of an entry depend on its place in the whole corpus)."""
    cmds = []
    for i, entry in enumerate(entries):
        if chosen is not None and entry["name"] not in chosen:
            continue
        path = entry["path"]
        # Both forms where what is printed is the point (damaged strings, random damage, odd files
        # that may be accepted); one of the two in turn where the damage is met while reading,
        # which both forms do alike (truncations, other files, wrong types and missing attributes).
        both = entry["strings"] or entry["category"] == "byteflip" or \
            (entry["category"] == "foreign" and {"inspect", "inspect --json"} & entry["may_accept"])
        labels = ["inspect", "inspect --json"] if both else ["inspect" if i % 2 == 0 else "inspect --json"]
        if entry["strings"]:
            labels.append("inspect --csv")
            if entry["table"]:
                labels.append("inspect DIR --csv")
        if i % (6 if entry["category"] == "attr" else 3) == 0:  # collapse reads few attributes
            labels.append("collapse")
        for label in labels:
            if label == "collapse":
                argv = [xpand, "collapse", path, "-o", os.path.join(out_dir, entry["name"][:-3] + ".model.h5")]
            elif label == "inspect DIR --csv":
                argv = [xpand, "inspect", run_dir(entry, dirs), "--csv"]
            else:
                argv = [xpand] + label.split()[:1] + [path] + label.split()[1:]
            cmds.append((entry, label, argv))
    return cmds


# --- verdicts ------------------------------------------------------------------------------------

def last_line(text):
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def has_message(stderr):
    return any(line.startswith("xpand:") for line in stderr.splitlines())


# Control characters (C0 but tab and newline, DEL, C1) that the text tables must show escaped.
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def classify(entry, label, result):
    """('PASS' | 'CRASH' | 'HANG' | 'FAIL', reason)."""
    rc = result["rc"]
    if result["timed_out"]:
        return "HANG", f"still running after {TIMEOUT_S} s"
    if rc < 0 or rc > 128:
        sig = -rc if rc < 0 else rc - 128
        if sig == signal.SIGXFSZ:
            return "FAIL", f"runaway output: wrote more than {FSIZE_LIMIT >> 20} MiB (SIGXFSZ)"
        return "CRASH", f"killed by signal {sig} ({signal.Signals(sig).name if sig in signal.valid_signals() else '?'})"
    if rc == 0:
        if label not in entry["may_accept"]:
            return "FAIL", "accepted malformed input"
        if result["stdout"] is not None:
            try:
                text = result["stdout"].decode("utf-8")
            except UnicodeDecodeError as e:
                bad = result["stdout"][max(0, e.start - 16):e.end + 16]
                return "FAIL", f"exit 0 but stdout is not UTF-8 ({e.reason} at byte {e.start}: {bad!r})"
            if label == "inspect --json":
                try:
                    json.loads(text)
                except ValueError as e:
                    return "FAIL", f"exit 0 but stdout is not JSON ({e})"
            if label == "inspect":
                raw = RAW_CONTROL.search(text)
                if raw:
                    return "FAIL", (f"raw control character U+{ord(raw.group()):04X} in the table output (a terminal "
                                    f"would act on it): {text[max(0, raw.start() - 24):raw.end() + 8]!r}")
        return "PASS", ""
    if rc not in (1, 2):
        return "FAIL", f"unexpected exit code {rc}"
    if not has_message(result["stderr"]):
        return "FAIL", "no message (no stderr line starting with 'xpand:')"
    return "PASS", ""


def check_good_file(xpand, good, work_dir, prefix):
    """The unmodified file must pass every command; returns the seconds one inspect took."""
    out = os.path.join(work_dir, "out", "good.model.h5")
    seconds = None
    for label, argv in [("inspect", [xpand, "inspect", good]), ("inspect --json", [xpand, "inspect", good, "--json"]),
                        ("inspect --csv", [xpand, "inspect", good, "--csv"]),
                        ("collapse", [xpand, "collapse", good, "-o", out])]:
        result = run_command(prefix + argv, work_dir)
        verdict, why = classify({"may_accept": ANY}, label, result)
        if verdict != "PASS" or result["rc"] != 0:
            print(f"fuzz: the good file fails `{label}` (rc {result['rc']}): {why or last_line(result['stderr'])}\n"
                  f"fuzz: {good} must be a valid xpand run file with snapshots; aborting", file=sys.stderr)
            sys.exit(1)
        seconds = seconds or result["seconds"]
    return seconds


def prepare_work_dir(work_dir):
    if os.path.lexists(work_dir):
        shutil.rmtree(work_dir)
    os.makedirs(os.path.join(work_dir, "out"))
    return os.path.join(work_dir, "out")


def run_all(cmds, prefix, work_dir, jobs):
    results = [None] * len(cmds)
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(run_command, prefix + argv, work_dir): i for i, (_, _, argv) in enumerate(cmds)}
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            results[futures[future]] = future.result()
            if done % 100 == 0:
                print(f"fuzz: {done}/{len(cmds)} commands done", file=sys.stderr, flush=True)
    return results


# --- report --------------------------------------------------------------------------------------

def replay_corpus(args, seed):
    return (f"{shlex.quote(sys.executable)} {shlex.quote(os.path.abspath(__file__))} {shlex.quote(args.xpand)} "
            f"{shlex.quote(args.good)} {shlex.quote(args.work_dir)} --seed {seed} --count {args.count} "
            f"--jobs {args.jobs}" + (f" --only {shlex.quote(args.only)}" if args.only else ""))


def print_summary(args, entries, cmds, results, verdicts, elapsed):
    per_category = collections.Counter(e["category"] for e in entries)
    print(f"corpus: {len(entries)} files (" +
          ", ".join(f"{c} {per_category[c]}" for c in MIN_PER_CATEGORY) +
          f"; {sum(e['may_accept'] == ANY for e in entries if e['category'] == 'foreign')} foreign ones odd but valid)")
    per_label = collections.Counter(label for _, label, _ in cmds)
    print(f"commands: {len(cmds)} (" + ", ".join(f"{k} {v}" for k, v in per_label.items()) +
          f") in {elapsed:.0f} s with {args.jobs} job(s)")
    codes = collections.Counter("timeout" if r["timed_out"] else r["rc"] for r in results)
    print("exit codes: " + ", ".join(f"{k}: {v}" for k, v in sorted(codes.items(), key=lambda kv: str(kv[0]))))
    accepted = collections.Counter(e["category"] for (e, _, _), r in zip(cmds, results) if r["rc"] == 0)
    print("exit 0 by category: " + (", ".join(f"{k} {v}" for k, v in accepted.items()) or "none"))
    failed_seeds = []
    for kind in ("CRASH", "HANG", "FAIL"):
        cases = [(c, r, why) for c, r, (v, why) in zip(cmds, results, verdicts) if v == kind]
        print(f"{kind} ({len(cases)})")
        for (entry, label, argv), result, why in cases:
            print(f"  seed {entry['seed']} {entry['name']}  [{label}]  rc={result['rc']}  {why}\n"
                  f"      stderr: {last_line(result['stderr'])[:300]}\n"
                  f"      replay: {' '.join(shlex.quote(a) for a in argv)}")
            if entry["seed"] not in failed_seeds:
                failed_seeds.append(entry["seed"])
    problems = []
    for seed in args.seeds if args.only is None else []:
        mine = [e for e in entries if e["seed"] == seed]
        counts = collections.Counter(e["category"] for e in mine)
        for category, minimum in MIN_PER_CATEGORY.items():
            if counts[category] < minimum:
                problems.append(f"seed {seed}: only {counts[category]} {category} files (want {minimum})")
        if len(mine) < args.count:
            problems.append(f"seed {seed}: only {len(mine)} files generated (want --count {args.count})")
    for p in problems:
        print(f"fuzz: {p}")
    for seed in failed_seeds:
        print(f"fuzz: replay seed {seed}: {replay_corpus(args, seed)}")
    failed = sum(v != "PASS" for v, _ in verdicts)
    print(f"fuzz: {len(cmds) - failed} passed, {failed} failed")
    return 1 if failed or problems else 0


def main(argv):
    args = parse_args(argv)
    args.seeds, drawn = args.seed
    args.xpand, args.good, args.work_dir = (os.path.abspath(p) for p in (args.xpand, args.good, args.work_dir))
    xpand, good, work_dir = args.xpand, args.good, args.work_dir
    if not (args.corpus_only or os.access(xpand, os.X_OK)) or not os.path.isfile(good):
        print(f"fuzz: need an executable xpand ({xpand}) and a run file ({good})", file=sys.stderr)
        return 1
    if os.path.commonpath([work_dir, good]) == work_dir or os.path.commonpath([work_dir, xpand]) == work_dir:
        print(f"fuzz: {work_dir} is emptied first, so it must not hold xpand or the good run file", file=sys.stderr)
        return 1
    seeds = ",".join(map(str, args.seeds))
    print(f"fuzz: seed(s) {seeds}{' (drawn at random)' if drawn else ''} with --count {args.count}; "
          f"replay: {replay_corpus(args, seeds)}", flush=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    prefix = limit_prefix(args.mem_limit_gib)
    out_dir = prepare_work_dir(work_dir)
    one_call = None if args.corpus_only else check_good_file(xpand, good, work_dir, prefix)

    entries, cmds = [], []
    start = time.monotonic()
    for seed in args.seeds:
        corpus = os.path.join(work_dir, "corpus", f"s{seed}")
        os.makedirs(corpus)
        mine = build_corpus(good, corpus, seed, args.count)
        for e in mine:
            e["seed"] = seed
        d = corpus_digests(mine)
        print(f"corpus seed {seed}: {len(mine)} files, sha256 {d['all']} (byte-cut files: {d['bytes']})", flush=True)
        entries += mine
        if not args.corpus_only:
            chosen = {e["name"] for e in mine if args.only is None or re.search(args.only, e["name"])}
            cmds += commands_for(mine, xpand, out_dir, os.path.join(work_dir, "dirs", f"s{seed}"), chosen)
    print(f"fuzz: corpus built in {time.monotonic() - start:.1f} s", file=sys.stderr, flush=True)
    if args.corpus_only:
        return 0
    print(f"fuzz: {len(entries)} files, {len(cmds)} commands; one call takes {one_call:.2f} s, "
          f"about {len(cmds) * one_call / args.jobs:.0f} s with {args.jobs} job(s)", file=sys.stderr, flush=True)
    start, binary = time.monotonic(), os.stat(xpand).st_mtime_ns
    results = run_all(cmds, prefix, work_dir, args.jobs)
    verdicts = [classify(entry, label, result) for (entry, label, _), result in zip(cmds, results)]
    if os.stat(xpand).st_mtime_ns != binary:
        print(f"fuzz: warning: {xpand} was rebuilt during the run; results may mix two builds")
    return print_summary(args, entries, cmds, results, verdicts, time.monotonic() - start)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
