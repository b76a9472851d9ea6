#!/usr/bin/python3
"""Fuzz test for xpand's run-file readers (`xpand inspect`, `inspect --json`, `collapse`).

Run files outlive the program that wrote them: they get copied half-way, truncated by a full disk,
hit by bit rot, or are not xpand files at all (someone's HDF5 data set, a YAML file named .h5).
Whatever the file, the readers must end with a one-line `xpand: ...` message on stderr and exit
1 or 2; they must never crash (signal, uncaught exception -> abort), hang, or quietly accept a
file that is not a run file.  This script builds a deterministic corpus of bad inputs from one good
run file and checks exactly that:

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
  non-hdf5    empty, text and random files, an HDF5 signature followed by garbage, a directory
              and a dangling symlink named like a run file; all must be rejected.

Every file gets `inspect FILE` and `inspect FILE --json`, every third file also
`collapse FILE -o WORK_DIR/out/NAME.model.h5`, each with a 30 s timeout.  Verdicts:
  CRASH  killed by a signal (return code < 0, or > 128 as a shell reports it)
  HANG   still running after the timeout (killed)
  FAIL   a must-reject input accepted (exit 0), an exit code other than 0/1/2, a non-zero exit
         without an `xpand:` line on stderr, or `inspect --json` exiting 0 with output that is not
         JSON (UTF-8 text that json.loads accepts).
Children run under prlimit with a 4 GiB address-space limit (--mem-limit-gib), so that a reader
trusting a huge declared size fails with an allocation error instead of eating the machine's
memory, a 1 GiB file-size limit (runaway output is a FAIL, not a full disk) and no core files.

usage: /usr/bin/python3 tests/store/fuzz_inspect.py XPAND GOOD_RUN_FILE WORK_DIR
                                                   [--count N] [--seed S] [--jobs J]
Exit 0 when every command passed (last line `fuzz: N passed, 0 failed`), 1 otherwise.
"""
import argparse
import collections
import concurrent.futures
import json
import os
import random
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
MIN_PER_CATEGORY = {"truncation": 60, "byteflip": 100, "foreign": 30, "non-hdf5": 10}
MUST_REJECT = {"truncation", "non-hdf5", "foreign"}  # byteflip may legitimately stay valid
STDOUT_JSON_LIMIT = 64 << 20  # larger --json output is not parsed
HUGE = 10**9  # declared length of "huge" unwritten datasets
FSIZE_LIMIT = 1 << 30  # a command writing more (stdout or a file) gets SIGXFSZ: output runs away


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("xpand", help="the xpand binary")
    p.add_argument("good", help="a valid xpand run file (.h5)")
    p.add_argument("work_dir", help="scratch directory (emptied first)")
    p.add_argument("--count", type=int, default=240, help="generate at least this many files (default 240)")
    p.add_argument("--seed", type=int, default=1, help="corpus seed (default 1)")
    p.add_argument("--jobs", type=int, default=2, help="commands run in parallel (default 2)")
    p.add_argument("--mem-limit-gib", type=float, default=4,
                   help="address-space limit per command in GiB, 0 for none (default 4)")
    args = p.parse_args(argv)
    if args.jobs < 1 or args.count < 0:
        p.error("--jobs must be >= 1 and --count >= 0")
    return args


# --- corpus: truncations and byte flips ----------------------------------------------------------

