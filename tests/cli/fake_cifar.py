#!/usr/bin/env python3
"""A stand-in for CIFAR-10: a cifar-10-python.tar.gz laid out as the real one (cifar-10-batches-py/
data_batch_1..5 and test_batch, pickles of b"data" (N, 3072) uint8 and b"labels"), with random images
and every class in every batch, converted to IDX by scripts/cifar_idx.py as a user converts the real
archive. Used by tests/cli/presets.sh and tests/reference/expandnets.py.

Usage: fake_cifar.py WORKDIR [IMAGES_PER_BATCH]   (prints the IDX directory)
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
    rng = np.random.default_rng(SEED)
    os.makedirs(workdir, exist_ok=True)
    archive = os.path.join(workdir, "cifar-10-python.tar.gz")
    with tarfile.open(archive, "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            d = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"labels": [i % 10 for i in range(per_batch)]}
            blob = pickle.dumps(d)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    out = os.path.join(workdir, "cifar10-idx")
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "cifar_idx.py"), archive, out], check=True,
                   stdout=subprocess.DEVNULL)
    return out


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print(write(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 10))
