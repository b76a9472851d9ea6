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

# dist.cut auto on an expanded network: the run file's /cut says per layer what was chosen, what
# each option was predicted to cost, and what was measured; the measured bytes add up to the step's
# comm_bytes; the calibration is cached beside the output, and the next run reads it.
step "2 ranks, expanded, dist.cut auto: /cut and the calibration cache"
exp=(--set param.kind=expanded --set param.factor=2 --set param.depth=2 --set train.max_steps=5 --set train.epochs=0
     --set train.eval_every=5)
for pass in 1 2; do
  "$MPIEXEC" -np 2 "$XPAND" train "$SRC/configs/fmnist-mlp.yaml" --out "$WORK/cut" --force "${exp[@]}" \
    >"$WORK/oc$pass" 2>"$WORK/ec$pass" || { show "$WORK/ec$pass"; fail "exit"; }
done
grep -q "dist.cut auto: .* measured" "$WORK/ec1" || { show "$WORK/ec1"; fail "the first run did not measure"; }
grep -q "dist.cut auto: .* cached $WORK/cut/calibration/calibration-" "$WORK/ec2" ||
  { show "$WORK/ec2"; fail "the second run did not read the cached calibration"; }
"$PYTHON" - "$WORK"/cut/runs/*.h5 <<'PY'
import sys
import h5py
import numpy as np

with h5py.File(sys.argv[1], "r") as f:
    c = f["cut"]
    layers = list(c["layer"].asstr()[:])
    assert layers == list(f["layers/name"].asstr()[:]), layers
    assert c.attrs["mode"] == "auto", c.attrs["mode"]
    choice = list(c["choice"].asstr()[:])
    assert set(choice) <= {"weight", "raw"}, choice  # every expanded layer has both options
    raw, cut = c["predicted_raw_s"][:], c["predicted_cut_s"][:]
    assert np.all(np.isfinite(raw)) and np.all(np.isfinite(cut)) and np.all(raw > 0) and np.all(cut > 0)
    # The choice minimises the predicted step over single-layer changes (docs/DISTRIBUTED.md):
    # step = C + buckets(S) * latency + max(0, S / bandwidth - overlap * 2/3 * C), recomputed here
    # from the columns (buckets: 1 MiB first, then 25 MiB each, the dist.* defaults).
    bw, ov, lat = c.attrs["link_bytes_per_s"], c.attrs["link_overlap"], c.attrs["link_latency_s"]
    assert bw > 0 and 0 <= ov <= 1 and lat >= 0, (bw, ov, lat)
    MiB = 1048576.0

    def buckets(S):
        return 0 if S <= 0 else 1 if S <= MiB else 1 + int(np.ceil((S - MiB) / (25 * MiB)))

    nbytes = {"raw": c["raw_bytes"][:].astype(float), "weight": c["cut_bytes"][:].astype(float)}
    comp = {"raw": raw - nbytes["raw"] / bw, "weight": cut - nbytes["weight"] / bw}

    def step(assign):
        C = sum(comp[a][i] for i, a in enumerate(assign))
        S = sum(nbytes[a][i] for i, a in enumerate(assign))
        return C + buckets(S) * lat + max(0.0, S / bw - ov * 2 / 3 * C)

    best = step(choice)
    for i in range(len(choice)):
        other = list(choice)
        other[i] = "raw" if choice[i] == "weight" else "weight"
        assert step(other) >= best * (1 - 1e-9), (layers[i], choice, step(other), best)
    for i, ch in enumerate(choice):
        want = c["cut_bytes"][i] if ch == "weight" else c["raw_bytes"][i]
        assert c["bytes"][i] == want and c["measured_bytes"][i] == want, (layers[i], c["bytes"][i], want)
        assert (c["measured_cut_s"][i] > 0) == (ch == "weight"), (layers[i], c["measured_cut_s"][i])
    biases = 4 * (512 + 512 + 10)  # the layers' own biases travel outside the slots
    steps = f["metrics/train/comm_bytes"][:]
    assert np.all(steps == c["measured_bytes"][:].sum() + biases), (steps, c["measured_bytes"][:])
    assert c.attrs["measured_steps"] == 5
    comm = f["metrics/train/time_comm"][:].mean()
    assert 0 < c["measured_comm_s"][:].sum() <= comm + 1e-12, (c["measured_comm_s"][:], comm)
    print("    " + ", ".join(f"{n}: {ch} (raw {1e3 * r:.2f} ms, cut {1e3 * k:.2f} ms)"
                            for n, ch, r, k in zip(layers, choice, raw, cut)))
PY
ok "/cut records the choice, its predictions and measurements; the calibration is cached"
