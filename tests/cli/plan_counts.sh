#!/usr/bin/env bash
# `xpand plan`: parameter counts of the reference nets, checked against the published totals and
# against an independent per-layer computation from model.widths (in*out weights + out biases).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cli_init "$@"

# check_plan NAME CONFIG EXPECTED_TOTAL [--set ...]: plan --json, then checks the JSON in python.
check_plan() {
  local name=$1 config=$2 expected=$3
  shift 3
  step "$name: xpand plan $config $* --json (expect $expected trainable and collapsed)"
  run_xpand "$WORK/$name.json" "$WORK/$name.err" plan "$SRC/$config" "$@" --json
  if [ "$RC" -ne 0 ]; then
    show "$WORK/$name.err"
    fail "$name: plan --json exited $RC"
  fi
  "$PYTHON" - "$WORK/$name.json" "$expected" <<'PY' || fail "$name: plan --json counts are wrong (see above)"
import json, re, sys

path, expected = sys.argv[1], int(sys.argv[2])
try:
    plan = json.load(open(path))
except ValueError as e:
    sys.exit(f"stdout of plan --json is not JSON: {e}")
bad = []
def check(what, got, want):
    if got != want:
        bad.append(f"{what}: got {got!r}, expected {want!r}")
    else:
        print(f"    ok: {what} = {got}")

# The resolved config is YAML text; pull model.widths and model.bias out of it without a YAML library.
cfg = plan["config"]
m = re.search(r"^model:\n((?:  .*\n)+)", cfg, re.M)
if not m:
    sys.exit("plan JSON config has no model: section")
model = m.group(1)
widths = [int(w) for w in re.search(r"^  widths: \[([^\]]*)\]", model, re.M).group(1).split(",")]
bias = re.search(r"^  bias: (\w+)", model, re.M).group(1) == "true"
print(f"    widths {widths}, bias {bias}")

# Independent arithmetic: layer i is a widths[i] -> widths[i+1] dense layer.
weights = [widths[i] * widths[i + 1] for i in range(len(widths) - 1)]
biases = [widths[i + 1] if bias else 0 for i in range(len(widths) - 1)]
total = sum(weights) + sum(biases)
check("arithmetic total from widths", total, expected)
check("trainable", plan["trainable"], expected)
check("collapsed", plan["collapsed"], expected)

layers = {l["name"]: l for l in plan["layers"]}
for i, (w, b) in enumerate(zip(weights, biases)):
    name = f"fc{i + 1}"
    if name not in layers:
        bad.append(f"layer {name} missing from plan (layers: {sorted(layers)})")
        continue
    l = layers[name]
    check(f"{name} shape", l["shape"], f"{widths[i + 1]}x{widths[i]}")
    check(f"{name} trainable (in*out)", l["trainable"], w)
    check(f"{name} collapsed", l["collapsed"], w)
fc = {n for n in layers if n.startswith("fc")}
check("fc layers", sorted(fc), sorted(f"fc{i + 1}" for i in range(len(weights))))
other = layers.get("(other)", {"trainable": 0})["trainable"]
check("(other) trainable = biases", other, sum(biases))
check("sum of per-layer trainable", sum(l["trainable"] for l in plan["layers"]), expected)
if bad:
    print("\n".join("    MISMATCH " + b for b in bad))
    sys.exit(1)
PY
}

check_plan omega configs/nets/omega-mlp.yaml 199210
check_plan lowrank-deep configs/nets/lowrank-deep.yaml 2509312
# 784*100 + 100 + 100*10 + 10 = 79510
check_plan omega-set configs/nets/omega-mlp.yaml 79510 --set 'model.widths=[784,100,10]'

step "human-readable plan of omega-mlp prints a total line with 199210"
run_xpand "$WORK/omega.txt" "$WORK/omega.txt.err" plan "$SRC/configs/nets/omega-mlp.yaml"
[ "$RC" -eq 0 ] || { show "$WORK/omega.txt.err"; fail "plan exited $RC"; }
grep -Eq '^total[[:space:]]+199210[[:space:]]+199210[[:space:]]' "$WORK/omega.txt" ||
  { show "$WORK/omega.txt"; fail "no 'total 199210 199210' line in the plan"; }
ok "$(grep -E '^total' "$WORK/omega.txt" | tr -s ' ')"

step "human-readable plan with --set model.widths=[784,100,10] totals 79510"
run_xpand "$WORK/omega-set.txt" "$WORK/omega-set.txt.err" plan "$SRC/configs/nets/omega-mlp.yaml" \
  --set 'model.widths=[784,100,10]'
[ "$RC" -eq 0 ] || { show "$WORK/omega-set.txt.err"; fail "plan --set exited $RC"; }
grep -Eq '^total[[:space:]]+79510[[:space:]]+79510[[:space:]]' "$WORK/omega-set.txt" ||
  { show "$WORK/omega-set.txt"; fail "no 'total 79510 79510' line in the plan with --set"; }
ok "$(grep -E '^total' "$WORK/omega-set.txt" | tr -s ' ')"

echo "PASS: plan_counts"
