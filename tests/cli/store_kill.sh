#!/usr/bin/env bash
# Crash safety and resume. KILLS runs (20 by default), each in its own output directory, are killed
# with SIGKILL at a random moment of their life (start-up, training, evaluation, snapshot,
# checkpoint, end). After each kill the run file must open with h5py (swmr=True), say status
# running, and hold metrics whose steps count 1, 2, 3, ... (no more than the run has); the checkpoint,
# when there is one, must open. Then the same command resumes the run, which must end equal, bit for
# bit, to the run trained without interruption: final raw parameters, optimizer state, snapshots and
# every metric that does not measure time or memory.
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

step "the uninterrupted reference run (twice: it must repeat itself, and the faster time sets the kill window)"
LIFE_MS=""
for ref in ref ref2; do
  t0=$(date +%s%N)
  run_xpand "$WORK/$ref.out" "$WORK/$ref.err" train "$WORK/run.yaml" --out "$WORK/$ref"
  [ "$RC" -eq 0 ] || { show "$WORK/$ref.err"; fail "reference run exited $RC"; }
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  [ -z "$LIFE_MS" ] || [ "$ms" -lt "$LIFE_MS" ] && LIFE_MS=$ms
done
REF=$(ls "$WORK"/ref/runs/crash-*.h5)
ok "reference: $REF (the whole command takes $LIFE_MS ms)"

check_killed() {  # DIR ATTEMPT: the state a kill left
  "$PYTHON" - "$1" "$2" "$TOTAL" <<'PY'
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
    assert cstep <= len(steps), f"checkpoint at step {cstep} ahead of the {len(steps)} metric rows"
    print(f"  kill {attempt}: status running, {len(steps)} train rows, {len(ev)} evals, "
          f"{len(snaps)} snapshots, checkpoint at step {cstep}")
PY
}

compare() {  # RUN_FILE: equal to the reference, bit for bit
  "$PYTHON" - "$REF" "$1" <<'PY'
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
        for k in a["snapshots"][s][layer]:
            if isinstance(a["snapshots"][s][layer][k], h5py.Dataset):
                assert np.array_equal(a["snapshots"][s][layer][k][()], b["snapshots"][s][layer][k][()]), \
                    f"snapshot {s}/{layer}/{k} differs"
print(f"    bit-identical to the reference: {n} metric columns and checkpoint tensors, "
      f"{len(a['snapshots'])} snapshots (resumed from step {b.attrs['resumed_from_step']})")
PY
}

compare "$WORK/ref2/runs/$(basename "$REF")" || fail "two uninterrupted runs differ"

step "$KILLS runs killed at random moments, each resumed to completion"
kills=0 resumed=0
for attempt in $(seq 1 "$KILLS"); do
  dir="$WORK/killed-$attempt"
  "$XPAND" train "$WORK/run.yaml" --out "$dir" >"$WORK/k$attempt.out" 2>&1 &
  pid=$!
  if [ $((attempt % 5)) -eq 1 ]; then
    delay_ms=$(( RANDOM % LIFE_MS ))          # anywhere, start-up included
  else
    # Past start-up (once the run file exists): training, evaluations, snapshots, checkpoints, end.
    wait_for 30 test -e "$dir/runs/$(basename "$REF")" || true
    delay_ms=$(( RANDOM % (LIFE_MS / 2) ))
  fi
  sleep "$(printf '%d.%03d' $((delay_ms / 1000)) $((delay_ms % 1000)))"
  if kill -9 $pid 2>/dev/null; then
    kills=$((kills + 1))
    wait $pid 2>/dev/null || true
    echo "  run $attempt: SIGKILL $delay_ms ms after $([ $((attempt % 5)) -eq 1 ] && echo start || echo "its file appeared")"
    check_killed "$dir" "$attempt" || fail "the kill after $delay_ms ms left a bad file (run $attempt, KILL_SEED=$SEED)"
  else
    wait $pid || { show "$WORK/k$attempt.out"; fail "run $attempt failed on its own"; }
    echo "  run $attempt: finished before its kill at $delay_ms ms"
  fi
  run_xpand "$WORK/r$attempt.out" "$WORK/r$attempt.err" train "$WORK/run.yaml" --out "$dir"
  [ "$RC" -eq 0 ] || { show "$WORK/r$attempt.err"; fail "resuming run $attempt exited $RC"; }
  grep -q "resuming from the checkpoint" "$WORK/r$attempt.err" && resumed=$((resumed + 1))
  compare "$dir/runs/$(basename "$REF")" || fail "run $attempt differs from the uninterrupted run after its resume"
done
[ "$kills" -ge $((KILLS * 3 / 4)) ] || fail "only $kills of $KILLS runs were killed before they ended"
ok "$kills kills: every file opened with status running and consistent metrics; $resumed resumed from a checkpoint; all ended bit-identical to the uninterrupted run"
step "SIGTERM: a checkpoint at the next step boundary, status preempted, exit 4; resumed bit-identical"
dir="$WORK/term"
"$XPAND" train "$WORK/run.yaml" --out "$dir" >"$WORK/term.out" 2>&1 &
pid=$!
wait_for 30 test -e "$dir/runs/$(basename "$REF")" || fail "no run file to preempt"
sleep 0.3
kill -TERM $pid
RC=0
wait $pid || RC=$?
[ "$RC" -eq 4 ] || { show "$WORK/term.out"; fail "SIGTERM: exit $RC, expected 4 (preempted)"; }
"$PYTHON" - "$dir/runs/$(basename "$REF")" "$dir/checkpoints/$(basename "$REF")" <<'PY' || fail "preempted state"
import sys, h5py
with h5py.File(sys.argv[1], "r") as f, h5py.File(sys.argv[2], "r") as c:
    rows = f["metrics/train/step"].shape[0]
    assert f.attrs["status"] == "preempted", f.attrs["status"]
    assert c.attrs["step"] == rows, (c.attrs["step"], rows)    # checkpoint exactly where training stopped
    print(f"    preempted after step {rows}: {f.attrs['error']}")
PY
run_xpand "$WORK/term2.out" "$WORK/term2.err" train "$WORK/run.yaml" --out "$dir"
[ "$RC" -eq 0 ] && grep -q "resuming from the checkpoint" "$WORK/term2.err" || { show "$WORK/term2.err"; fail "resume after SIGTERM: exit $RC"; }
compare "$dir/runs/$(basename "$REF")" || fail "the run resumed after SIGTERM differs from the uninterrupted run"
ok "SIGTERM: exit 4, status preempted, checkpoint at the last step taken; the resumed run is bit-identical"
echo "store_kill: all checks passed"
