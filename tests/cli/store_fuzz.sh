#!/usr/bin/env bash
# `xpand inspect` and `xpand collapse` on a corpus of malformed files made from a real run file
# (truncations, byte flips, foreign HDF5 layouts, non-HDF5 files): a clear message and a non-zero
# exit for bad input, and never a crash (signal) or a hang. The corpus and checks live in
# tests/store/fuzz_inspect.py.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cli_init "$@"
cat >"$WORK/tiny.yaml" <<YAML
name: tiny
seed: 3
data: {name: teacher, teacher_inputs: 16, teacher_classes: 4, train_size: 500, test_size: 200, batch_size: 64}
model: {kind: mlp, widths: [16, 24, 12, 4]}
param: {kind: expanded, factor: 2}
train: {optimizer: adam, lr: 0.01, epochs: 3, eval_every: 5}
output: {snapshot_every: 10, snapshot_factors: true}
YAML
step "a good run file to mutate"
run_xpand "$WORK/t.out" "$WORK/t.err" train "$WORK/tiny.yaml" --out "$WORK/out"
[ "$RC" -eq 0 ] || { show "$WORK/t.err"; fail "xpand train exited $RC"; }
GOOD=$(ls "$WORK"/out/runs/tiny-*.h5)
step "fuzz"
"$PYTHON" "$SRC/tests/store/fuzz_inspect.py" "$XPAND" "$GOOD" "$WORK/fuzz" --count "${FUZZ_COUNT:-240}" --jobs 2
