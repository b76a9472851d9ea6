#!/usr/bin/env bash
# Trains a tiny teacher-task MLP and checks the run file with read_run.py, h5py and h5dump; then the
# skip/--force behaviour of an existing run, determinism in the seed, and divergence (exit 3).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cli_init "$@"

READ_RUN="$SRC/tests/store/read_run.py"

# The run: every expected count below follows from these numbers.
NAME=tiny-teacher
SEED=3
INPUTS=16
CLASSES=4
WIDTHS="$INPUTS, 24, 12, $CLASSES"        # three layers fc1..fc3
TRAIN_SIZE=500
BATCH=64
EPOCHS=3
LR=0.01
EVAL_EVERY=5
SNAPSHOT_EVERY=10
STEPS_PER_EPOCH=$((TRAIN_SIZE / BATCH))  # floor: the partial last batch is dropped
STEPS=$((EPOCHS * STEPS_PER_EPOCH))
EVAL_ROWS=$((STEPS / EVAL_EVERY))        # the eval_every multiples ...
[ $((STEPS % EVAL_EVERY)) -eq 0 ] || EVAL_ROWS=$((EVAL_ROWS + 1))  # ... plus the final step

CONFIG="$WORK/$NAME.yaml"
cat >"$CONFIG" <<YAML
name: $NAME
seed: $SEED
data:
  name: teacher
  teacher_inputs: $INPUTS
  teacher_classes: $CLASSES
  train_size: $TRAIN_SIZE
  test_size: 200
  batch_size: $BATCH
model:
  kind: mlp
  widths: [$WIDTHS]
train:
  optimizer: adam
  lr: $LR
  schedule: constant
  epochs: $EPOCHS
  eval_every: $EVAL_EVERY
  log_every: 5
output:
  snapshot_every: $SNAPSHOT_EVERY
YAML
echo "config ($STEPS steps = $EPOCHS epochs x floor($TRAIN_SIZE/$BATCH); $EVAL_ROWS evals):"
sed 's/^/    /' "$CONFIG"

# run_id_of OUT ARGS...: the run id `xpand plan --json` reports for the config with ARGS.
run_id_of() {
  "$XPAND" plan "$CONFIG" "$@" --json 2>"$WORK/plan.err" |
    "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["run_id"])' ||
    { show "$WORK/plan.err"; fail "xpand plan --json $* failed"; }
}

# train TAG OUT EXPECTED_RC ARGS...: trains into OUT, output in $WORK/TAG.{stdout,stderr}.
train() {
  local tag=$1 out=$2 want=$3
  shift 3
  run_xpand "$WORK/$tag.stdout" "$WORK/$tag.stderr" train "$CONFIG" --out "$out" "$@"
  if [ "$RC" -ne "$want" ]; then
    show "$WORK/$tag.stdout"
    show "$WORK/$tag.stderr"
    fail "$tag: xpand train exited $RC, expected $want"
  fi
}

# ---------------------------------------------------------------------------------------------
step "train the tiny config into $WORK/out"
RUN_ID=$(run_id_of)
FILE="$WORK/out/runs/$RUN_ID.h5"
train first "$WORK/out" 0
[ -f "$FILE" ] || fail "no run file $FILE (plan's run_id $RUN_ID); runs/ holds: $(ls "$WORK/out/runs" 2>&1)"
ok "exit 0, wrote runs/$RUN_ID.h5"

step "read_run.py --require-schema: train=$STEPS rows, eval=$EVAL_ROWS rows, status completed"
"$PYTHON" "$READ_RUN" --quiet --require-schema --expect-rows "train=$STEPS,eval=$EVAL_ROWS" \
  --expect-attr status=completed --expect-attr schema_version=2 --expect-attr "run_id=$RUN_ID" "$FILE" ||
  fail "read_run.py rejected $FILE"
ok "read_run.py accepted the file"

step "every metric column carries units and a description, and docs/FORMAT.md lists it with the same units"
"$PYTHON" - "$FILE" "$SRC/docs/FORMAT.md" <<'PY' || fail "metric column attributes or docs/FORMAT.md disagree"
import re, sys
import h5py
doc = {}
row = r"^\| (train|eval) \| `(\w+)` \| (int64|float64) \| ([^|]+) \| ((?:[^|\n]|\\\|)+) \|$"
for table, col, typ, units, desc in re.findall(row, open(sys.argv[2]).read(), re.M):
    doc[(table, col)] = (typ, units.strip(), desc.strip().replace("\\|", "|"))
