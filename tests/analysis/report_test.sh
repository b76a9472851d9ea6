#!/usr/bin/env bash
# analysis/report.py end to end: a tiny sweep with the real binary (teacher task, every
# parameterization kind, 2 seeds, snapshots, a diverged point and a run left `running`), the report,
# tests/analysis/check_report.py (images and every number against the HDF5 files, read with h5py
# directly), a headless-Chromium screenshot of the page, analysis/dint90.py, and bad input.
#   bash tests/analysis/report_test.sh XPAND_BINARY [SOURCE_DIR [WORK_DIR]]
# PYTHON (default /usr/bin/python3) needs numpy, h5py, matplotlib and yaml; CHROMIUM (default
# chromium) takes the screenshot, which is skipped with a note when it is not installed.
set -euo pipefail

PYTHON=${PYTHON:-/usr/bin/python3}
CHROMIUM=${CHROMIUM:-chromium}
step() { echo "--- $*"; }
ok() { echo "    ok: $*"; }
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
show() { sed 's/^/    | /' "$1" >&2; }

[ $# -ge 1 ] && [ $# -le 3 ] || {
  echo "usage: bash $0 XPAND_BINARY [SOURCE_DIR [WORK_DIR]]" >&2
  exit 1
}
XPAND=$(realpath "$1")
SRC=$(realpath "${2:-$(dirname "$0")/../..}")
[ -x "$XPAND" ] || fail "xpand binary '$1' is missing or not executable"
[ -f "$SRC/analysis/report.py" ] || fail "source dir '$SRC' has no analysis/report.py"
"$PYTHON" -c 'import h5py, numpy, matplotlib, yaml' 2>/dev/null ||
  fail "$PYTHON lacks h5py/numpy/matplotlib/yaml (set PYTHON=/usr/bin/python3)"
if [ $# -ge 3 ]; then
  case "$3" in "" | /) fail "refusing to use WORK_DIR '$3'" ;; esac
  rm -rf -- "$3"
  mkdir -p -- "$3"
  WORK=$(realpath "$3")
else
  WORK=$(mktemp -d /tmp/xpand-report-test.XXXXXX)
  trap 'rm -rf -- "$WORK"' EXIT
fi
REPORT="$SRC/analysis/report.py"
CHECK="$SRC/tests/analysis/check_report.py"
OUT="$WORK/out"
echo "xpand: $XPAND"
echo "work: $WORK"

# A 16-32-32-4 MLP on the teacher task: 64 steps, an evaluation every 8 and a snapshot every 16.
cat >"$WORK/net.yaml" <<'YAML'
name: report-test
seed: 0
data:
  name: teacher
  teacher_inputs: 16
  teacher_classes: 4
  train_size: 512
  test_size: 256
  batch_size: 32
model:
  kind: mlp
  widths: [16, 32, 32, 4]
train:
  optimizer: adam
  lr: 0.01
  epochs: 4
  eval_every: 8
output:
  snapshot_every: 16
YAML
# Every kind; the dense network also with tanh (rank vs activation); d up to 1000 so that d_int90
# is reached (D = 1732).
cat >"$WORK/sweep.yaml" <<'YAML'
base: net.yaml
zip:
  param:
    - {kind: dense}
    - {kind: dense}
    - {kind: expanded, factor: 1, depth: 2}
    - {kind: expanded, factor: 2, depth: 3}
    - {kind: lowrank, rank: 2}
    - {kind: lowrank, rank: 4}
    - {kind: subspace, omega_dim: 10}
    - {kind: subspace, omega_dim: 100}
    - {kind: subspace, omega_dim: 1000}
  model.activation: [relu, tanh, relu, relu, relu, relu, relu, relu, relu]
  train.lr: [0.01, 0.01, 0.003, 0.003, 0.01, 0.01, 0.1, 0.1, 0.03]
seeds: [0, 1]
YAML
# One more point on the same axes that diverges (SGD at lr 1e6).
cat >"$WORK/diverge.yaml" <<'YAML'
base: net.yaml
set: {train.optimizer: sgd}
zip:
  param: [{kind: dense}]
  model.activation: [relu]
  train.lr: [1000000.0]
