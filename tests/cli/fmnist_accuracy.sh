#!/usr/bin/env bash
# The reference run: configs/fmnist-mlp.yaml (784-512-512-10, Adam, 2 epochs) must reach >= 84%
# test accuracy on real Fashion-MNIST. Needs /usr/share/datasets/fashion-mnist (scripts/setup.sh).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cli_init "$@"

MIN_ACC=0.84
DATA=/usr/share/datasets/fashion-mnist
CONFIG="$SRC/configs/fmnist-mlp.yaml"

step "Fashion-MNIST is installed at $DATA"
[ -d "$DATA" ] || fail "$DATA is missing: run scripts/setup.sh (it installs Fashion-MNIST)"
ok "$(ls "$DATA" | tr '\n' ' ')"

step "xpand train configs/fmnist-mlp.yaml --out $WORK/out"
RUN_ID=$("$XPAND" plan "$CONFIG" --json 2>"$WORK/plan.err" |
  "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["run_id"])') ||
  { show "$WORK/plan.err"; fail "xpand plan --json failed"; }
SECONDS=0
run_xpand "$WORK/train.stdout" "$WORK/train.stderr" train "$CONFIG" --out "$WORK/out"
secs=$SECONDS
if [ "$RC" -ne 0 ]; then
  show "$WORK/train.stderr"
  fail "xpand train exited $RC"
fi
FILE="$WORK/out/runs/$RUN_ID.h5"
[ -f "$FILE" ] || fail "no run file $FILE; runs/ holds: $(ls "$WORK/out/runs" 2>&1)"
ok "exit 0 in ${secs}s, wrote runs/$RUN_ID.h5"

step "final eval test_acc >= $MIN_ACC and status completed (h5py)"
"$PYTHON" - "$FILE" "$MIN_ACC" <<'PY' || fail "fmnist-mlp run is not good enough (see above)"
import sys
import h5py
import numpy as np
path, min_acc = sys.argv[1], float(sys.argv[2])
with h5py.File(path, "r") as f:
    status = f.attrs["status"]
    status = status.decode() if isinstance(status, bytes) else str(status)
    e = f["metrics/eval"]
    steps, acc = e["step"][:], e["test_acc"][:]
    total = int(f["metrics/train/step"][-1])
print(f"    status {status}; eval at steps {steps.tolist()}; test_acc {[round(float(a), 4) for a in acc]}")
print(f"    final test accuracy: {acc[-1]:.4f} (step {steps[-1]} of {total}; need >= {min_acc})")
bad = []
if status != "completed":
    bad.append(f"status {status!r}, expected 'completed'")
if len(acc) == 0 or steps[-1] != total:
    bad.append("no eval at the final step")
elif not (np.isfinite(acc[-1]) and acc[-1] >= min_acc):
    bad.append(f"final test_acc {acc[-1]:.4f} < {min_acc}")
for b in bad:
    print("    MISMATCH: " + b)
sys.exit(1 if bad else 0)
PY

echo "PASS: fmnist_accuracy"
