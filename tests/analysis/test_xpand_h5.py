#!/usr/bin/python3
"""analysis/xpand_h5.py and analysis/report.py on damaged run files (ctest analysis_xpand_h5).

Input: the committed run file tests/store/fuzz_base.h5 (no training).  Checks:
  damaged metadata  one flipped byte in the superblock, and one in the root group's object header
                    (both checksummed): HDF5 retries such reads in SWMR-read mode, 100 times with
                    growing sleeps by default (minutes per file).  xpand_h5 caps the attempts as
                    xpand does, so load_runs reports the file within seconds, and report.py on a
                    directory holding such a file ends (exit 1; with --skip-bad a report of the rest).
  invalid UTF-8     string attributes with invalid bytes, HTML and control characters: load_runs
                    returns valid str (U+FFFD for the bad bytes), report.py writes valid UTF-8 with
                    the markup escaped.
  the fuzz corpus   every file of tests/store/fuzz_inspect.py's corpus (seed 1) loads as a Run with
                    valid strings or raises XpandError (no other exception, no hang).
Every step runs in a subprocess with a timeout, so a hang is a failure, not a stuck test.

usage: /usr/bin/python3 tests/analysis/test_xpand_h5.py WORK_DIR [ANALYSIS_DIR]
  ANALYSIS_DIR (default: the repository's analysis/) holds the xpand_h5.py and report.py under test.
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import time

import h5py
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
BASE = os.path.join(HERE, "..", "store", "fuzz_base.h5")
FAST_S = 10  # a damaged file must be reported within this
TIMEOUT_S = 600  # a step still running after this has hung (an uncapped damaged file alone takes 90+ s)

LOAD = """
import sys, time
sys.path.insert(0, sys.argv[1])
import xpand_h5 as xh
errors = []
t = time.monotonic()
runs = xh.load_runs(sys.argv[2], errors=errors)
print(f"runs={len(runs)} errors={len(errors)} seconds={time.monotonic() - t:.2f}")
for path, msg in errors:
    print("error:", msg)
for r in runs:
    for v in (r.run_id, r.name, r.status, r.error, *r.axes.values(), *map(str, r.attrs.values())):
        str(v).encode("utf-8")  # no lone surrogates
    print("run:", ascii(r.run_id), ascii(r.name), ascii(r.status), ascii(r.error), ascii(r.axes),
          ascii(r.attrs.get("hostnames")))
"""

SWEEP = """
import glob, os, sys, time
sys.path.insert(0, sys.argv[1])
import xpand_h5 as xh
n = {"run": 0, "XpandError": 0, "other": 0}
for p in sorted(glob.glob(os.path.join(sys.argv[2], "*"))):
    if os.path.isdir(p) or os.path.islink(p):
        continue
    t = time.monotonic()
    try:
        r = xh.Run(p)
        for v in (r.run_id, r.name, r.status, r.error, *r.attrs, *map(str, r.attrs.values()), *r.train, *r.eval,
                  *(layer for s in r.snapshots.values() for layer in s), *map(str, r.axes.values())):
            str(v).encode("utf-8")
        r.features, r.identity
        n["run"] += 1
    except xh.XpandError:
        n["XpandError"] += 1
    except Exception as e:
        n["other"] += 1
        print(f"{os.path.basename(p)}: {type(e).__name__}: {e}"[:300])
    if time.monotonic() - t > 30:  # capped: well under a second; uncapped: 90 s and more
        print(f"{os.path.basename(p)}: slow ({time.monotonic() - t:.1f} s)")
        n["other"] += 1
