#!/usr/bin/python3
"""Every text xpand prints or writes is valid UTF-8, whatever bytes a run file's strings hold.

A copy of a good run file gets string attributes (run_id, name, error, config, an axis value), an
attribute name and a metric column name holding invalid UTF-8 (overlong forms, surrogates, code
points above U+10FFFF, lone bytes), control characters and an embedded NUL. Then:
  - `inspect FILE --json` and `inspect DIR --json` parse as JSON from strict UTF-8, and each damaged
    value equals what Python's own decoder makes of the same bytes (bytes.decode("utf-8",
    "replace"), an independent implementation of Unicode's maximal-subpart replacement);
  - `inspect FILE --csv`, `inspect DIR --csv`, `inspect FILE` and `inspect DIR` are strict UTF-8, and
    the text tables show no raw control character (no escape sequence reaches a terminal);
  - `xpand index DIR` writes an index.h5 whose strings h5py's `.asstr()` reads (docs/FORMAT.md).
Also, as the check that this test can fail: the same values are compared with what a decoder that
passes bytes through would give, which must differ.

usage: /usr/bin/python3 tests/store/utf8_strings.py XPAND GOOD_RUN_FILE WORK_DIR
"""
import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np

BAD = {
    "run_id": b"run-\xc0\x80-\xed\xa0\x80-\xf4\x90\x80\x80-\xff",
    "name": b"name\xe0\x80\xaf\x1b[2J\x07",
    "error": b"err\xf5\x80\x80\x80 \xc3\x28 tail",
    "config": b"name: x\ncomment: \xfe\xfe\x01\n",
    "param.factor": b"2\xe2\x82",
}
BAD_ATTR_NAME = b"note\xc3"
FIXED = b"a\xffb\0hidden"
BAD_COLUMN = b"col\xff\xfe"


def decoded(raw):
    """What a correct reader shows: NUL ends a C string; the rest decoded with replacement."""
    return raw.split(b"\0")[0].decode("utf-8", "replace")


def put_bytes_attr(obj, name, raw):
    """A variable-length UTF-8 string attribute holding raw bytes (h5py writes bytes unchecked)."""
    if name in obj.attrs:
        del obj.attrs[name]
    obj.attrs.create(name, np.array(raw, dtype=h5py.string_dtype("utf-8")))


def run(xpand, *args):
    p = subprocess.run([xpand, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    if p.returncode not in (0, 1):
        raise SystemExit(f"FAIL: xpand {' '.join(args)} exited {p.returncode}: {p.stderr.decode(errors='replace')}")
    return p


def strict(data, what):
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SystemExit(f"FAIL: {what} is not valid UTF-8: {e}")


def main(xpand, good, work):
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.join(work, "runs"))
    path = os.path.join(work, "runs", "damaged.h5")
    shutil.copyfile(good, path)
    with h5py.File(path, "r+") as f:
        for k, v in BAD.items():
            put_bytes_attr(f, k, v)
        f.attrs["axes"] = np.array([b"param.factor"], dtype=h5py.string_dtype("utf-8"))
        f.attrs.create(BAD_ATTR_NAME, np.array(b"v", dtype=h5py.string_dtype("utf-8")))
        # A fixed-length, NUL-padded string with bytes after an embedded NUL, as another program writes.
        f.attrs.create("fixed", np.array(FIXED, dtype="S12"))
        n = f["metrics/train/step"].shape[0]
        f["metrics/train"].create_dataset(BAD_COLUMN, data=np.zeros(n), maxshape=(None,), chunks=True)
    checks = 0

    p = run(xpand, "inspect", path, "--json")
    if p.returncode != 0:
        raise SystemExit(f"FAIL: inspect --json exited {p.returncode}: {p.stderr.decode(errors='replace')}")
    doc = json.loads(strict(p.stdout, "inspect FILE --json"))
    attrs = doc["attributes"]
    for k in ("run_id", "name", "error", "config"):
        want = decoded(BAD[k])
        assert attrs[k] == want, f"{k}: {attrs[k]!r} != Python's {want!r}"
        passthrough = BAD[k].split(b"\0")[0].decode("latin-1")
        assert attrs[k] != passthrough, f"{k}: the comparison cannot tell a pass-through from a fix"
        checks += 1
    assert attrs["fixed"] == decoded(FIXED), f"fixed: {attrs['fixed']!r} != {decoded(FIXED)!r}"
    assert decoded(BAD_ATTR_NAME) in attrs, f"attribute name {decoded(BAD_ATTR_NAME)!r} missing: {sorted(attrs)}"
    assert decoded(BAD_COLUMN) in doc["train"]["columns"], sorted(doc["train"]["columns"])
    checks += 2

    p = run(xpand, "inspect", work, "--json")
    doc = json.loads(strict(p.stdout, "inspect DIR --json"))
    (row,) = doc["runs"]
    assert row["run_id"] == decoded(BAD["run_id"]), row["run_id"]
    assert row["error"] == decoded(BAD["error"]), row["error"]
    assert row["axes"]["param.factor"] == decoded(BAD["param.factor"]), row["axes"]
    checks += 3

    for args in (["inspect", path, "--csv"], ["inspect", work, "--csv"], ["inspect", path], ["inspect", work]):
        p = run(xpand, *args)
        assert p.returncode == 0, f"xpand {' '.join(args)} exited {p.returncode}: {p.stderr.decode(errors='replace')}"
        text = strict(p.stdout, "xpand " + " ".join(args))
        if args[1] == work or "--csv" not in args:  # the run table and the one-run text name the run
            assert decoded(BAD["run_id"]) in text, f"xpand {' '.join(args)} does not show the run id"
        if "--csv" not in args:
            ctrl = [c for c in text if (ord(c) < 0x20 and c not in "\n\t") or ord(c) == 0x7F]
            assert not ctrl, f"xpand {' '.join(args)} prints raw control characters {ctrl!r}"
        strict(p.stderr, "stderr of xpand " + " ".join(args))
        checks += 1

    p = run(xpand, "index", work)
    assert p.returncode == 0, p.stderr
    with h5py.File(os.path.join(work, "index.h5"), "r") as f:
        ids = list(f["summary/run_id"].asstr()[:])
        errors = list(f["summary/error"].asstr()[:])
        axis = list(f["summary/axis.param.factor"].asstr()[:])
    assert ids == [decoded(BAD["run_id"])] and errors == [decoded(BAD["error"])], (ids, errors)
    assert axis == [decoded(BAD["param.factor"])], axis
    checks += 1
    print(f"utf8_strings: {checks} passed, 0 failed")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
