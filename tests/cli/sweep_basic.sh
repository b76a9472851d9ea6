#!/usr/bin/env bash
# Sweeps: a grid x seeds spec expanded into points, two groups of one rank (mpirun -np 2) sharing the
# points through claims so that each is trained exactly once, axes recorded in the run files and the
# index, a rerun that trains nothing, and bad sweep files refused with exit 2 before anything is
# written.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cli_init "$@"

cat >"$WORK/base.yaml" <<YAML
name: sw
seed: 3
data: {name: teacher, teacher_inputs: 16, teacher_classes: 4, train_size: 500, test_size: 200, batch_size: 64}
model: {kind: mlp, widths: [16, 24, 12, 4]}
param: {kind: expanded}
train: {optimizer: adam, lr: 0.01, epochs: 2, eval_every: 5}
YAML
cat >"$WORK/sweep.yaml" <<YAML
base: base.yaml
set: {train.epochs: 1}
grid:
  param.factor: [1, 2]
  param.depth: [2, 3]
seeds: [0, 1]
YAML

step "xpand plan lists the points with their costs"
run_xpand "$WORK/p.out" "$WORK/p.err" plan "$WORK/sweep.yaml" --json
[ "$RC" -eq 0 ] || { show "$WORK/p.err"; fail "plan exited $RC"; }
"$PYTHON" - "$WORK/p.out" <<'PY' || fail "plan --json of the sweep"
import json, sys
d = json.load(open(sys.argv[1]))
pts = d["points"]
assert d["axes"] == ["param.factor", "param.depth", "seed"] and len(pts) == 8, d["axes"]
assert len({p["run_id"] for p in pts}) == 8
assert abs(sum(p["total_flops"] for p in pts) - d["total_flops"]) <= 1e-9 * d["total_flops"]
# A deeper or wider expansion costs more per step at the same seed.
by = {(p["axes"]["param.factor"], p["axes"]["param.depth"], p["axes"]["seed"]): p for p in pts}
assert by[("2", "3", "0")]["flops_per_step"] > by[("1", "2", "0")]["flops_per_step"]
assert by[("2", "3", "0")]["trainable"] > by[("2", "2", "0")]["trainable"]
print("plan: 8 points, totals add up")
PY
ok "plan --json: 8 points with FLOPs, parameters and totals"

step "8 points on 2 groups of 1 rank"
RC=0
"$MPIEXEC" -np 2 "$XPAND" sweep "$WORK/sweep.yaml" --out "$WORK/out" --ranks-per-run 1 >"$WORK/a.out" 2>&1 || RC=$?
[ "$RC" -eq 0 ] || { show "$WORK/a.out"; fail "sweep exited $RC"; }
"$PYTHON" - "$WORK/out" <<'PY' || fail "points"
import glob, itertools, sys, h5py
d = sys.argv[1]
files = sorted(glob.glob(d + "/runs/*.h5"))
assert len(files) == 8, files
seen = set()
for p in files:
    with h5py.File(p, "r") as f:
        a = f.attrs
        assert a["status"] == "completed" and a["resumes"] == 0, (p, a["status"])
        assert list(a["axes"]) == ["param.factor", "param.depth", "seed"], list(a["axes"])
        seen.add((int(a["param.factor"]), int(a["param.depth"]), int(a["seed"])))
assert seen == set(itertools.product([1, 2], [2, 3], [0, 1])), seen
with h5py.File(d + "/index.h5", "r") as f:
    assert len(f["summary/run_id"]) == 8 and all(s == b"completed" for s in f["summary/status"][:])
print("8 distinct points, each completed once; index lists them")
PY
groups=$(grep -o "group [01]: point" "$WORK/a.out" | sort | uniq -c | wc -l)
[ "$groups" -eq 2 ] || { show "$WORK/a.out"; fail "expected both groups to train points"; }
[ "$(grep -c ": point " "$WORK/a.out")" -eq 8 ] || { show "$WORK/a.out"; fail "expected 8 point starts"; }
ok "both groups trained, 8 points in all, none twice"

step "rerun: every point is complete, nothing trains"
run_xpand "$WORK/b.out" "$WORK/b.err" sweep "$WORK/sweep.yaml" --out "$WORK/out"
[ "$RC" -eq 0 ] && ! grep -q ": point " "$WORK/b.err" && grep -q "8 completed" "$WORK/b.err" ||
  { show "$WORK/b.err"; fail "rerun trained again or failed (exit $RC)"; }
run_xpand "$WORK/i.out" "$WORK/i.err" inspect "$WORK/out"
grep -q "8 completed" "$WORK/i.out" && grep -q "param.depth" "$WORK/i.out" || { show "$WORK/i.out"; fail "inspect"; }
ok "rerun skipped all 8; inspect shows the axes"
grep -q "^# $WORK/out: 8 run(s)" "$WORK/b.out" && grep -q "param.depth" "$WORK/b.out" ||
  { show "$WORK/b.out"; fail "the sweep did not end by printing its table on stdout"; }
ok "the sweep ends by printing its runs' table on stdout"

step "a mapping-valued axis: typed dotted columns in index.h5 and inspect; --sort, --filter, --diff"
cat >"$WORK/map.yaml" <<YAML
base: base.yaml
set: {train.epochs: 1, param.kind: dense}
zip:
  layers.fc2:
    - {kind: dense}
    - {kind: expanded, factor: 2}
    - {kind: expanded, factor: 3}