print(" ".join(f"{k}={v}" for k, v in n.items()))
"""

failures = []


def check(ok, what):
    print(f"    {'ok' if ok else 'FAIL'}: {what}", flush=True)
    if not ok:
        failures.append(what)


def run(argv):
    """(rc, output, seconds); rc None when it timed out."""
    start = time.monotonic()
    try:
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=TIMEOUT_S)
        return p.returncode, p.stdout.decode("utf-8", "replace"), time.monotonic() - start
    except subprocess.TimeoutExpired as e:
        return None, (e.stdout or b"").decode("utf-8", "replace"), time.monotonic() - start


def out_dir(work, name, files):
    """work/name/runs/ holding {file name: bytes}."""
    d = os.path.join(work, name)
    os.makedirs(os.path.join(d, "runs"))
    for fname, data in files.items():
        with open(os.path.join(d, "runs", fname), "wb") as f:
            f.write(data)
    return d


def flipped(data, offset):
    d = bytearray(data)
    d[offset] ^= 0x01
    return bytes(d)


def set_strings(path, values):
    with h5py.File(path, "r+") as f:
        for name, raw in values.items():
            if name in f.attrs:
                del f.attrs[name]
            f.attrs.create(name, np.array(raw, dtype=h5py.string_dtype("utf-8")))


def main(argv):
    if len(argv) not in (1, 2):
        print(__doc__.split("\n\n")[-1], file=sys.stderr)
        return 1
    work = os.path.abspath(argv[0])
    analysis = os.path.abspath(argv[1] if len(argv) == 2 else os.path.join(HERE, "..", "..", "analysis"))
    report = os.path.join(analysis, "report.py")
    if os.path.lexists(work):
        shutil.rmtree(work)
    os.makedirs(work)
    with open(BASE, "rb") as f:
        good = f.read()
    root_header = int.from_bytes(good[36:44], "little")  # superblock v2/3: the root object header's address
    assert good[root_header:root_header + 4] == b"OHDR", "fuzz_base.h5: no v2 root object header"
    py = sys.executable

    print("--- the good file loads")
    d = out_dir(work, "good", {"good.h5": good})
    rc, out, _ = run([py, "-c", LOAD, analysis, d])
    check(rc == 0 and "runs=1 errors=0" in out, f"load_runs: {out.strip()[:300]}")

    for label, offset in [("superblock", 20), ("root object header", root_header + 10)]:
        print(f"--- one flipped byte in the {label} (offset {offset})")
        bad = flipped(good, offset)
        d = out_dir(work, f"bad-{offset}", {"bad.h5": bad})
        rc, out, s = run([py, "-c", LOAD, analysis, d])
        check(rc == 0 and "runs=0 errors=1" in out and s < FAST_S,
              f"load_runs reports it ({'timed out' if rc is None else f'exit {rc}'}, {s:.1f} s): {out.strip()[:300]}")
        rc, out, s = run([py, report, d])
        check(rc == 1 and s < FAST_S,
              f"report.py DIR ends with exit 1 ({'timed out' if rc is None else f'exit {rc}'}, {s:.1f} s)")
        d = out_dir(work, f"mixed-{offset}", {"bad.h5": bad, "good.h5": good})
        rc, out, s = run([py, report, d, "--skip-bad"])
        check(rc == 0 and os.path.isfile(os.path.join(d, "report", "index.html")) and s < TIMEOUT_S,
              f"report.py DIR --skip-bad writes the report of the good file "
              f"({'timed out' if rc is None else f'exit {rc}'}, {s:.1f} s)")

    print("--- invalid UTF-8 and markup in string attributes")
    d = out_dir(work, "strings", {"s.h5": good})
    set_strings(os.path.join(d, "runs", "s.h5"), {
        "name": b"<script>alert(1)</script>\xff",
        "error": b"<b>bad</b> \xc0\x80 \xed\xa0\x80 \xf4\x90\x80\x80 & \x01\x1b[2J",
        "status": b"failed",
        "hostnames": [b"host\xfe", b"ok"],
        "axes": [b"model.activation"],
        "model.activation": b"re\xc0\x80lu",
    })
    rc, out, _ = run([py, "-c", LOAD, analysis, d])
    check(rc == 0 and "runs=1 errors=0" in out and "\\ufffd" in out and "\\udc" not in out,
          f"load_runs decodes with U+FFFD: {out.strip()[-400:]}")
    rc, out, _ = run([py, report, d])
    html_path = os.path.join(d, "report", "index.html")
    check(rc == 0 and os.path.isfile(html_path), f"report.py writes a report (exit {rc}): {out.strip()[-300:]}")
    if os.path.isfile(html_path):
        with open(html_path, "rb") as f:
            page = f.read()
        try:
            text = page.decode("utf-8")
        except UnicodeDecodeError as e:
            text = ""
            check(False, f"index.html is not UTF-8: {e}")
        check("<b>bad</b>" not in text and "&lt;b&gt;bad&lt;/b&gt;" in text and "\ufffd" in text,
              "index.html escapes the markup and shows U+FFFD for the bad bytes")

    print("--- every file of the fuzz corpus (seed 1) loads or raises XpandError")
    corpus = os.path.join(work, "fuzz")
    rc, out, _ = run([py, os.path.join(HERE, "..", "store", "fuzz_inspect.py"), py, BASE, corpus, "--corpus-only"])
    check(rc == 0, f"fuzz_inspect.py --corpus-only (exit {rc}): {out.strip()[-200:]}")
    rc, out, s = run([py, "-c", SWEEP, analysis, os.path.join(corpus, "corpus", "s1")])
    check(rc == 0 and "other=0" in out and "run=" in out,
          f"{'timed out' if rc is None else f'exit {rc}'}, {s:.1f} s: {out.strip()[-1500:]}")

    print("--- xpand_h5's operational keys are the C++ list (src/config/config.cpp, operational_keys)")
    cpp = open(os.path.join(HERE, "..", "..", "src", "config", "config.cpp")).read()
    body = re.search(r"operational_keys\(\) \{(.*?)return keys;", cpp, re.S)
    cpp_keys = set(re.findall(r'"([a-z_.]+)"', body.group(1))) if body else set()
    rc, out, _ = run([py, "-c", f"import sys; sys.path.insert(0, {analysis!r}); import xpand_h5; "
                      "print(' '.join(sorted(xpand_h5._OPERATIONAL)))"])
    check(rc == 0 and cpp_keys and set(out.split()) == cpp_keys, f"python {out.strip()!r}, C++ {sorted(cpp_keys)}")

    print("--- every analysis script answers --help (usage on stdout, exit 0, nothing read)")
    for script in sorted(glob.glob(os.path.join(analysis, "*.py"))):
        rc, out, _ = run([py, script, "--help"])
        check(rc == 0 and out.startswith("usage: "), f"{os.path.basename(script)} --help: exit {rc}, {out[:120]!r}")

    print("--- d_int90 between grid points: crossing() interpolates linearly in log d")
    rc, out, _ = run([py, "-c", f"import sys; sys.path.insert(0, {analysis!r}); import xpand_h5 as x; "
                      "print(x.crossing([100, 1000], [0.5, 0.9], 0.7), x.crossing([10, 100], [0.8, 0.9], 0.7), "
                      "x.crossing([10, 100], [0.1, 0.2], 0.7), x.crossing([10, 30, 100], [0.1, 0.7, 0.9], 0.7))"])
    got = out.split()
    # 0.7 is halfway from 0.5 to 0.9: sqrt(100 * 1000) = 316.2; reached at the first point: 10; never: None;
    # exactly at a grid point: that point.
    check(rc == 0 and len(got) == 4 and abs(float(got[0]) - 316.2278) < 1e-3 and got[1] == "10.0" and
          got[2] == "None" and abs(float(got[3]) - 30) < 1e-9, f"crossing: {out.strip()!r}")

    print(f"test_xpand_h5: {len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