def truncation_offsets(size, rng):
    """Offsets to cut at: fixed small ones, an even spread over the file, a few random, the end."""
    fixed = [0, 1, 7, 8, 9, 16, 40, 48, 96, 100, 128, 256, 512, 1000, 1024, 2048, 4095, 4096, 4097, 8192]
    spread = [size * k // 48 for k in range(1, 48)]
    rand = [rng.randrange(size) for _ in range(8)]
    tail = [size - 4096, size - 512, size - 8, size - 1]
    return sorted({o for o in fixed + spread + rand + tail if 0 <= o < size})


def make_truncations(good_bytes, corpus, rng):
    entries = []
    for off in truncation_offsets(len(good_bytes), rng):
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
# metrics, and reads only the snapshot it collapses).

COMMANDS = ("inspect", "inspect --json", "collapse")
STRICT = frozenset()
ANY = frozenset(COMMANDS)
NOT_COLLAPSE = frozenset({"collapse"})  # collapse may succeed: the defect is elsewhere

COMPOUND = np.dtype([("code", "i4"), ("text", "S12")])
ENUM = h5py.enum_dtype({"running": 0, "completed": 1, "failed": 2}, basetype="i1")


def new_file(path):
    return h5py.File(path, "w", libver="latest")


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
    with h5py.File(path, "w") as f:
        f.attrs["schema_version"] = "two"
        f.create_group("metrics/train")["step"] = np.arange(3)
        f.create_group("snapshots")


def set_attr(f, name, value, dtype=None):
    if name in f.attrs:
        del f.attrs[name]
    f.attrs.create(name, value, dtype=dtype)


def delete(f, path):
    if path in f.attrs:
        del f.attrs[path]
    else:
        del f[path]


def replace(f, path, link=None, **dataset_args):
    """Puts a dataset (dataset_args) or a link (h5py.SoftLink/ExternalLink/np.dtype) at path."""
    del f[path]
    if link is None:
        f.create_dataset(path, **dataset_args)
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
        for name in list(f[f"metrics/{table}"].keys()):
            huge_column(f, f"metrics/{table}/{name}", "i8" if name == "step" else "f8")


def soft_loop(f, a, b):
    """a -> b and b -> a, replacing whatever a held."""
    if a in f:
        del f[a]
    f[a] = h5py.SoftLink("/" + b)
    f[b] = h5py.SoftLink("/" + a)


def snapshots_non_numeric(f):
    for k in list(f["snapshots"].keys()):
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
    ("snapshot-no-layers", lambda f: f.create_group("snapshots/99999999"), STRICT),
    ("snapshots-non-numeric", snapshots_non_numeric, STRICT),
    ("snapshots-dataset", lambda f: replace(f, "snapshots", data=np.arange(3)), STRICT),
    ("snapshot-soft-loop", lambda f: soft_loop(f, "snapshots/99999998", "snapshots/99999999"), STRICT),
    ("snapshots-hard-link-cycle", snapshots_hard_link_cycle, STRICT),
]


def make_foreign(good_path, corpus):
    entries = []
    for name, build, may_accept in FOREIGN_RECIPES:
        entry = new_entry(corpus, "foreign", name, may_accept)
        if build.__name__.startswith("scratch_"):
            build(entry["path"])
        else:
            shutil.copyfile(good_path, entry["path"])
            with h5py.File(entry["path"], "r+") as f:
                build(f)
        entries.append(entry)
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


def new_entry(corpus, category, desc, may_accept=None):
    """A corpus file's record; may_accept: the commands allowed to exit 0 (default by category)."""
    _serial[0] += 1
    name = f"{_serial[0]:03d}-{category}-{desc}.h5"
    if may_accept is None:
        may_accept = STRICT if category in MUST_REJECT else ANY
    return {"name": name, "path": os.path.join(corpus, name), "category": category, "may_accept": may_accept}


def write_entry(corpus, category, desc, data):
    entry = new_entry(corpus, category, desc)
    with open(entry["path"], "wb") as out:
        out.write(data)
    return entry


def build_corpus(good_path, corpus, seed, count):
    _serial[0] = 0
    rng = random.Random(seed)
    with open(good_path, "rb") as f:
        good_bytes = f.read()
    entries = make_truncations(good_bytes, corpus, rng)
    entries += make_foreign(good_path, corpus)
    entries += make_non_hdf5(corpus, rng)
    n_flips = max(MIN_PER_CATEGORY["byteflip"] + 10, count - len(entries))
    entries += make_byteflips(good_bytes, corpus, rng, n_flips)
    return entries


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
        stdout = out.read() if size <= STDOUT_JSON_LIMIT else None
        err.seek(max(0, err.seek(0, os.SEEK_END) - 65536))
        stderr = err.read().decode("utf-8", errors="replace")
    return {"rc": rc, "timed_out": timed_out, "stderr": stderr, "stdout": stdout, "seconds": seconds}


def commands_for(entries, xpand, out_dir):
    """(entry, label, argv) for every command: inspect, inspect --json, collapse for every third."""
    cmds = []
    for i, entry in enumerate(entries):
        cmds.append((entry, "inspect", [xpand, "inspect", entry["path"]]))
        cmds.append((entry, "inspect --json", [xpand, "inspect", entry["path"], "--json"]))
        if i % 3 == 0:
            model = os.path.join(out_dir, entry["name"][:-3] + ".model.h5")
            cmds.append((entry, "collapse", [xpand, "collapse", entry["path"], "-o", model]))
    return cmds


# --- verdicts ------------------------------------------------------------------------------------

