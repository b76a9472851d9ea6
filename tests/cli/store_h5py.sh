#!/usr/bin/env bash
# The results store end to end: every schema field of a finished run read by h5py
# (tests/store/check_schema.py), a run read live (h5py swmr=True and `xpand inspect`) while it trains,
# the index (external links and /summary), `xpand index`, and `xpand collapse`.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cli_init "$@"
CHECK="$SRC/tests/store/check_schema.py"

cat >"$WORK/tiny.yaml" <<YAML
name: tiny
seed: 3
data: {name: teacher, teacher_inputs: 16, teacher_classes: 4, train_size: 500, test_size: 200, batch_size: 64}
model: {kind: mlp, widths: [16, 24, 12, 4]}
param: {kind: expanded, factor: 2, depth: 3}
train: {optimizer: adam, lr: 0.01, epochs: 3, eval_every: 5}
output: {snapshot_every: 10, snapshot_factors: true, compression: 4}
YAML

step "a finished run: every field, read by h5py"
run_xpand "$WORK/a.out" "$WORK/a.err" train "$WORK/tiny.yaml" --out "$WORK/out" --axes param.factor,train.lr
[ "$RC" -eq 0 ] || { show "$WORK/a.err"; fail "xpand train exited $RC"; }
FILE=$(ls "$WORK"/out/runs/tiny-*.h5)
"$PYTHON" "$CHECK" "$FILE" --steps 21 --evals 5 --snapshots 10,20,21 --layers fc1,fc2,fc3 --factors \
  --axis param.factor=2 --axis train.lr=0.01 || fail "schema check of $FILE"
ok "schema 2 fields, snapshots with spectra and factors, checkpoint link"

step "the index: external links to every run and the /summary table"
for f in 3 4; do
  run_xpand "$WORK/b.out" "$WORK/b.err" train "$WORK/tiny.yaml" --out "$WORK/out" --axes param.factor,train.lr \
    --set param.factor=$f
  [ "$RC" -eq 0 ] || { show "$WORK/b.err"; fail "xpand train (factor $f) exited $RC"; }
done
"$PYTHON" - "$WORK/out" <<'PY' || fail "index.h5"
import sys, h5py, numpy as np
d = sys.argv[1]
with h5py.File(d + "/index.h5", "r") as f:
    s = f["summary"]
    ids = [x.decode() for x in s["run_id"][:]]
    assert len(ids) == 3 and sorted(f["runs"]) == sorted(ids), (ids, list(f["runs"]))
    assert [x.decode() for x in s["axis.param.factor"][:]] == ["2", "3", "4"] or \
        sorted(x.decode() for x in s["axis.param.factor"][:]) == ["2", "3", "4"]
    for i, rid in enumerate(ids):
        run = f["runs"][rid]                                  # the external link resolves
        assert run.attrs["status"] == s["status"][i].decode() == "completed"
        assert run.attrs["param.factor"] == int(s["axis.param.factor"][i])
        assert s["steps"][i] == run["metrics/train/step"].shape[0] == 21
        assert s["test_acc"][i] == run["metrics/eval/test_acc"][-1]
        assert run["checkpoint"].attrs["step"] == 21          # link -> run file -> checkpoint file
print("index OK:", ids)
PY
rm "$WORK/out/index.h5"
run_xpand "$WORK/i.out" "$WORK/i.err" index "$WORK/out"
[ "$RC" -eq 0 ] && grep -q "3 run(s)" "$WORK/i.out" || { show "$WORK/i.out"; show "$WORK/i.err"; fail "xpand index"; }
ok "index.h5 links 3 runs; xpand index rebuilds it"

step "xpand inspect: table, csv, json, one run"
run_xpand "$WORK/t.out" "$WORK/t.err" inspect "$WORK/out"
[ "$RC" -eq 0 ] && grep -q "3 completed" "$WORK/t.out" && grep -q "param.factor" "$WORK/t.out" ||
  { show "$WORK/t.out"; show "$WORK/t.err"; fail "inspect DIR"; }
