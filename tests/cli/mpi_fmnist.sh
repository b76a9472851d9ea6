#!/usr/bin/env bash
# `mpirun -np 2 xpand train configs/fmnist-mlp.yaml` reaches the accuracy of one rank at the same
# global batch, and its run file records world size 2 and the per-step communication metrics.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cli_init "$@"

step "1 rank"
"$XPAND" train "$SRC/configs/fmnist-mlp.yaml" --out "$WORK/np1" >"$WORK/o1" 2>"$WORK/e1" || { show "$WORK/e1"; fail "exit"; }
step "2 ranks"
"$MPIEXEC" -np 2 "$XPAND" train "$SRC/configs/fmnist-mlp.yaml" --out "$WORK/np2" >"$WORK/o2" 2>"$WORK/e2" ||
  { show "$WORK/e2"; fail "exit"; }
"$PYTHON" - "$WORK"/np1/runs/*.h5 "$WORK"/np2/runs/*.h5 <<'PY'
import sys
import h5py
import numpy as np

one, two = (h5py.File(p, "r") for p in sys.argv[1:3])
acc1, acc2 = one["metrics/eval/test_acc"][-1], two["metrics/eval/test_acc"][-1]
print(f"    test accuracy: 1 rank {acc1:.4f}, 2 ranks {acc2:.4f}")
assert acc1 >= 0.84 and acc2 >= 0.84, "below 84%"
assert abs(acc1 - acc2) <= 0.01, "the 2-rank run is more than 1 point away from the 1-rank run"
assert one.attrs["world_size"] == 1 and two.attrs["world_size"] == 2, (one.attrs["world_size"], two.attrs["world_size"])
assert two.attrs["dist_backend"] == "mpi"
t = two["metrics/train"]
assert len(t["step"]) == len(one["metrics/train/step"]), "different step counts"
# Dense 784-512-512-10 with biases: every parameter's float32 gradient, every step.
want = 4 * (784 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10)
assert np.all(t["comm_bytes"][:] == want), (t["comm_bytes"][:5], want)
assert np.all(one["metrics/train/comm_bytes"][:] == 0)
for col in ("time_comm", "time_comm_exposed", "time_compute"):
    v = t[col][:]
    assert np.all(np.isfinite(v)) and np.all(v >= 0), col
assert np.all(t["time_comm_exposed"][:] <= t["time_step"][:] + 1e-9)
print(f"    2 ranks: {want} bytes/step, median comm {1e3 * np.median(t['time_comm'][:]):.2f} ms, "
      f"exposed {1e3 * np.median(t['time_comm_exposed'][:]):.2f} ms, step {1e3 * np.median(t['time_step'][:]):.2f} ms")
PY
ok "same accuracy, world_size 2 and communication metrics recorded"
