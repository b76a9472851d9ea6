#!/usr/bin/python3
"""Checks an xpand run file (HDF5) with h5py: prints its attributes and per-table row counts and
verifies the metrics layout (/metrics/<table>/<column>: 1-D, maxshape (None,), equal lengths, int64
non-decreasing `step`), plus optional --expect-* and --require-schema checks. Exit 0 ok, 1 failed.

usage: /usr/bin/python3 read_run.py FILE.h5 [--expect-rows train=N ...] [--expect-attr status=completed ...]
                                            [--require-schema] [--quiet]
"""
import argparse
import sys

try:
    import h5py
    import numpy as np
except ImportError as e:  # e.g. a venv python on PATH without h5py
    print(f"read_run.py: cannot import h5py/numpy ({e}); run it with /usr/bin/python3", file=sys.stderr)
    sys.exit(1)

# What the trainer writes (checked by --require-schema).
SCHEMA_ATTRS = ["schema_version", "run_id", "status", "config"]
SCHEMA_TABLES = {
    "train": ["step", "loss", "lr", "grad_norm", "time_step"],
    "eval": ["step", "train_loss", "train_acc", "test_loss", "test_acc"],
}


def key_value(text, what):
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"{what} must look like KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    if not key:
        raise argparse.ArgumentTypeError(f"{what} has an empty key: {text!r}")
    return key, value


def key_values(text, what):
    return [key_value(part, what) for part in text.split(",") if part]


class Parser(argparse.ArgumentParser):
    def error(self, message):  # usage errors exit 1 like every other failure
        self.print_usage(sys.stderr)
        print(f"read_run.py: error: {message}", file=sys.stderr)
        sys.exit(1)


def parse_args(argv):
    p = Parser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", help="run file (.h5)")
    # One KEY=VALUE per flag (repeat the flag), so a FILE after the flags is never swallowed;
    # row counts also accept a comma list: --expect-rows train=100,eval=5.
    p.add_argument("--expect-rows", action="extend", default=[], metavar="TABLE=N[,TABLE=N]",
                   type=lambda s: key_values(s, "--expect-rows"),
                   help="table TABLE must have exactly N rows (repeatable)")
    p.add_argument("--expect-min-rows", action="extend", default=[], metavar="TABLE=N[,TABLE=N]",
                   type=lambda s: key_values(s, "--expect-min-rows"),
                   help="table TABLE must have at least N rows (repeatable)")
    p.add_argument("--expect-attr", action="append", default=[], metavar="NAME=VALUE",
                   type=lambda s: key_value(s, "--expect-attr"),
                   help="root attribute NAME must equal VALUE (compared as the attribute's type)")
    p.add_argument("--require-schema", action="store_true",
                   help="require the trainer's attributes " + ", ".join(SCHEMA_ATTRS) +
                   " and tables " + "; ".join(f"{t} {{{','.join(c)}}}" for t, c in SCHEMA_TABLES.items()))
    p.add_argument("--quiet", action="store_true", help="print only failures")
    args = p.parse_args(argv)
    for flag in ("expect_rows", "expect_min_rows"):
        for table, n in getattr(args, flag):
            try:
                if int(n) < 0:
                    raise ValueError
            except ValueError:
                p.error(f"--{flag.replace('_', '-')} {table}={n}: N must be a non-negative integer")
    return args


def as_python(value):
    """Attribute value as a plain Python object (str for strings, int/float for scalars)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, np.generic):
        value = value.item()
        if isinstance(value, bytes):
            return value.decode("utf-8", errors="replace")
    return value


def show(value, limit=100):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def attr_matches(actual, expected):
    """Compares an attribute with the text given on the command line, using the attribute's type."""
    if isinstance(actual, bool):
        return str(actual).lower() == expected.lower() or expected == str(int(actual))
    if isinstance(actual, int):
        try:
            return actual == int(expected)
        except ValueError:
            return False
    if isinstance(actual, float):
        try:
            want = float(expected)
        except ValueError:
            return False
        return actual == want or (np.isnan(actual) and np.isnan(want)) or np.isclose(actual, want, rtol=1e-12, atol=0)
    return str(actual) == expected


