#!/usr/bin/env bash
# A nonlinear expansion (ExpandNets' comparison: ReLU between the factors, `nonlinear: true`) is not
# one linear map. A run with one trains and evaluates, its snapshots hold the layer's factors (and
# its network bias) with the attribute `nonlinear` instead of a weight (docs/FORMAT.md), and every
# reader says so: `xpand collapse` refuses (exit 1), `xpand analyze` leaves the layer out,
# `xpand inspect` shows it, starting a layer from its weight (param.init_from) is a config error, and analysis/xpand_h5.py
# reads the run (snapshot complete) and raises on Run.weight.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cli_init "$@"

base=(--set "model.channels=[4,8]" --set "model.fc=[16]" --set data.name=fashion-mnist --set train.max_steps=3
  --set data.eval_max_samples=256 --set data.batch_size=32 --set name=nl)
cfg=("${base[@]}" --set layers.fc1.kind=expanded --set layers.fc1.depth=3 --set layers.fc1.factor=2
  --set layers.fc1.nonlinear=true --set layers.fc1.factor_bias=true --set layers.conv2.kind=expanded
  --set layers.conv2.nonlinear=true --set "output.dir=$WORK/out")

step "train with nonlinear fc1 and conv2"
run_xpand "$WORK/train.out" "$WORK/train.err" --log-level warn train "$SRC/configs/nets/smallnet-cnn.yaml" "${cfg[@]}"
[ "$RC" -eq 0 ] || { show "$WORK/train.err"; fail "train exited $RC"; }
run=$(ls "$WORK"/out/runs/*.h5)
"$PYTHON" - "$run" <<'PY' || fail "snapshot layout"
import sys, h5py
with h5py.File(sys.argv[1], "r") as f:
    assert f.attrs["status"] in ("completed", b"completed"), f.attrs["status"]
    snap = f["snapshots"][sorted(f["snapshots"])[-1]]
    for layer in ("fc1", "conv2"):
        g = snap[layer]
        assert int(g.attrs["nonlinear"]) == 1, dict(g.attrs)
        assert "weight" not in g and "singular_values" not in g, list(g)
        assert len(g["factors"]) >= 3, list(g["factors"])
    assert "bias" in snap["conv2"], "conv2's network bias (model.layer_bias separate) is missing"
    assert "weight" in snap["fc2"] and "nonlinear" not in snap["fc2"].attrs
print("snapshot: fc1 and conv2 hold factors and attribute nonlinear, fc2 its weight")
PY
ok "snapshot groups"

step "collapse refuses"
run_xpand "$WORK/c.out" "$WORK/c.err" collapse "$run" -o "$WORK/model.h5"
[ "$RC" -eq 1 ] && grep -q "is a nonlinear expansion" "$WORK/c.err" && [ ! -e "$WORK/model.h5" ] ||
  { show "$WORK/c.err"; fail "collapse: exit $RC"; }
ok "collapse: exit 1, $(grep -o 'layer [a-z0-9]* is a nonlinear expansion' "$WORK/c.err")"

step "analyze leaves the layers out"
run_xpand "$WORK/a.out" "$WORK/a.err" analyze "$run"
[ "$RC" -eq 0 ] && grep -q "^fc2 " "$WORK/a.out" && ! grep -q "^fc1 " "$WORK/a.out" &&
  grep -q "layer fc1 is a nonlinear expansion" "$WORK/a.err" || { show "$WORK/a.out"; show "$WORK/a.err"; fail "analyze"; }
ok "analyze"

step "inspect shows them"
run_xpand "$WORK/i.out" "$WORK/i.err" inspect "$run"
[ "$RC" -eq 0 ] && grep -Eq "^fc1 +nonlinear" "$WORK/i.out" || { show "$WORK/i.out"; fail "inspect"; }
ok "inspect"

step "a LoRA adapter on the nonlinear layer's weight (param.init_from)"
run_xpand "$WORK/f.out" "$WORK/f.err" train "$SRC/configs/nets/smallnet-cnn.yaml" "${base[@]}" \
  --set layers.fc1.kind=lora --set "layers.fc1.init_from=$run" --set "output.dir=$WORK/out2"
[ "$RC" -eq 2 ] && grep -q "is a nonlinear expansion" "$WORK/f.err" || { show "$WORK/f.err"; fail "init_from: exit $RC"; }
ok "init_from: exit 2"

step "analysis/xpand_h5.py"
"$PYTHON" - "$SRC/analysis" "$run" <<'PY' || fail "xpand_h5"
import sys
sys.path.insert(0, sys.argv[1])
import xpand_h5 as xh
r = xh.Run(sys.argv[2])
assert r.incomplete_snapshot is None, r.incomplete_snapshot
assert r.snapshot("fc1").nonlinear and not r.snapshot("fc2").nonlinear
assert r.weight("fc2").shape == (10, 16)
try:
    r.weight("fc1")
except xh.XpandError as e:
    assert "nonlinear expansion" in str(e), e
else:
    raise AssertionError("Run.weight of a nonlinear layer did not raise")
print("xpand_h5: snapshot complete, Run.weight raises for fc1")
PY
ok "xpand_h5"
echo "nonlinear: all checks passed"