def last_line(text):
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def has_message(stderr):
    return any(line.startswith("xpand:") for line in stderr.splitlines())


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
        if label == "inspect --json" and result["stdout"] is not None:
            try:
                json.loads(result["stdout"].decode("utf-8"))
            except ValueError as e:
                return "FAIL", f"exit 0 but stdout is not JSON ({e})"
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
    corpus, out = os.path.join(work_dir, "corpus"), os.path.join(work_dir, "out")
    os.makedirs(corpus)
    os.makedirs(out)
    return corpus, out


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

def print_summary(entries, cmds, results, verdicts, count, elapsed, jobs):
    per_category = collections.Counter(e["category"] for e in entries)
    print(f"corpus: {len(entries)} files (" +
          ", ".join(f"{c} {per_category[c]}" for c in MIN_PER_CATEGORY) +
          f"; {sum(e['may_accept'] == ANY for e in entries if e['category'] == 'foreign')} foreign ones odd but valid)")
    per_label = collections.Counter(label for _, label, _ in cmds)
    print(f"commands: {len(cmds)} (" + ", ".join(f"{k} {v}" for k, v in per_label.items()) +
          f") in {elapsed:.0f} s with {jobs} job(s)")
    codes = collections.Counter("timeout" if r["timed_out"] else r["rc"] for r in results)
    print("exit codes: " + ", ".join(f"{k}: {v}" for k, v in sorted(codes.items(), key=lambda kv: str(kv[0]))))
    accepted = collections.Counter(e["category"] for (e, _, _), r in zip(cmds, results) if r["rc"] == 0)
    print("exit 0 by category: " + (", ".join(f"{k} {v}" for k, v in accepted.items()) or "none"))
    for kind in ("CRASH", "HANG", "FAIL"):
        cases = [(c, r, why) for c, r, (v, why) in zip(cmds, results, verdicts) if v == kind]
        print(f"{kind} ({len(cases)})")
        for (entry, label, argv), result, why in cases:
            print(f"  {entry['name']}  [{label}]  rc={result['rc']}  {why}\n"
                  f"      stderr: {last_line(result['stderr'])[:300]}\n"
                  f"      replay: {' '.join(argv)}")
    problems = []
    for category, minimum in MIN_PER_CATEGORY.items():
        if per_category[category] < minimum:
            problems.append(f"only {per_category[category]} {category} files (want {minimum})")
    if len(entries) < count:
        problems.append(f"only {len(entries)} files generated (want --count {count})")
    for p in problems:
        print(f"fuzz: {p}")
    failed = sum(v != "PASS" for v, _ in verdicts)
    print(f"fuzz: {len(cmds) - failed} passed, {failed} failed")
    return 1 if failed or problems else 0


def main(argv):
    args = parse_args(argv)
    xpand, good, work_dir = (os.path.abspath(p) for p in (args.xpand, args.good, args.work_dir))
    if not os.access(xpand, os.X_OK) or not os.path.isfile(good):
        print(f"fuzz: need an executable xpand ({xpand}) and a run file ({good})", file=sys.stderr)
        return 1
    if os.path.commonpath([work_dir, good]) == work_dir or os.path.commonpath([work_dir, xpand]) == work_dir:
        print(f"fuzz: {work_dir} is emptied first, so it must not hold xpand or the good run file", file=sys.stderr)
        return 1
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    prefix = limit_prefix(args.mem_limit_gib)
    corpus, out_dir = prepare_work_dir(work_dir)
    one_call = check_good_file(xpand, good, work_dir, prefix)

    entries = build_corpus(good, corpus, args.seed, args.count)
    cmds = commands_for(entries, xpand, out_dir)
    print(f"fuzz: {len(entries)} files, {len(cmds)} commands; one call takes {one_call:.2f} s, "
          f"about {len(cmds) * one_call / args.jobs:.0f} s with {args.jobs} job(s)", file=sys.stderr, flush=True)
    start, binary = time.monotonic(), os.stat(xpand).st_mtime_ns
    results = run_all(cmds, prefix, work_dir, args.jobs)
    verdicts = [classify(entry, label, result) for (entry, label, _), result in zip(cmds, results)]
    if os.stat(xpand).st_mtime_ns != binary:
        print(f"fuzz: warning: {xpand} was rebuilt during the run; results may mix two builds")
    return print_summary(entries, cmds, results, verdicts, args.count, time.monotonic() - start, args.jobs)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