def check_tables(f, errors):
    """Checks /metrics; returns {table: {column: dataset}} and {table: rows} for consistent tables."""
    tables, rows = {}, {}
    if "metrics" not in f:
        return tables, rows
    metrics = f["metrics"]
    if not isinstance(metrics, h5py.Group):
        errors.append("/metrics is not a group")
        return tables, rows
    for tname in sorted(metrics.keys()):
        group = metrics.get(tname)
        where = f"/metrics/{tname}"
        if not isinstance(group, h5py.Group):
            errors.append(f"{where} is not a group (a table must be a group of column datasets)")
            continue
        cols = {}
        for cname in sorted(group.keys()):
            ds = group.get(cname)
            cw = f"{where}/{cname}"
            if not isinstance(ds, h5py.Dataset):
                errors.append(f"{cw} is not a dataset")
                continue
            if ds.ndim != 1:
                errors.append(f"{cw} has shape {ds.shape}, expected 1-D")
                continue
            if ds.maxshape != (None,):
                errors.append(f"{cw} has maxshape {ds.maxshape}, expected (None,)")
            if ds.dtype.kind not in "iuf":
                errors.append(f"{cw} has dtype {ds.dtype}, expected a numeric type")
            cols[cname] = ds
        tables[tname] = cols
        if not cols:
            errors.append(f"{where} has no columns")
            continue
        lengths = {c: d.shape[0] for c, d in cols.items()}
        if len(set(lengths.values())) != 1:
            errors.append(f"{where}: columns have different lengths: "
                          + ", ".join(f"{c}={n}" for c, n in lengths.items()))
        else:
            rows[tname] = next(iter(lengths.values()))
        if "step" in cols:
            step = cols["step"]
            if step.dtype != np.dtype("int64"):
                errors.append(f"{where}/step has dtype {step.dtype}, expected int64")
            values = step[()]
            if values.size > 1:
                bad = np.nonzero(np.diff(values) < 0)[0]
                if bad.size:
                    i = int(bad[0])
                    errors.append(f"{where}/step decreases at row {i + 1}: {values[i]} -> {values[i + 1]}")
    return tables, rows


def check_file(args):
    errors = []
    try:
        f = h5py.File(args.file, "r")
    except (OSError, ValueError) as e:
        return [f"cannot open as HDF5: {e}"]
    with f:
        attrs = {}
        for name in sorted(f.attrs.keys()):
            try:
                attrs[name] = as_python(f.attrs[name])
            except (OSError, TypeError, ValueError) as e:
                errors.append(f"attribute {name!r} cannot be read: {e}")
        tables, rows = check_tables(f, errors)

        if not args.quiet:
            print(f"file: {args.file}")
            print("attributes:")
            for name, value in attrs.items():
                print(f"  {name} = {show(value)}")
            print("tables:")
            if not tables:
                print("  (none)")
            for tname, cols in tables.items():
                n = rows.get(tname, "inconsistent")
                print(f"  {tname}: {n} rows, columns: "
                      + ", ".join(f"{c}[{d.dtype}]" for c, d in cols.items()))

        if args.require_schema:
            for name in SCHEMA_ATTRS:
                if name not in attrs:
                    errors.append(f"schema: missing root attribute {name!r}")
            if "schema_version" in attrs and not isinstance(attrs["schema_version"], int):
                errors.append(f"schema: attribute 'schema_version' is {type(attrs['schema_version']).__name__}, expected an integer")
            for name in ("run_id", "status", "config"):
                if name in attrs and not isinstance(attrs[name], str):
                    errors.append(f"schema: attribute {name!r} is {type(attrs[name]).__name__}, expected a string")
            for tname, wanted in SCHEMA_TABLES.items():
                if tname not in tables:
                    errors.append(f"schema: missing table /metrics/{tname}")
                    continue
                missing = [c for c in wanted if c not in tables[tname]]
                if missing:
                    errors.append(f"schema: table /metrics/{tname} lacks columns {', '.join(missing)}")

        for tname, n in args.expect_rows:
            if tname not in tables:
                errors.append(f"--expect-rows {tname}={n}: no table /metrics/{tname}")
            elif tname in rows and rows[tname] != int(n):
                errors.append(f"--expect-rows {tname}={n}: table has {rows[tname]} rows")
        for tname, n in args.expect_min_rows:
            if tname not in tables:
                errors.append(f"--expect-min-rows {tname}={n}: no table /metrics/{tname}")
            elif tname in rows and rows[tname] < int(n):
                errors.append(f"--expect-min-rows {tname}={n}: table has {rows[tname]} rows")
        for name, expected in args.expect_attr:
            if name not in attrs:
                errors.append(f"--expect-attr {name}={expected}: no attribute {name!r}")
            elif not attr_matches(attrs[name], expected):
                errors.append(f"--expect-attr {name}={expected}: attribute is {show(attrs[name])}")
    return errors


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    errors = check_file(args)
    if errors:
        for e in errors:
            print(f"read_run.py: {args.file}: FAIL: {e}", file=sys.stderr)
        return 1
    if not args.quiet:
        print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
