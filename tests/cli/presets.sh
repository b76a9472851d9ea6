#!/usr/bin/env bash
# Every sweep preset in configs/ runs as shipped, cut short with --set train.max_steps=3 (no warmup,
# a smaller evaluation): each point completes, and `xpand inspect` shows the sweep's table with one
# completed row per point and the swept axes as columns.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cli_init "$@"

presets=(quickstart expansive-mnist overparam-linear expandnets-cnn expandnets-cifar3 expandnets-cifar7 expandnets-kd
  lowrank omega omega-notebook nanogpt-char scaling)
# PRESETS="a b" runs only those (for a quick local check; ctest runs them all).
[ -n "${PRESETS:-}" ] && read -r -a presets <<<"$PRESETS"
here=$PWD
# The CIFAR presets read CIFAR-10's binary distribution: a small stand-in here (the same images are
# also converted to IDX by scripts/cifar_idx.py, read once below with data.name images).
cifar=$("$PYTHON" "$SRC/tests/cli/fake_cifar.py" "$WORK/cifar" 20) || fail "fake CIFAR-10 could not be written"
cifar_idx=$("$PYTHON" "$SRC/tests/cli/fake_cifar.py" "$WORK/cifar" 20 --idx) || fail "fake CIFAR-10 (IDX) failed"
for p in "${presets[@]}"; do
  f="$SRC/configs/$p.yaml"
  [ -f "$f" ] || fail "preset $f is missing"
  step "$p"
  short=(--set train.max_steps=3 --set train.warmup_steps=0 --set data.eval_max_samples=256)
  # The char GPT's step is ~1.2 TFLOP at its shipped batch (64 x 256 tokens): 40 s here. Smaller.
  [ "$p" = nanogpt-char ] && short+=(--set data.batch_size=8 --set data.block_size=64 --set data.eval_batches=2)
  case "$p" in expandnets-cifar*) short+=(--set "data.root=$cifar" --set data.batch_size=32) ;; esac
  if [ "$p" = expandnets-kd ]; then
    # Its KD arms read out/kd-teacher/teacher.h5 from the working directory, as the preset says: the
    # teacher preset trained 3 steps and collapsed there first.
    mkdir -p "$WORK/kd" && cd "$WORK/kd"
    "$XPAND" --log-level warn train "$SRC/configs/nets/smallnet-teacher.yaml" --out out/kd-teacher \
      --set train.max_steps=3 --set data.eval_max_samples=256 >/dev/null || fail "$p: the teacher did not train"
    "$XPAND" collapse out/kd-teacher/runs/*.h5 -o out/kd-teacher/teacher.h5 >/dev/null || fail "$p: teacher collapse"
  fi
  run_xpand "$WORK/$p.plan" "$WORK/$p.plan.err" plan "$f" --json "${short[@]}"
  [ "$RC" -eq 0 ] || { show "$WORK/$p.plan.err"; fail "$p: plan exited $RC"; }
  n=$("$PYTHON" -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["points"]))' "$WORK/$p.plan")
  run_xpand "$WORK/$p.out" "$WORK/$p.err" sweep "$f" --out "$WORK/$p" --progress 0 "${short[@]}"
  [ "$RC" -eq 0 ] || { tail -n 30 "$WORK/$p.err" >&2; fail "$p: sweep exited $RC"; }
  run_xpand "$WORK/$p.inspect" "$WORK/$p.inspect.err" inspect "$WORK/$p"
  [ "$RC" -eq 0 ] || { show "$WORK/$p.inspect.err"; fail "$p: inspect exited $RC"; }
  "$PYTHON" - "$WORK/$p.plan" "$WORK/$p.inspect" "$n" <<'PY' || { show "$WORK/$p.inspect"; fail "$p: inspect table"; }
import json, sys
plan = json.load(open(sys.argv[1]))
text = open(sys.argv[2]).read()
n = int(sys.argv[3])
rows = [l for l in text.splitlines() if any(p["run_id"] in l for p in plan["points"])]
assert len(rows) == n, f"{len(rows)} rows for {n} points"
assert all(" completed " in r for r in rows), [r for r in rows if " completed " not in r]
header = next(l for l in text.splitlines() if "run_id" in l and "status" in l)
for axis in plan["axes"]:
    assert axis in header, f"axis {axis} not a column of: {header}"
print(f"{n} points completed; inspect shows axes {plan['axes']}")
PY
  if [ "$p" = expandnets-kd ]; then
    "$PYTHON" - "$WORK/$p" <<'PY' || fail "$p: the KD arms do not name their teacher"
import glob, sys
import h5py
kd = 0
for path in glob.glob(sys.argv[1] + "/runs/*.h5"):
    with h5py.File(path, "r") as f:
        kd += "kd-teacher/teacher.h5" in str(f.attrs.get("distill_teacher", ""))
assert kd == 6, f"{kd} runs name the teacher, expected 6 (2 KD arms x 3 seeds)"
print("6 KD runs name their teacher")
PY
  fi
  cd "$here"
  ok "$p: $n points, inspect table"
done

# The two CIFAR readers on the same images: the binary distribution (data.name cifar10) and the IDX
# files scripts/cifar_idx.py converted from the python pickles (data.name images) give the same
# training losses, step for step (without augmentation; with it, the first loss differs).
step "CIFAR-10 binary vs IDX: the same inputs"
for form in binary idx; do
  root=$cifar name=cifar10
  [ "$form" = idx ] && root=$cifar_idx name=images
  run_xpand "$WORK/cifar-$form.out" "$WORK/cifar-$form.err" train "$SRC/configs/nets/smallnet3-cifar.yaml" \
    --set data.name=$name --set "data.root=$root" --set data.augment=none --set data.batch_size=25 \
    --set train.max_steps=4 --set train.log_every=1 --set data.eval_max_samples=50 --set "output.dir=$WORK/cifar-$form"
  [ "$RC" -eq 0 ] || { show "$WORK/cifar-$form.err"; fail "smallnet3-cifar on the $form form exited $RC"; }
done
run_xpand "$WORK/cifar-aug.out" "$WORK/cifar-aug.err" train "$SRC/configs/nets/smallnet3-cifar.yaml" \
  --set "data.root=$cifar" --set data.batch_size=25 --set train.max_steps=4 --set train.log_every=1 \
  --set data.eval_max_samples=50 --set "output.dir=$WORK/cifar-aug"
[ "$RC" -eq 0 ] || { show "$WORK/cifar-aug.err"; fail "smallnet3-cifar with augmentation exited $RC"; }
"$PYTHON" - "$WORK" <<'PY' || fail "CIFAR-10 binary and IDX readers disagree"
import glob, sys
import h5py, numpy as np
w = sys.argv[1]
loss = {}
for form in ("binary", "idx", "aug"):
    (path,) = glob.glob(f"{w}/cifar-{form}/runs/*.h5")
    with h5py.File(path, "r") as f:
        loss[form] = f["metrics/train/loss"][:]
        print(form, f.attrs["dataset_source"], loss[form])
assert len(loss["binary"]) == 4, loss
assert np.array_equal(loss["binary"], loss["idx"]), "binary and IDX forms train differently"
assert loss["aug"][0] != loss["binary"][0], "data.augment crop-flip changed nothing"
PY
ok "binary and IDX train identically; augmentation changes the batch"
echo "presets: all ${#presets[@]} presets ran"