seeds: [0]
YAML

step "sweep: 9 points x 2 seeds, and a diverging point"
t0=$SECONDS
"$XPAND" sweep "$WORK/sweep.yaml" --out "$OUT" --progress 0 >"$WORK/sweep.log" 2>&1 ||
  { show "$WORK/sweep.log"; fail "xpand sweep failed"; }
rc=0
"$XPAND" sweep "$WORK/diverge.yaml" --out "$OUT" --progress 0 >"$WORK/diverge.log" 2>&1 || rc=$?
[ "$rc" -eq 3 ] || { show "$WORK/diverge.log"; fail "the diverging sweep exited $rc, want 3"; }
ok "19 runs in $((SECONDS - t0)) s"

step "a run left 'running' (a copy of a completed run under another seed, as a killed process leaves it)"
"$PYTHON" - "$OUT" <<'PY'
import glob, shutil, sys, h5py, yaml
src = sorted(glob.glob(sys.argv[1] + "/runs/*.h5"))[0]
dst = sys.argv[1] + "/runs/report-test-00000000000000aa.h5"
shutil.copyfile(src, dst)
with h5py.File(dst, "r+") as f:
    cfg = yaml.safe_load(f.attrs["config"])
    cfg["seed"] = 7
    f.attrs["config"] = yaml.safe_dump(cfg, sort_keys=False)
    f.attrs["seed"] = 7
    f.attrs["run_id"] = "report-test-00000000000000aa"
    f.attrs["status"] = "running"
    f.attrs["wall_seconds"] = float("nan")
PY
# Leftovers a reader must ignore.
: >"$OUT/runs/report-test-0123456789abcdef.h5.part"
FIRST=$(find "$OUT/runs" -maxdepth 1 -name '*.h5' | sort | head -1)
cp "$FIRST" "$FIRST.prev-1"
ok "$(find "$OUT/runs" -maxdepth 1 -name '*.h5' | wc -l) run files"

step "report.py"
t0=$SECONDS
"$PYTHON" "$REPORT" "$OUT" >"$WORK/report.log" 2>&1 || { show "$WORK/report.log"; fail "report.py failed"; }
grep -q "report: $OUT/report/index.html" "$WORK/report.log" || { show "$WORK/report.log"; fail "report.py did not say where the report went"; }
ok "$(cat "$WORK/report.log") in $((SECONDS - t0)) s"

step "check_report.py: images, tables against the HDF5 files"
"$PYTHON" "$CHECK" "$OUT" --min-runs 20 --omitted scaling \
  --figures curves_param.png,curves_model_activation.png,curves_train_lr.png,structure.png,spectra.png,rank_vs_depth.png,rank_vs_model_activation.png,rank_over_steps.png,rank_r_error.png,dint90.png,cost.png ||
  fail "check_report.py found problems"
grep -q "report-test-00000000000000aa" "$OUT/report/runs.csv" && grep -q ",running," "$OUT/report/runs.csv" ||
  fail "the running run is not in runs.csv"
grep -q ",diverged," "$OUT/report/runs.csv" || fail "the diverged run is not in runs.csv"
ok "running and diverged runs listed"

step "screenshot (headless Chromium)"
if command -v "$CHROMIUM" >/dev/null 2>&1; then
  timeout 120 "$CHROMIUM" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,3000 \
    --screenshot="$OUT/report/screenshot.png" "file://$OUT/report/index.html" >"$WORK/chromium.log" 2>&1 ||
    { show "$WORK/chromium.log"; fail "chromium failed"; }
  "$PYTHON" "$CHECK" --png "$OUT/report/screenshot.png" || fail "the screenshot is not a page"
else
  echo "    skip: $CHROMIUM is not installed (set CHROMIUM)"
fi

step "dint90.py"
"$PYTHON" "$SRC/analysis/dint90.py" "$OUT" >"$WORK/dint90.txt" 2>&1 || { show "$WORK/dint90.txt"; fail "dint90.py failed"; }
"$PYTHON" - "$OUT/report/dint90.csv" "$WORK/dint90.txt" <<'PY' || { show "$WORK/dint90.txt"; fail "dint90.py disagrees with dint90.csv"; }
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["projection"] == "fastfood"]
text = open(sys.argv[2]).read()
assert rows, "dint90.csv has no fastfood rows"
for r in rows:  # the same means, at the printed precision, and the same d_int90 (checked against the files)
    want = f"| {r['d']} | {float(r['test_acc_mean']):.4f} |"
    assert want in text, f"dint90.py lacks {want!r}"