assert len(doc) >= 20, f"docs/FORMAT.md: only {len(doc)} rows in the column table"
with h5py.File(sys.argv[1], "r") as f:
    seen = 0
    for table in ("train", "eval"):
        for col, d in f["metrics"][table].items():
            units, desc = d.attrs.get("units"), d.attrs.get("description")
            if isinstance(units, bytes): units = units.decode()
            assert units and desc, f"/metrics/{table}/{col}: units {units!r}, description {desc!r}"
            assert (table, col) in doc, f"/metrics/{table}/{col} is not in docs/FORMAT.md's column table"
            if isinstance(desc, bytes): desc = desc.decode()
            typ = "int64" if d.dtype.kind == "i" else "float64"
            assert doc[(table, col)] == (typ, units, desc), \
                f"/metrics/{table}/{col}: {(typ, units, desc)!r} in the file, {doc[(table, col)]!r} in the docs"
            seen += 1
    assert seen >= 18, seen
    compares = f["metrics/eval/collapse_error"].attrs["compares"]
    if isinstance(compares, bytes): compares = compares.decode()
    assert compares.startswith("expanded form") and "collapsed network" in compares, compares
print(f"  {seen} columns, each with units and description, each in docs/FORMAT.md; collapse_error says what it compares")
PY
ok "column attributes match docs/FORMAT.md"

step "h5py: attributes, metrics columns and snapshots"
"$PYTHON" - "$FILE" "$NAME" "$STEPS" "$EVAL_EVERY" "$SNAPSHOT_EVERY" "$LR" "$WIDTHS" "$BATCH" <<'PY' ||
import sys
import h5py
import numpy as np

path, name = sys.argv[1], sys.argv[2]
steps, eval_every, snap_every = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
lr = float(sys.argv[6])
widths = [int(w) for w in sys.argv[7].split(",")]
batch = int(sys.argv[8])
bad = []
def check(what, cond, detail=""):
    print(f"    {'ok' if cond else 'MISMATCH'}: {what}{(' (' + detail + ')') if detail else ''}")
    if not cond:
        bad.append(what)

def s(v):
    return v.decode() if isinstance(v, bytes) else str(v)

with h5py.File(path, "r") as f:
    a = f.attrs
    check("status == completed", s(a["status"]) == "completed", s(a["status"]))
    check("error is empty", s(a.get("error", "")) == "", repr(s(a.get("error", ""))))
    check("schema_version is int64 2", a["schema_version"] == 2 and np.asarray(a["schema_version"]).dtype == np.int64,
          repr(a["schema_version"]))
    cfg = s(a["config"])
    check("config attr is YAML text naming the run", f"name: {name}" in cfg and "\ntrain:\n" in cfg
          and "  kind: mlp" in cfg)
    try:
        import yaml  # optional: a full parse when PyYAML is there
        doc = yaml.safe_load(cfg)
        check("config attr parses as YAML with name and widths",
              doc["name"] == name and doc["model"]["widths"] == widths, f"{doc['name']}, {doc['model']['widths']}")
    except ImportError:
        pass
    for key in ("git_commit", "torch_version", "hostname", "world_size", "seed", "start_time", "end_time"):
        check(f"provenance attr {key} present and non-empty", key in a and s(a[key]) != "",
              repr(s(a[key])) if key in a else "missing")

    t = f["metrics/train"]
    step = t["step"][:]
    check(f"train step column is 1..{steps}", np.array_equal(step, np.arange(1, steps + 1)),
          f"{step[:3]}...{step[-3:]}, {len(step)} rows")
    check("samples column is step * batch_size", np.array_equal(t["samples"][:], step * batch))
    loss = t["loss"][:]
    check("loss column finite", bool(np.all(np.isfinite(loss))), f"first {loss[0]:.4f}, last {loss[-1]:.4f}")
    check("loss decreases over the run", loss[-5:].mean() < loss[:5].mean())
    lrs = t["lr"][:]
    check(f"lr column == train.lr {lr} (constant schedule)", bool(np.all(lrs == np.float64(lr))),
          f"unique {np.unique(lrs)}")
    check("grad_norm finite and positive", bool(np.all(np.isfinite(t["grad_norm"][:]) & (t["grad_norm"][:] > 0))))

    e = f["metrics/eval"]
    want = sorted(set(range(eval_every, steps + 1, eval_every)) | {steps})
    got = e["step"][:].tolist()
    check(f"eval steps = multiples of {eval_every} plus the final step", got == want, f"got {got}, want {want}")
    for col in ("train_loss", "test_loss", "train_acc", "test_acc", "collapse_error"):
        check(f"eval {col} finite", bool(np.all(np.isfinite(e[col][:]))))
    check("eval accuracies in [0, 1]", bool(np.all((e["test_acc"][:] >= 0) & (e["test_acc"][:] <= 1))))

    want_snaps = sorted(set(range(snap_every, steps + 1, snap_every)) | {steps})
    got_snaps = sorted(f["snapshots"].keys()) if "snapshots" in f else []
    check("snapshot groups = snapshot_every multiples plus the end (8-digit names)",
          got_snaps == [f"{k:08d}" for k in want_snaps], f"got {got_snaps}")
    for k in got_snaps:
        g = f["snapshots"][k]
        layers = sorted(g.keys())
        want_layers = [f"fc{i + 1}" for i in range(len(widths) - 1)]
        check(f"snapshot {k} layers {want_layers}", layers == want_layers, f"got {layers}")
        for i, layer in enumerate(want_layers):
            if layer in g:
                w = g[layer]["weight"]
                check(f"snapshot {k}/{layer}/weight shape (out, in) = {(widths[i + 1], widths[i])}",
                      w.shape == (widths[i + 1], widths[i]) and bool(np.all(np.isfinite(w[:]))), f"{w.shape}")
