#!/usr/bin/env bash
# The LoRA study runs end to end from its one command (scripts/lora-study.sh), cut short: pretraining
# without digit 7, full and LoRA fine-tuning on 7 from that network, and analysis/lora_table.py's
# table. Checked against the run files read here with h5py: the table's accuracies before and after
# are the last eval rows, LoRA's trainable parameters are r (in + out) per layer, its frozen W0 (from
# its checkpoint) and biases equal the pretrained snapshot, and full fine-tuning moved every weight.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cli_init "$@"
[ -d "${XPAND_DATA:-$HOME/.local/share/xpand}/mnist-10k" ] || fail "mnist-10k is not prepared (scripts/setup.sh)"

step "scripts/lora-study.sh, 40 steps of pretraining and of each fine-tuning"
RC=0
XPAND="$XPAND" PYTHON="$PYTHON" bash "$SRC/scripts/lora-study.sh" "$WORK/study" --set train.max_steps=40 \
  --set train.eval_every=20 --set data.eval_max_samples=1000 >"$WORK/study.out" 2>"$WORK/study.err" || RC=$?
[ "$RC" -eq 0 ] || { tail -n 30 "$WORK/study.err" >&2; fail "lora-study.sh exited $RC"; }
cat "$WORK/study.out"
ok "study ran"

step "the table against the run files"
"$PYTHON" - "$WORK/study" "$WORK/study.out" <<'PY'
import glob, sys
import h5py, numpy as np, yaml
out, table = sys.argv[1], open(sys.argv[2]).read()
def only(pattern):
    files = glob.glob(pattern)
    assert files, pattern
    return files
pre = only(f"{out}/pretrain/runs/*.h5")
assert len(pre) == 1, pre
fine = only(f"{out}/finetune/runs/*.h5")
assert len(fine) == 4, fine  # full and LoRA at two learning rates
rows = [l for l in table.splitlines() if l.startswith("| ") and not l.startswith("| network")]
def row(label, lr=None):
    r = [l for l in rows if l.startswith("| " + label) and (lr is None or f", lr {lr:g} |" in l)]
    assert len(r) == 1, (label, lr, rows)
    return [c.strip() for c in r[0].strip("|").split("|")]
with h5py.File(pre[0], "r") as p:
    ev = p["metrics/eval"]
    r = row("pretrained")
    assert r[3] == f"{ev['test_focus_acc'][-1]:.4f}" and r[4] == f"{ev['test_rest_acc'][-1]:.4f}", r
    assert ev["test_focus_acc"][-1] < 0.1, "the pretrained net should not know digit 7"
    snap = p["snapshots"][sorted(p["snapshots"])[-1]]
    W = {l: snap[l]["weight"][:] for l in ("fc1", "fc2", "fc3")}
    B = {l: snap[l]["bias"][:] for l in ("fc1", "fc2", "fc3")}
widths = [784, 512, 256, 10]
for path in fine:
    with h5py.File(path, "r") as f:
        cfg = yaml.safe_load(f.attrs["config"])
        kind = cfg["param"]["kind"]
        ev = f["metrics/eval"]
        lr = cfg["train"]["lr"]
        r = row("LoRA" if kind == "lora" else "full", lr)
        assert r[1] == "completed", r
        assert r[3] == f"{ev['test_focus_acc'][-1]:.4f}" and r[4] == f"{ev['test_rest_acc'][-1]:.4f}", r
        if lr >= 1e-3:
            assert ev["test_focus_acc"][-1] > 0.5, f"{kind} lr {lr}: digit 7 not learnt: {ev['test_focus_acc'][-1]}"
        trainable = int(f.attrs["trainable_params"])
        assert r[6] == f"{trainable:,}", (r, trainable)
        ck = f["checkpoint"]
        snap = f["snapshots"][sorted(f["snapshots"])[-1]]
        if kind == "lora":
            rank = cfg["param"]["rank"]
            assert trainable == sum(rank * (a + b) for a, b in zip(widths, widths[1:])), trainable
            for l in W:
                assert np.array_equal(ck["buffers"][f"{l}.w0"][:].astype(np.float64), W[l].astype(np.float32).astype(np.float64)), l
                assert np.array_equal(ck["params"][f"{l}_bias"][:].astype(np.float64), B[l].astype(np.float32).astype(np.float64)), l
        else:
            assert trainable == sum(a * b + b for a, b in zip(widths, widths[1:])), trainable
            for l in W:
                assert np.abs(snap[l]["weight"][:] - W[l]).max() > 0, f"full fine-tuning left {l} unchanged"
print("table and run files agree")
PY
ok "table = run files; LoRA froze W0 and biases"
