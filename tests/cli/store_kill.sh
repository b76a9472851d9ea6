#!/usr/bin/env bash
# Crash safety and resume. One run is killed with SIGKILL at KILLS random moments (start-up,
# training, evaluation, snapshot, checkpoint, resume), and started again with the same command after
# each kill. After every kill its files must open with h5py (swmr=True), say status running, and
# hold metrics whose steps count 1, 2, 3, ... and never exceed the steps taken so far; the
# checkpoint, when there is one, must open and must never go back in steps. At the end the run
# resumes to completion and must equal, bit for bit, the same run trained without interruption:
# final raw parameters, optimizer state and every metric that does not measure time or memory.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cli_init "$@"
KILLS=${KILLS:-20}
SEED=${KILL_SEED:-$RANDOM}
echo "kills: $KILLS, random seed: $SEED (KILL_SEED=$SEED reproduces the kill times)"
RANDOM=$SEED

cat >"$WORK/run.yaml" <<YAML
name: crash
seed: 11
data: {name: teacher, teacher_inputs: 32, teacher_classes: 6, train_size: 6000, test_size: 400, batch_size: 32}
model: {kind: mlp, widths: [32, 128, 64, 6]}
param: {kind: expanded, factor: 2, depth: 2}
train: {optimizer: adam, lr: 0.002, epochs: 2, eval_every: 40, log_every: 1000}
output: {snapshot_every: 60, snapshot_factors: true, checkpoint_every: 25, flush_seconds: 0.1}
YAML
TOTAL=374  # 2 epochs x floor(6000/32)

step "the uninterrupted reference run"
run_xpand "$WORK/ref.out" "$WORK/ref.err" train "$WORK/run.yaml" --out "$WORK/ref"
[ "$RC" -eq 0 ] || { show "$WORK/ref.err"; fail "reference run exited $RC"; }
REF=$(ls "$WORK"/ref/runs/crash-*.h5)
REF_SECONDS=$("$PYTHON" -c 'import h5py,sys; print(h5py.File(sys.argv[1],"r").attrs["wall_seconds"])' "$REF")
ok "reference: $REF ($REF_SECONDS s of training)"

check_killed() {  # FILE_DIR ATTEMPT: the state a kill left
  "$PYTHON" - "$WORK/killed" "$1" "$TOTAL" <<'PY'
import glob, os, sys, h5py, numpy as np
d, attempt, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
runs = glob.glob(d + "/runs/crash-*.h5")
if not runs:
    print(f"  kill {attempt}: no run file yet (killed during start-up)")
    sys.exit(0)
(path,) = runs
with h5py.File(path, "r", swmr=True) as f:
    status = f.attrs["status"]
    if status == "completed":
        print(f"  kill {attempt}: the run had already completed")
        sys.exit(0)
    assert status == "running", f"status {status!r} after a kill"
    steps = f["metrics/train/step"][:]
    assert np.array_equal(steps, np.arange(1, len(steps) + 1)), f"train steps not 1..n: {steps[:5]}...{steps[-5:]}"
    assert len(steps) <= total, f"{len(steps)} rows > {total} steps"
    ev = f["metrics/eval/step"][:]
    assert np.all(np.diff(ev) > 0) and (len(ev) == 0 or ev[-1] <= max(len(steps), 1) + 40), f"eval steps {ev}"
    for t in ("train", "eval"):
        lens = {c: f[f"metrics/{t}/{c}"].shape[0] for c in f[f"metrics/{t}"]}
        assert len(set(lens.values())) == 1, f"/metrics/{t} column lengths differ: {lens}"
    snaps = sorted(f["snapshots"])
    ckpt = os.path.join(d, "checkpoints", os.path.basename(path))
    cstep = 0
    if os.path.exists(ckpt):
        with h5py.File(ckpt, "r") as c:
            cstep = int(c.attrs["step"])
            assert 0 < cstep <= total and list(c["params"]), "checkpoint content"
    prev = int(open(d + "/last_ckpt").read()) if os.path.exists(d + "/last_ckpt") else 0
    assert cstep >= prev or cstep == 0, f"checkpoint went back from step {prev} to {cstep}"
    open(d + "/last_ckpt", "w").write(str(cstep))
    print(f"  kill {attempt}: status running, {len(steps)} train rows, {len(ev)} evals, "
          f"{len(snaps)} snapshots, checkpoint at step {cstep}")
PY
}

step "$KILLS kills at random moments, each followed by the same command"
kills=0
for attempt in $(seq 1 "$KILLS"); do
  # Uniform over start-up (~0.3 s) plus the whole reference run, in ms.
  delay_ms=$(( RANDOM % (300 + ${REF_SECONDS%.*} * 1000 + 700) + 50 ))
  "$XPAND" train "$WORK/run.yaml" --out "$WORK/killed" >"$WORK/k$attempt.out" 2>&1 &
  pid=$!
  sleep "$(printf '%d.%03d' $((delay_ms / 1000)) $((delay_ms % 1000)))"
  if kill -9 $pid 2>/dev/null; then
    kills=$((kills + 1))
    wait $pid 2>/dev/null || true
    check_killed "$attempt" || fail "the kill after $delay_ms ms left a bad file (attempt $attempt, KILL_SEED=$SEED)"
  else
    wait $pid || { show "$WORK/k$attempt.out"; fail "attempt $attempt failed on its own"; }
    echo "  attempt $attempt: finished before its kill at $delay_ms ms"
  fi
done
ok "$kills kills; every file opened, status running, metrics consistent"

step "resume to completion and compare with the uninterrupted run"
run_xpand "$WORK/final.out" "$WORK/final.err" train "$WORK/run.yaml" --out "$WORK/killed"
[ "$RC" -eq 0 ] || { show "$WORK/final.err"; fail "final resume exited $RC"; }
grep -h "resuming from the checkpoint" "$WORK"/k*.out "$WORK/final.err" | sed 's/^/    /' | tail -5 || true
KILLED=$(ls "$WORK"/killed/runs/crash-*.h5)
"$PYTHON" - "$REF" "$KILLED" <<'PY' || fail "the resumed run differs from the uninterrupted one"
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
assert b.attrs["status"] == "completed", b.attrs["status"]
timing = {"time_step", "time_compute", "time_comm", "time_comm_exposed", "mem_peak"}
n = 0
for t in ("train", "eval"):
    for c in a[f"metrics/{t}"]:
        if c in timing:
            continue
        x, y = a[f"metrics/{t}/{c}"][:], b[f"metrics/{t}/{c}"][:]
        assert x.shape == y.shape and np.array_equal(x, y), f"/metrics/{t}/{c} differs"
        n += 1
for g in ("params", "buffers", "optimizer"):
    def visit(name, obj, g=g):
        global n
        if isinstance(obj, h5py.Dataset):
            assert np.array_equal(obj[()], b["checkpoint"][g][name][()]), f"/checkpoint/{g}/{name} differs"
            n += 1
    a["checkpoint"][g].visititems(visit)
assert sorted(a["snapshots"]) == sorted(b["snapshots"]), "snapshot steps differ"
for s in a["snapshots"]:
    for layer in a["snapshots"][s]:
        assert np.array_equal(a["snapshots"][s][layer]["weight"][()], b["snapshots"][s][layer]["weight"][()]), \
            f"snapshot {s}/{layer} differs"
print(f"    bit-identical: {n} metric columns and checkpoint tensors, {len(a['snapshots'])} snapshots; "
      f"resumes: {b.attrs['resumes']}, last resumed from step {b.attrs['resumed_from_step']}")
PY
ok "resumed run equals the uninterrupted run"
echo "store_kill: all checks passed"
