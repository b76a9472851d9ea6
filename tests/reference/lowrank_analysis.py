"""The low-rank notebook's metrics from `xpand analyze` against numpy.

The notebook tabulates, per trained weight matrix W, the absolute Frobenius error ||W - W_r||_F of
its best rank-r approximation (the truncated SVD), and calls "effective rank" the smallest r whose
error is below a threshold. xpand analyze prints those as svd_abs_error and threshold_rank
(--error-threshold), next to its relative errors and the entropy rank exp(H(sigma / sum sigma)),
which is a different quantity with a similar name. This test trains a small run, reads its last
snapshot's weights with h5py, and recomputes every one of those numbers with numpy: W_r rebuilt
from U, S, V^T (not from the tail of the singular values, which is how xpand computes them).
Usage: lowrank_analysis.py XPAND_BINARY [WORKDIR]
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import h5py
import numpy as np

RANKS = [1, 3, 8]


def main():
    xpand = sys.argv[1]
    work = sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp(prefix="xpand-lowrank-analysis-")
    os.makedirs(work, exist_ok=True)
    config = os.path.join(work, "run.yaml")
    with open(config, "w") as f:
        f.write("name: lowrank-analysis\nseed: 3\n"
                "data: {name: teacher, teacher_inputs: 20, teacher_classes: 5, train_size: 256, batch_size: 32}\n"
                "model: {kind: mlp, widths: [20, 16, 5]}\n"
                "train: {optimizer: adam, lr: 0.01, max_steps: 40}\n")
    out = os.path.join(work, "out")
    shutil.rmtree(out, ignore_errors=True)  # a run of an earlier build may be there under another id
    subprocess.run([xpand, "--log-level", "warn", "train", config, "--out", out, "--force"], check=True,
                   capture_output=True)
    runs = [os.path.join(out, "runs", n) for n in os.listdir(os.path.join(out, "runs")) if n.endswith(".h5")]
    assert len(runs) == 1, runs
    failures = []
    with h5py.File(runs[0], "r") as f:
        step = sorted(f["/snapshots"])[-1]
        weights = {name: f[f"/snapshots/{step}/{name}/weight"][()] for name in f[f"/snapshots/{step}"]}
    # A threshold between two of fc1's achievable errors, so that the rank it picks is not an edge case.
    s1 = np.linalg.svd(weights["fc1"], compute_uv=False)
    tails = np.sqrt(np.cumsum((s1 ** 2)[::-1])[::-1])
    threshold = float(0.5 * (tails[4] + tails[5]))
    print(f"run {runs[0]}, snapshot {step}, error threshold {threshold:.6g}")
    r = subprocess.run([xpand, "analyze", runs[0], "--json", "--ranks", ",".join(map(str, RANKS)),
                        "--error-threshold", repr(threshold)], check=True, capture_output=True, text=True)
    report = json.loads(r.stdout)
    for layer in report["layers"]:
        w = weights[layer["name"]]
        u, s, vt = np.linalg.svd(w, full_matrices=False)
        fro = np.linalg.norm(w)

        def err(k):
            return float(np.linalg.norm(w - (u[:, :k] * s[:k]) @ vt[:k]))

        want_thr = next(k for k in range(len(s) + 1) if err(k) <= threshold)
        p = s / s.sum()
        entropy_rank = float(np.exp(-(p[p > 0] * np.log(p[p > 0])).sum()))
        checks = [("threshold_rank", layer["threshold_rank"], want_thr, 0),
                  ("entropy_rank", layer["entropy_rank"], entropy_rank, 1e-9)]
        for fit in layer["fits"]:
            k = fit["rank"]
            checks += [(f"svd_abs_error r={k}", fit["svd_abs_error"], err(k), 1e-9),
                       (f"svd_error r={k}", fit["svd_error"], err(k) / fro, 1e-9),
                       # gradient descent cannot beat the truncated SVD (Eckart-Young), in absolute terms too
                       (f"gd_abs_error r={k} >= the SVD's", min(fit["gd_abs_error"], err(k) * (1 + 1e-9)), err(k),
                        1e-9)]
        for what, got, want, tol in checks:
            ok = abs(got - want) <= tol * max(1.0, abs(want))
            print(f"  {'ok  ' if ok else 'FAIL'} {layer['name']} {what}: xpand {got}, numpy {want}")
            if not ok:
                failures.append(f"{layer['name']} {what}: xpand {got}, numpy {want}")
    if failures:
        print("FAILED:\n" + "\n".join(failures))
        sys.exit(1)
    print("all low-rank metrics agree with numpy")


if __name__ == "__main__":
    main()