if bad:
    sys.exit(f"{len(bad)} check(s) failed")
PY
  fail "h5py checks of $FILE failed (see MISMATCH lines)"

step "h5dump -H reads the file and lists /metrics/train/loss"
command -v h5dump >/dev/null || fail "h5dump is not installed (hdf5-tools)"
h5dump -H "$FILE" >"$WORK/h5dump.txt" 2>&1 || { show "$WORK/h5dump.txt"; fail "h5dump -H failed"; }
h5dump -H -d /metrics/train/loss "$FILE" >"$WORK/h5dump-loss.txt" 2>&1 ||
  { show "$WORK/h5dump-loss.txt"; fail "h5dump -H -d /metrics/train/loss failed"; }
grep -q 'DATASET "loss"' "$WORK/h5dump.txt" && grep -q 'GROUP "train"' "$WORK/h5dump.txt" ||
  fail "h5dump -H output has no train group with a loss dataset"
grep -q "DATASET \"/metrics/train/loss\"" "$WORK/h5dump-loss.txt" || { show "$WORK/h5dump-loss.txt"; fail "no /metrics/train/loss"; }
ok "$(grep -A2 'DATASET "/metrics/train/loss"' "$WORK/h5dump-loss.txt" | grep DATASPACE | tr -s ' ')"

# ---------------------------------------------------------------------------------------------
step "the same command again: says already completed, exit 0, file unchanged"
sum_before=$(md5sum <"$FILE")
mtime_before=$(stat -c %Y.%y "$FILE")
sleep 1
train again "$WORK/out" 0
grep -q 'already completed' "$WORK/again.stdout" "$WORK/again.stderr" ||
  { show "$WORK/again.stderr"; fail "second run did not say 'already completed'"; }
[ "$(md5sum <"$FILE")" = "$sum_before" ] || fail "second run changed the file's contents"
[ "$(stat -c %Y.%y "$FILE")" = "$mtime_before" ] || fail "second run changed the file's mtime"
[ "$(ls "$WORK/out/runs")" = "$RUN_ID.h5" ] || fail "second run left other files: $(ls "$WORK/out/runs")"
ok "$(grep -h 'already completed' "$WORK/again.stdout" "$WORK/again.stderr" | head -1)"

