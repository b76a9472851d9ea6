#!/usr/bin/env bash
# A whole `mpirun -np 2 xpand sweep` (two groups of one rank) killed with SIGKILL, mpirun and ranks
# together, at 5 random moments, each time started again with the same command; then run to the end.
# Every point must end completed exactly once, with metrics (every train and eval column but the
# timings) bit-identical to the same sweep run without interruption.
# XPAND_KILL_SEED fixes the kill moments (printed for a rerun).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cli_init "$@"

seed=${XPAND_KILL_SEED:-$(( $(date +%s) % 100000 ))}
echo "kill moments from seed $seed (XPAND_KILL_SEED=$seed reproduces them)"
RANDOM=$seed

cat >"$WORK/base.yaml" <<YAML
name: sk
seed: 11
data: {name: teacher, teacher_inputs: 16, teacher_classes: 4, train_size: 2000, test_size: 300, batch_size: 16}
model: {kind: mlp, widths: [16, 96, 96, 4]}
param: {kind: expanded}
train: {optimizer: adam, lr: 0.002, epochs: 0, max_steps: 1500, eval_every: 250}
output: {checkpoint_every: 40, snapshot_every: 500, flush_seconds: 0.2}
YAML
cat >"$WORK/sweep.yaml" <<YAML
base: base.yaml
grid:
  param.factor: [1, 2]
  param.depth: [2, 3]
YAML

sweep() {  # OUT LOG: the same command every time
  "$MPIEXEC" -np 2 "$XPAND" sweep "$WORK/sweep.yaml" --out "$1" --ranks-per-run 1 --progress 2 >>"$2" 2>&1
}

step "reference: the sweep without interruption"
T0=$(date +%s.%N)
sweep "$WORK/ref" "$WORK/ref.log" || { show "$WORK/ref.log"; fail "reference sweep failed"; }
T=$(echo "$(date +%s.%N) - $T0" | bc)
ok "reference sweep took ${T}s"

# completed_files K: "name md5" of every completed run file after invocation K. A completed file
# must never change again: a later invocation may not train its point a second time.
completed_files() {
  "$PYTHON" - "$WORK/out" >"$WORK/completed.$1" <<'PY'
import glob, hashlib, os, sys, h5py
for p in sorted(glob.glob(sys.argv[1] + "/runs/*.h5")):
    try:
        with h5py.File(p, "r", swmr=True) as f:
            done = f.attrs["status"] == "completed"
    except OSError:
        continue
    if done:
        print(os.path.basename(p), hashlib.md5(open(p, "rb").read()).hexdigest())
PY
}

step "5 SIGKILLs of mpirun and its ranks, each followed by the same command"
: >"$WORK/killed.log"
for k in 1 2 3 4 5; do
  # A moment in [0.5 s, 0.5 + T/3 s) after the start: some land in set-up, most in training.
  ms=$(( 500 + RANDOM % ( $(printf '%.0f' "$(echo "$T * 1000 / 3" | bc)") + 1 ) ))
  echo "=== start $k (killed after ${ms} ms)" >>"$WORK/killed.log"
  setsid bash -c "exec \"$MPIEXEC\" -np 2 \"$XPAND\" sweep \"$WORK/sweep.yaml\" --out \"$WORK/out\" --ranks-per-run 1 \
    --progress 2 >>\"$WORK/killed.log\" 2>&1" &
  pid=$!
  sleep "$(echo "$ms / 1000" | bc -l)"
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    # Nothing of the killed job may survive (ranks included).
    # (the bracket keeps pgrep from matching its own command line)
    wait_for 10 bash -c "! pgrep -f -- '--out $WORK/ou[t]' >/dev/null" || fail "processes of the killed sweep remain"
    completed_files "$k"
    echo "    kill $k at ${ms} ms: $(wc -l <"$WORK/completed.$k") point(s) completed so far"
  else
    wait "$pid" || true
    completed_files "$k"
    echo "    start $k ended before its kill at ${ms} ms"
  fi
done
echo "=== final run" >>"$WORK/killed.log"
RC=0
sweep "$WORK/out" "$WORK/killed.log" || RC=$?
[ "$RC" -eq 0 ] || { show "$WORK/killed.log"; fail "the final run exited $RC"; }
completed_files 6
ok "final run completed the sweep"

step "every point completed once, metrics equal to the uninterrupted sweep"
"$PYTHON" - "$WORK/ref" "$WORK/out" "$WORK/killed.log" "$WORK" <<'PY' || { tail -n 60 "$WORK/killed.log" >&2; fail "comparison"; }
import collections, glob, os, re, sys
import h5py, numpy as np
ref, out, log, work = sys.argv[1:5]
names = sorted(os.path.basename(p) for p in glob.glob(ref + "/runs/*.h5"))
got = sorted(os.path.basename(p) for p in glob.glob(out + "/runs/*.h5"))
assert len(names) == 4 and names == got, (names, got)
timing = {"time_step", "time_compute", "time_comm", "time_comm_exposed", "mem_peak"}
resumed = 0
for n in names:
    with h5py.File(f"{ref}/runs/{n}", "r") as a, h5py.File(f"{out}/runs/{n}", "r") as b:
        assert b.attrs["status"] == "completed", (n, b.attrs["status"])
        resumed += int(b.attrs["resumes"]) > 0
        for table in ("train", "eval"):
            ga, gb = a["metrics/" + table], b["metrics/" + table]
            assert set(ga) == set(gb), (n, table, set(ga) ^ set(gb))
            for col in ga:
                if col in timing:
                    assert len(ga[col]) == len(gb[col]), (n, table, col)
                    continue
                x, y = ga[col][:], gb[col][:]
                assert x.shape == y.shape, f"{n} {table}/{col}: {x.shape} rows vs {y.shape}"
                assert np.array_equal(x, y, equal_nan=True), \
                    f"{n} {table}/{col}: first difference at row {np.flatnonzero(x != y)[:1]}"
        steps = b["metrics/train/step"][:]
        assert np.array_equal(steps, np.arange(1, len(steps) + 1)), f"{n}: steps not 1..N once each"
        sa, sb = sorted(a["snapshots"]), sorted(b["snapshots"])
        assert sa == sb, (n, sa, sb)
# Once completed, a run file never changed again (its point was not trained a second time).
first = {}
for k in range(1, 7):
    for line in open(f"{work}/completed.{k}"):
        name, md5 = line.split()
        assert first.setdefault(name, (k, md5))[1] == md5, f"{name} changed after it completed (invocation {k})"
assert sorted(first) == names, (sorted(first), names)
# No invocation announced a second completion of a point.
done = collections.Counter(m.group(1) for line in open(log, errors="replace")
                           for m in [re.search(r"group \d+: (\S+) completed in", line)] if m)
assert all(v == 1 for v in done.values()), dict(done)
print(f"4 points completed once each; {resumed} resumed from a checkpoint; every metric column bit-identical")
PY
[ -z "$(ls "$WORK/out/claims" 2>/dev/null | grep -v '^$' || true)" ] ||
  fail "claims left behind after the sweep ended: $(ls "$WORK/out/claims")"
ok "killed 5 times, resumed, same results as without interruption; no claim left behind"
echo "sweep_kill: all checks passed"
