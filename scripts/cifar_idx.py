#!/usr/bin/env python3
"""Converts CIFAR-10 (the python version, cifar-10-python.tar.gz from
https://www.cs.toronto.edu/~kriz/cifar.html) to the IDX files xpand's `data.name: images` reads:
train-images-idx4-ubyte (50000, 3, 32, 32), train-labels-idx1-ubyte, t10k-images-idx4-ubyte (10000, 3,
32, 32) and t10k-labels-idx1-ubyte. Pixels stay uint8 in CIFAR's channel-major order (R, G, B planes),
labels 0..9 in the batches' order (data_batch_1 .. data_batch_5, then test_batch).

Usage: /usr/bin/python3 scripts/cifar_idx.py cifar-10-python.tar.gz OUT_DIR
"""
import argparse
import os
import pickle
import struct
import sys
import tarfile

import numpy as np


def write_idx(path, array):
    """IDX: two zero bytes, type 0x08 (unsigned byte), the rank, each dimension as a big-endian int32, data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 0x08, array.ndim))
        f.write(struct.pack(">" + "i" * array.ndim, *array.shape))
        f.write(array.tobytes())
    os.replace(tmp, path)


def read_batches(tar, names):
    images, labels = [], []
    for name in names:
        member = next((m for m in tar.getmembers() if m.name.endswith("/" + name)), None)
        if member is None:
            sys.exit(f"cifar_idx: {name} is not in the archive (is it cifar-10-python.tar.gz?)")
        d = pickle.load(tar.extractfile(member), encoding="bytes")
        images.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(d[b"labels"], dtype=np.uint8))
    return np.concatenate(images), np.concatenate(labels)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("archive", help="cifar-10-python.tar.gz")
    ap.add_argument("out", help="directory for the four IDX files")
    a = ap.parse_args()
    if not os.path.isfile(a.archive):
        sys.exit(f"cifar_idx: {a.archive}: no such file")
    os.makedirs(a.out, exist_ok=True)
    with tarfile.open(a.archive, "r:gz") as tar:
        tr_x, tr_y = read_batches(tar, [f"data_batch_{i}" for i in range(1, 6)])
        te_x, te_y = read_batches(tar, ["test_batch"])
    write_idx(os.path.join(a.out, "train-images-idx4-ubyte"), tr_x)
    write_idx(os.path.join(a.out, "train-labels-idx1-ubyte"), tr_y)
    write_idx(os.path.join(a.out, "t10k-images-idx4-ubyte"), te_x)
    write_idx(os.path.join(a.out, "t10k-labels-idx1-ubyte"), te_y)
    print(f"cifar_idx: wrote {a.out}: train {tr_x.shape}, test {te_x.shape}")


if __name__ == "__main__":
    main()