dint = rows[0]["d_int90"]
want = f"d_int90: {dint}" if dint else "d_int90: not reached"
assert want in text, f"dint90.py lacks {want!r}"
PY
ok "$(grep '^d_int90' "$WORK/dint90.txt")"
mkdir -p "$WORK/dense-only/runs"
DENSE=$(awk -F, '$2 == "completed" && /,dense,/ { print $1; exit }' "$OUT/report/runs.csv")
cp "$OUT/runs/$DENSE.h5" "$WORK/dense-only/runs/"
rc=0
"$PYTHON" "$SRC/analysis/dint90.py" "$WORK/dense-only" >"$WORK/d.out" 2>"$WORK/d.err" || rc=$?
[ "$rc" -eq 1 ] && grep -q "subspace" "$WORK/d.err" || { show "$WORK/d.err"; fail "dint90.py without subspace runs: exit $rc"; }
ok "no subspace runs: exit 1, $(head -1 "$WORK/d.err")"

step "runs without sweep axes: one dense and one expanded run (xpand train) are two groups, not seeds of one"
NA="$WORK/noaxes"
for kind in dense expanded; do
  "$XPAND" --log-level warn train "$WORK/net.yaml" --out "$NA" --set "param.kind=$kind" --set train.max_steps=16 \
    >"$WORK/noaxes-$kind.log" 2>&1 || { show "$WORK/noaxes-$kind.log"; fail "xpand train ($kind) failed"; }
done
"$PYTHON" "$REPORT" "$NA" >"$WORK/noaxes-report.log" 2>&1 || { show "$WORK/noaxes-report.log"; fail "report.py failed"; }
"$PYTHON" - "$NA/report/groups.csv" <<'PY' || fail "groups of the runs without axes"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
assert len(rows) == 2, rows
assert sorted(r["param.kind"] for r in rows) == ["dense", "expanded"], rows
assert all(r["n_runs"] == "1" for r in rows), rows
print(f"    groups: {[r['param.kind'] for r in rows]}")
PY
ok "two groups, labelled param.kind"

step "bad input"
expect_error() {  # expect_error WHAT PATTERN ARGS...: report.py exits non-zero, stderr matches PATTERN
  local what=$1 pattern=$2 rc=0
  shift 2
  "$PYTHON" "$REPORT" "$@" >"$WORK/bad.out" 2>"$WORK/bad.err" || rc=$?
  [ "$rc" -ne 0 ] || fail "$what: report.py exited 0"
  grep -q -- "$pattern" "$WORK/bad.err" || { show "$WORK/bad.err"; fail "$what: no message matching '$pattern'"; }
  ok "$what: exit $rc, $(head -1 "$WORK/bad.err")"
}
expect_error "missing directory" "$WORK/nope" "$WORK/nope"
mkdir -p "$WORK/empty"
expect_error "empty directory" "no run files" "$WORK/empty"
mkdir -p "$WORK/bad/runs"
cp "$OUT"/runs/report-test-00000000000000aa.h5 "$WORK/bad/runs/"
echo "not hdf5" >"$WORK/bad/runs/report-test-ffffffffffffffff.h5"
expect_error "unreadable run file" "$WORK/bad/runs/report-test-ffffffffffffffff.h5" "$WORK/bad"
"$PYTHON" "$REPORT" "$WORK/bad" --skip-bad >"$WORK/skip.out" 2>"$WORK/skip.err" || { show "$WORK/skip.err"; fail "--skip-bad failed"; }
grep -q "report-test-ffffffffffffffff.h5" "$WORK/skip.err" && grep -q "unreadable, skipped" "$WORK/bad/report/index.html" ||
  fail "--skip-bad did not name the skipped file"
ok "--skip-bad: report written, the file named on stderr and in the page"

echo "PASS"