YAML
run_xpand "$WORK/m.out" "$WORK/m.err" sweep "$WORK/map.yaml" --out "$WORK/map"
[ "$RC" -eq 0 ] || { show "$WORK/m.err"; fail "mapping sweep exited $RC"; }
"$PYTHON" - "$WORK/map/index.h5" <<'PY' || fail "typed columns of a mapping axis in index.h5"
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r") as f:
    s = f["summary"]
    kind, factor = s["axis.layers.fc2.kind"], s["axis.layers.fc2.factor"]
    assert kind.dtype.kind == "O" and factor.dtype == np.float64, (kind.dtype, factor.dtype)
    got = sorted(zip(kind.asstr()[:], factor[:].tolist()), key=str)
    assert [k for k, _ in got] == ["dense", "expanded", "expanded"], got
    assert sorted(v for _, v in got if v == v) == [2.0, 3.0] and sum(v != v for _, v in got) == 1, got
print("index.h5: axis.layers.fc2.kind (str), axis.layers.fc2.factor (float64, NaN where unset)")
PY
run_xpand "$WORK/mi.out" "$WORK/mi.err" inspect "$WORK/map"
head -2 "$WORK/mi.out" | tail -1 | grep -q "layers.fc2.factor" && head -2 "$WORK/mi.out" | grep -q "layers.fc2.kind" ||
  { show "$WORK/mi.out"; fail "inspect lacks the mapping's dotted columns"; }
# Rows in the order of the columns' values (numbers ascending, a run without the key last).
awk 'NR > 2 && /^sw-/ {print $3, $4}' "$WORK/mi.out" | tr '\n' ' ' | grep -q "2 expanded 3 expanded - dense" ||
  { show "$WORK/mi.out"; fail "rows not ordered by the columns' values"; }
run_xpand "$WORK/mf.out" "$WORK/mf.err" inspect "$WORK/map" --filter layers.fc2.factor=3 --csv
[ "$RC" -eq 0 ] && [ "$(wc -l <"$WORK/mf.out")" -eq 2 ] || { show "$WORK/mf.out"; fail "--filter"; }
run_xpand "$WORK/ms.out" "$WORK/ms.err" inspect "$WORK/map" --sort test_acc --csv
[ "$RC" -eq 0 ] && "$PYTHON" -c '
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
acc = [float(r["test_acc"]) for r in rows]
assert acc == sorted(acc), acc' "$WORK/ms.out" || { show "$WORK/ms.out"; fail "--sort test_acc"; }
ids=($(awk -F, 'NR > 1 {print $1}' "$WORK/ms.out"))
run_xpand "$WORK/md.out" "$WORK/md.err" inspect "$WORK/map" --diff "${ids[0]:0:10}" "$WORK/map/runs/${ids[1]}.h5"
[ "$RC" -eq 0 ] && grep -q "^layers.fc2" "$WORK/md.out" && ! grep -q "^seed\|^train.lr" "$WORK/md.out" ||
  { show "$WORK/md.out"; show "$WORK/md.err"; fail "--diff"; }
run_xpand "$WORK/mx.out" "$WORK/mx.err" inspect "$WORK/map" --sort trian.lr
[ "$RC" -eq 2 ] && grep -q "no run has the key 'trian.lr'" "$WORK/mx.err" || { show "$WORK/mx.err"; fail "--sort typo"; }
ok "typed dotted columns, rows by value, --filter, --sort, --diff by id prefix and path, a typo named"

step "bad sweep files: exit 2, the key named, nothing written"
bad() {  # NAME EXPECTED-TEXT YAML
  printf '%s\n' "$3" >"$WORK/$1.yaml"
  run_xpand "$WORK/$1.out" "$WORK/$1.err" sweep "$WORK/$1.yaml" --out "$WORK/bad"
  [ "$RC" -eq 2 ] && grep -q -- "$2" "$WORK/$1.err" || { show "$WORK/$1.err"; fail "$1: exit $RC, expected 2 naming '$2'"; }
  [ ! -e "$WORK/bad" ] || fail "$1 wrote $WORK/bad"
  echo "    $1: $(head -1 "$WORK/$1.err")"
}
bad unknown_axis "param.nope" "base: base.yaml
grid: {param.nope: [1, 2]}"
bad wrong_type "param.factor" "base: base.yaml
grid: {param.factor: [2, two]}"
bad empty_axis "grid.param.factor" "base: base.yaml
grid: {param.factor: []}"
bad duplicate_key "duplicate" "base: base.yaml
grid: {param.factor: [1]}
grid: {param.depth: [2]}"
bad duplicate_axis "more than one axis" "base: base.yaml
grid: {param.factor: [1]}
zip: {param.factor: [2]}"
bad zip_lengths "same length" "base: base.yaml
zip: {param.factor: [1, 2], param.depth: [2]}"
bad malformed "malformed YAML" "base: base.yaml
grid: {param.factor: [1, 2}"
bad unknown_section "gird" "base: base.yaml
gird: {param.factor: [1]}"
bad no_axes "no axes" "base: base.yaml"
bad missing_base "base" "grid: {param.factor: [1]}"
bad seeds_type "seeds" "base: base.yaml
seeds: [0, one]"
bad same_point "same configuration" "base: base.yaml
grid: {param.factor: [2, 2.0]}"
RC=0
"$MPIEXEC" -np 3 "$XPAND" sweep "$WORK/sweep.yaml" --out "$WORK/bad" --ranks-per-run 2 >"$WORK/k.out" 2>&1 || RC=$?
[ "$RC" -ne 0 ] && grep -q "divisor of the world size" "$WORK/k.out" && [ ! -e "$WORK/bad/runs" ] ||
  { show "$WORK/k.out"; fail "--ranks-per-run 2 on 3 ranks: exit $RC"; }
ok "12 bad files and a ranks-per-run that does not divide the world refused"
echo "sweep_basic: all checks passed"
