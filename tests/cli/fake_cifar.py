#!/usr/bin/env python3
"""A stand-in for CIFAR-10, random images with every class in every batch, in both forms xpand reads:
the binary distribution (cifar-10-batches-bin/data_batch_1..5.bin and test_batch.bin, records of a
label byte and 3072 pixel bytes; data.name cifar10), and IDX converted by scripts/cifar_idx.py from a
cifar-10-python.tar.gz laid out as the real one (cifar-10-batches-py/, pickles of b"data" (N, 3072)
uint8 and b"labels"; data.name images), as a user converts the real archive. The same images in both.
Used by tests/cli/presets.sh and tests/reference/expandnets.py.

Usage: fake_cifar.py WORKDIR [IMAGES_PER_BATCH] [--idx]   (prints the binary directory, or the IDX one)
"""
import io
import os
import pickle
import subprocess
import sys
import tarfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEED = 20241208


def write(workdir, per_batch=10):
    """Writes both forms under workdir; returns (binary directory, IDX directory)."""
    rng = np.random.default_rng(SEED)
    os.makedirs(workdir, exist_ok=True)
    archive = os.path.join(workdir, "cifar-10-python.tar.gz")
    binary = os.path.join(workdir, "cifar-10-batches-bin")
    os.makedirs(binary, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            d = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"labels": [i % 10 for i in range(per_batch)]}
            records = np.concatenate([np.array(d[b"labels"], np.uint8)[:, None], d[b"data"]], axis=1)
            records.tofile(os.path.join(binary, name + ".bin"))
            blob = pickle.dumps(d)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    out = os.path.join(workdir, "cifar10-idx")
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "cifar_idx.py"), archive, out], check=True,
                   stdout=subprocess.DEVNULL)
    return binary, out


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--idx"]
    if not args:
        sys.exit(__doc__)
    binary, idx = write(args[0], int(args[1]) if len(args) > 1 else 10)
    print(idx if "--idx" in sys.argv else binary)