step "--force: retrains, moves the old file to $RUN_ID.h5.prev-1"
train force "$WORK/out" 0 --force
[ -f "$FILE.prev-1" ] || fail "no $FILE.prev-1 after --force; runs/ holds: $(ls "$WORK/out/runs")"
[ "$(md5sum <"$FILE.prev-1")" = "$sum_before" ] || fail "$RUN_ID.h5.prev-1 is not the old file"
[ -f "$FILE" ] || fail "--force left no new $FILE"
"$PYTHON" "$READ_RUN" --quiet --require-schema --expect-rows "train=$STEPS,eval=$EVAL_ROWS" \
  --expect-attr status=completed "$FILE" || fail "the retrained file is not a complete run"
[ "$(stat -c %Y.%y "$FILE")" != "$mtime_before" ] || fail "--force did not rewrite $FILE"
ok "old file at .prev-1 (same checksum), new complete run in place"

# ---------------------------------------------------------------------------------------------
step "determinism: seed $SEED twice (out dirs det-a, det-b) gives identical losses; seed $((SEED + 1)) differs"
train det-a "$WORK/det-a" 0
train det-b "$WORK/det-b" 0
OTHER_ID=$(run_id_of --set seed=$((SEED + 1)))
train det-c "$WORK/det-c" 0 --set seed=$((SEED + 1))
for f in "$WORK/det-a/runs/$RUN_ID.h5" "$WORK/det-b/runs/$RUN_ID.h5" "$WORK/det-c/runs/$OTHER_ID.h5"; do
  [ -f "$f" ] || fail "missing run file $f; its runs/ holds: $(ls "$(dirname "$f")" 2>&1)"
done
"$PYTHON" - "$WORK/det-a/runs/$RUN_ID.h5" "$WORK/det-b/runs/$RUN_ID.h5" "$WORK/det-c/runs/$OTHER_ID.h5" <<'PY' ||
import sys
import h5py
import numpy as np
cols = ("loss", "grad_norm")
def read(p):
    with h5py.File(p, "r") as f:
        return {c: f["metrics/train/" + c][:] for c in cols}, f["metrics/eval/test_loss"][:]
(a, ae), (b, be), (c, ce) = (read(p) for p in sys.argv[1:4])
bad = 0
for col in cols:
    if not np.array_equal(a[col], b[col]):
        i = int(np.argmax(a[col] != b[col])) if len(a[col]) == len(b[col]) else -1
        print(f"    MISMATCH: same seed, different {col} (first difference at row {i})")
        bad += 1
if not np.array_equal(ae, be):
    print("    MISMATCH: same seed, different eval test_loss"); bad += 1
if np.array_equal(a["loss"], c["loss"]):
    print("    MISMATCH: a different seed gave the very same loss column"); bad += 1
if bad:
    sys.exit(1)
print(f"    ok: same seed: {len(a['loss'])} losses bit-identical (last {a['loss'][-1]!r}); "
      f"other seed: last loss {c['loss'][-1]!r}")
PY
  fail "determinism checks failed"

# ---------------------------------------------------------------------------------------------
step "divergence: sgd with lr 1e6 must exit 3 with status diverged and an error message"
DIV_ARGS=(--set train.optimizer=sgd --set train.lr=1e6)
DIV_ID=$(run_id_of "${DIV_ARGS[@]}")
train diverge "$WORK/div" 3 "${DIV_ARGS[@]}"
DIV_FILE="$WORK/div/runs/$DIV_ID.h5"
[ -f "$DIV_FILE" ] || fail "diverged run left no run file $DIV_FILE"
"$PYTHON" "$READ_RUN" --quiet --expect-attr status=diverged "$DIV_FILE" || fail "read_run.py: diverged file is bad"
"$PYTHON" - "$DIV_FILE" "$STEPS" <<'PY' || fail "diverged run file checks failed"
import sys
import h5py
import numpy as np
with h5py.File(sys.argv[1], "r") as f:
    s = lambda v: v.decode() if isinstance(v, bytes) else str(v)
    status, error = s(f.attrs["status"]), s(f.attrs["error"])
    n = len(f["metrics/train/step"])
    loss = f["metrics/train/loss"][:]
    end = s(f.attrs.get("end_time", ""))
print(f"    status {status!r}, error {error!r}, {n} train rows, last loss {loss[-1] if n else None}, end_time {end!r}")
ok = status == "diverged" and error.strip() != "" and n < int(sys.argv[2])
sys.exit(0 if ok else 1)
PY
ok "exit 3; $(grep -h 'diverged' "$WORK/diverge.stderr" | tail -1 | cut -c1-160)"

echo "PASS: train_h5py"