run_xpand "$WORK/c.out" "$WORK/c.err" inspect "$WORK/out/index.h5" --csv
[ "$RC" -eq 0 ] && [ "$(wc -l <"$WORK/c.out")" -eq 4 ] || { show "$WORK/c.out"; fail "inspect index --csv"; }
run_xpand "$WORK/j.out" "$WORK/j.err" inspect "$WORK/out" --json
"$PYTHON" -c 'import json,sys; d=json.load(open(sys.argv[1])); assert len(d["runs"]) == 3 and d["axes"] == ["param.factor", "train.lr"], d' \
  "$WORK/j.out" || fail "inspect --json"
RUN_ID=$(basename "$FILE" .h5)
run_xpand "$WORK/r.out" "$WORK/r.err" inspect "$WORK/out" --run "$RUN_ID" --tail 3
[ "$RC" -eq 0 ] && grep -q "status completed" "$WORK/r.out" && grep -q "## snapshots (3)" "$WORK/r.out" ||
  { show "$WORK/r.out"; show "$WORK/r.err"; fail "inspect --run"; }
ok "inspect shows the runs and one run's metrics and snapshots"

step "xpand collapse: the snapshot's dense weights"
run_xpand "$WORK/m.out" "$WORK/m.err" collapse "$FILE" --step 20 -o "$WORK/model.h5"
[ "$RC" -eq 0 ] || { show "$WORK/m.err"; fail "collapse exited $RC"; }
"$PYTHON" - "$FILE" "$WORK/model.h5" <<'PY' || fail "collapsed model"
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r") as run, h5py.File(sys.argv[2], "r") as m:
    assert m.attrs["step"] == 20 and m.attrs["run_id"] == run.attrs["run_id"]
    for layer in ("fc1", "fc2", "fc3"):
        w = m["state_dict"][layer + ".weight"][()]
        assert w.dtype == np.float32 and np.array_equal(w, run["snapshots/00000020"][layer]["weight"][()])
print("collapse OK")
PY
run_xpand "$WORK/m2.out" "$WORK/m2.err" collapse "$FILE" -o "$WORK/model.h5"
[ "$RC" -eq 2 ] && grep -q "exists" "$WORK/m2.err" || fail "collapse over an existing file: exit $RC"
run_xpand "$WORK/m3.out" "$WORK/m3.err" collapse "$FILE" --step 7 -o "$WORK/model7.h5"
[ "$RC" -eq 2 ] && grep -q "no snapshot at that step" "$WORK/m3.err" && [ ! -e "$WORK/model7.h5" ] ||
  fail "collapse --step 7: exit $RC"
ok "weights equal the snapshot; existing output and missing step refused"

step "a half-written newest snapshot (a writer killed or failed in the middle of it)"
cp "$FILE" "$WORK/half.h5"
"$PYTHON" - "$WORK/half.h5" <<'PY'
import sys, h5py
with h5py.File(sys.argv[1], "r+") as f:
    f.attrs["status"] = "failed"
    del f["snapshots/00000021/fc3"]          # the last layer never came
    del f["snapshots/00000021/fc2/weight"]   # and one came without its weight
PY
run_xpand "$WORK/h.out" "$WORK/h.err" inspect "$WORK/half.h5"
[ "$RC" -eq 0 ] || { show "$WORK/h.err"; fail "inspect of a half-written snapshot exited $RC"; }
grep -q "(step 21; incomplete" "$WORK/h.out" || { show "$WORK/h.out"; fail "inspect did not mark the snapshot"; }
run_xpand "$WORK/h2.out" "$WORK/h2.err" collapse "$WORK/half.h5" -o "$WORK/half-model.h5"
[ "$RC" -eq 0 ] && grep -q "snapshot at step 20 " "$WORK/h2.out" && grep -q "step 21 is incomplete" "$WORK/h2.err" ||
  { show "$WORK/h2.out"; show "$WORK/h2.err"; fail "collapse did not fall back to step 20 (exit $RC)"; }
