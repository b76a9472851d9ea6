#!/usr/bin/env bash
# Exported models leave xpand: for an MLP (an expanded layer, a residual, biases), the SmallNet CNN
# with batch norm (a CL-expanded conv, an expanded fc) and the char GPT, `xpand collapse` writes
# MODEL.h5 and MODEL.pt; PyTorch modules built from each file alone (analysis/xpand_torch.py, which
# never reads xpand's config rules) make the same prediction as `xpand eval` on every test sample,
# reproduce the run's recorded test accuracy exactly and its test loss to 1e-5; a numpy-only MLP
# forward (docs/FORMAT.md's loader) agrees; model.init_from starts a run from a model file.
# Checks: tests/cli/export_check.py.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cli_init "$@"
"$PYTHON" -c 'import torch' 2>/dev/null || fail "$PYTHON lacks torch (Debian: python3-torch)"
CHECK=$SRC/tests/cli/export_check.py

# export NAME CONFIG ARGS...: trains, exports .h5 and .pt, evaluates the .h5 and checks all.
export_one() {
  local name=$1 cfg=$2
  shift 2
  local dir=$WORK/$name
  mkdir -p "$dir"
  step "$name: train, collapse to .h5 and .pt, eval"
  run_xpand "$dir/train.out" "$dir/train.err" --log-level warn train "$cfg" "$@" --set "output.dir=$dir/out"
  [ "$RC" -eq 0 ] || { show "$dir/train.err"; fail "$name: train exited $RC"; }
  local run
  run=$(ls "$dir"/out/runs/*.h5)
  for ext in h5 pt; do
    run_xpand "$dir/c.out" "$dir/c.err" collapse "$run" -o "$dir/model.$ext"
    [ "$RC" -eq 0 ] || { show "$dir/c.err"; fail "$name: collapse -o model.$ext exited $RC"; }
  done
  run_xpand "$dir/eval.json" "$dir/eval.err" eval "$dir/model.h5" --json --predictions "$dir/pred.h5"
  [ "$RC" -eq 0 ] || { show "$dir/eval.err"; fail "$name: eval exited $RC"; }
  run_xpand "$dir/eval_run.json" "$dir/eval_run.err" eval "$run" --json
  [ "$RC" -eq 0 ] || { show "$dir/eval_run.err"; fail "$name: eval of the run file exited $RC"; }
  "$PYTHON" "$CHECK" "$run" "$dir/model.h5" "$dir/model.pt" "$dir/pred.h5" "$dir/eval.json" "$dir/eval_run.json" \
    || fail "$name: the exported model does not reproduce the run"
  ok "$name: $(tail -1 "$dir/eval.json")"
}

small=(--set data.eval_max_samples=0 --set data.batch_size=64 --set train.eval_every=0)

export_one mlp "$SRC/configs/nets/quickstart-mlp.yaml" "${small[@]}" --set train.max_steps=40 \
  --set "model.widths=[784,48,48,10]" --set "model.residual=[1]" --set layers.fc2.kind=expanded \
  --set layers.fc2.factor=2 --set layers.fc2.factor_bias=true

export_one cnn "$SRC/configs/nets/smallnet-cnn.yaml" "${small[@]}" --set train.max_steps=30 \
  --set "model.channels=[4,8]" --set "model.fc=[16]" --set layers.conv2.kind=expanded --set layers.conv2.conv=cl \
  --set layers.conv2.factor=2 --set layers.conv2.factor_bias=true --set layers.fc1.kind=expanded \
  --set layers.fc1.factor=2

step "cnn: the snapshot's tensors outside the layers are the trained ones (the checkpoint's, same step)"
"$PYTHON" - "$(ls "$WORK"/cnn/out/runs/*.h5)" <<'PY' || fail "the snapshot's network group"
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r") as f:
    last = sorted(f["snapshots"])[-1]
    net, ck = f["snapshots"][last]["network"], f["checkpoint"]
    assert int(ck.attrs["step"]) == int(last), (ck.attrs["step"], last)
    names = sorted(net)
    assert {n.split(".")[0] for n in names} == {"conv1_bn", "conv2_bn"} and len(names) == 10, names
    for n in names:
        src = ck["params"][n] if n in ck["params"] else ck["buffers"][n]
        assert np.array_equal(net[n][()], src[()].astype(np.float64)), n
print(f"{len(names)} batch-norm tensors equal the checkpoint's")
PY
ok "the snapshot holds every batch-norm parameter and statistic as trained"

# A fixed corpus (the default, Debian's fortunes, is larger than this test needs).
"$PYTHON" - "$WORK/corpus.txt" <<'PY'
import sys
words = "the quick brown fox jumps over a lazy dog while seven wizards quietly hex jolly buckets".split()
out, i = [], 0
for line in range(600):
    out.append(" ".join(words[(line * 7 + k * 3) % len(words)] for k in range(6 + line % 5)) + ".\n")
open(sys.argv[1], "w").write("".join(out))
PY
export_one gpt "$SRC/configs/nets/gpt-char.yaml" --set "data.root=$WORK/corpus.txt" --set data.block_size=32 \
  --set data.batch_size=16 --set data.eval_batches=4 --set data.eval_batch_size=512 --set model.n_layer=2 \
  --set model.n_head=2 --set model.n_embd=32 --set model.dropout=0 --set train.max_steps=25 \
  --set train.warmup_steps=5 --set train.eval_every=0

step "model.init_from a model file: a run that starts from it evaluates as the model does"
mlp_run=$(ls "$WORK"/mlp/out/runs/*.h5)
run_xpand "$WORK/init.out" "$WORK/init.err" --log-level info train "$SRC/configs/nets/quickstart-mlp.yaml" \
  "${small[@]}" --set "model.widths=[784,48,48,10]" --set "model.residual=[1]" \
  --set "model.init_from=$WORK/mlp/model.h5" --set train.optimizer=sgd --set train.lr=1e-30 \
  --set train.max_steps=1 --set "output.dir=$WORK/init/out"
[ "$RC" -eq 0 ] || { show "$WORK/init.err"; fail "train from a model file exited $RC"; }
grep -q "from $WORK/mlp/model.h5 (a model file)" "$WORK/init.err" "$WORK/init.out" \
  || { show "$WORK/init.err"; fail "the run does not say it starts from the model file"; }
"$PYTHON" - "$mlp_run" "$(ls "$WORK"/init/out/runs/*.h5)" <<'PY' || fail "a run from the model file"
import sys, h5py
a, b = (h5py.File(p, "r") for p in sys.argv[1:3])
for k in ("test_acc", "test_loss"):
    x, y = a["metrics/eval"][k][-1], b["metrics/eval"][k][-1]
    assert x == y, (k, x, y)
print("init_from model file: test_acc", b["metrics/eval/test_acc"][-1])
PY
ok "a run started from the model file evaluates to the model's test accuracy and loss exactly"