run_xpand "$WORK/h3.out" "$WORK/h3.err" collapse "$WORK/half.h5" --step 21 -o "$WORK/half21.h5"
[ "$RC" -eq 1 ] && grep -q "incomplete" "$WORK/h3.err" && [ ! -e "$WORK/half21.h5" ] ||
  { show "$WORK/h3.err"; fail "collapse --step 21 of a half-written snapshot: exit $RC (want 1)"; }
"$PYTHON" - "$SRC" "$WORK/half.h5" <<'PY' || fail "xpand_h5 on a half-written snapshot"
import sys
sys.path.insert(0, sys.argv[1] + "/analysis")
import xpand_h5
run = xpand_h5.Run(sys.argv[2])
assert run.incomplete_snapshot == 21, run.incomplete_snapshot
assert run.weight("fc3").shape == (4, 12), run.weight("fc3").shape   # from step 20
PY
ok "inspect marks it; collapse and xpand_h5 default to step 20; collapse --step 21 refused"

step "a run read live while it trains (h5py swmr=True, xpand inspect)"
cat >"$WORK/long.yaml" <<YAML
name: long
seed: 1
data: {name: teacher, teacher_inputs: 64, teacher_classes: 8, train_size: 20000, test_size: 500, batch_size: 32}
model: {kind: mlp, widths: [64, 256, 256, 8]}
train: {optimizer: adam, lr: 0.001, epochs: 20, eval_every: 100, log_every: 100}
output: {snapshot_every: 200, flush_seconds: 0.2}
YAML
"$XPAND" train "$WORK/long.yaml" --out "$WORK/live" >"$WORK/live.out" 2>&1 &
PID=$!
trap 'kill -9 $PID 2>/dev/null || true' EXIT
LIVE=""
has_rows() {
  LIVE=$(ls "$WORK"/live/runs/long-*.h5 2>/dev/null | head -1)
  [ -n "$LIVE" ] && "$PYTHON" -c 'import h5py,sys; f=h5py.File(sys.argv[1],"r",swmr=True); sys.exit(0 if f["metrics/train/step"].shape[0] >= 50 else 1)' "$LIVE" 2>/dev/null
}
wait_for 60 has_rows || { show "$WORK/live.out"; fail "no rows appeared in the live run file"; }
kill -0 $PID 2>/dev/null || fail "the run ended before it could be read live; make long.yaml longer"
"$PYTHON" "$CHECK" "$LIVE" --live --layers fc1,fc2,fc3 || fail "live schema check"
run_xpand "$WORK/l.out" "$WORK/l.err" inspect "$WORK/live"
grep -q "running" "$WORK/l.out" || { show "$WORK/l.out"; show "$WORK/l.err"; fail "inspect of a live directory"; }
run_xpand "$WORK/l2.out" "$WORK/l2.err" inspect "$LIVE" --tail 2
[ "$RC" -eq 0 ] && grep -q "in progress" "$WORK/l2.out" || { show "$WORK/l2.out"; show "$WORK/l2.err"; fail "inspect of a live run file"; }
"$PYTHON" - "$LIVE" <<'PY' || fail "rows did not grow while reading"
import sys, time, h5py
with h5py.File(sys.argv[1], "r", swmr=True) as f:
    d = f["metrics/train/step"]
    n0 = d.shape[0]
    for _ in range(50):
        time.sleep(0.2)
        d.refresh()
        if d.shape[0] > n0:
            print(f"live rows grew {n0} -> {d.shape[0]}")
            break
    else:
        sys.exit(f"rows stayed at {n0}")
PY
kill -0 $PID 2>/dev/null && ok "h5py (swmr=True) and xpand inspect read the run while it trains (pid $PID)"
wait $PID || fail "the live run failed: $(tail -3 "$WORK/live.out")"
trap - EXIT
"$PYTHON" -c 'import h5py,sys; f=h5py.File(sys.argv[1],"r"); assert f.attrs["status"] == "completed"' "$LIVE" ||
  fail "live run did not end completed"
ok "the run completed; its file opens without SWMR"
echo "store_h5py: all checks passed"
