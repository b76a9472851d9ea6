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

# Expansive Networks' baseline Net(expansive=False): 784*128 + 128 + 128*10 + 10 = 101770
check_plan expansive-baseline configs/nets/expansive-mnist.yaml 101770 --set data.name=fashion-mnist

step "Expansive Networks sweep: baseline 101770; 5 and 20 factors train the chain, collapse to 101770"
run_xpand "$WORK/expansive-sweep.json" "$WORK/expansive-sweep.err" plan "$SRC/configs/expansive-mnist.yaml" --json \
  --set data.name=fashion-mnist
[ "$RC" -eq 0 ] || { show "$WORK/expansive-sweep.err"; fail "plan of the expansive sweep exited $RC"; }
for n in 5 20; do
  # fc1 (784*128 + 128, its bias inside the chain) + n factors 128x128 + fc2 (128*10 + 10)
  want=$((784 * 128 + 128 + n * 128 * 128 + 128 * 10 + 10))
  run_xpand "$WORK/expansive-$n.json" "$WORK/expansive-$n.err" plan "$SRC/configs/nets/expansive-mnist.yaml" --json \
    --set data.name=fashion-mnist --set layers.fc1.kind=expanded --set layers.fc1.depth=$((n + 1)) \
    --set layers.fc1.factor=1 --set layers.fc1.width_of=out --set layers.fc1.residual=tail \
    --set layers.fc1.first_bias=true --set layers.fc1.init=torch-default
  [ "$RC" -eq 0 ] || { show "$WORK/expansive-$n.err"; fail "plan of $n factors exited $RC"; }
  "$PYTHON" - "$WORK/expansive-$n.json" "$WORK/expansive-sweep.json" "$want" <<'PY' || fail "expansive $n factors"
import json, sys
plan, sweep, want = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), int(sys.argv[3])
assert plan["trainable"] == want, (plan["trainable"], want)
assert plan["collapsed"] == 101770, plan["collapsed"]
points = sorted(p["trainable"] for p in sweep["points"])
assert want in points and 101770 in points, points
print(f"    ok: trainable {want}, collapsed 101770; the sweep's points train {sorted(set(points))}")
PY
done

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


step "low-rank notebook network: ranks [150,150,150,80] -> 872800 trainable, 2509312 collapsed"
run_xpand "$WORK/lowrank.json" "$WORK/lowrank.json.err" plan --json "$SRC/configs/nets/lowrank-deep-r150.yaml"
[ "$RC" -eq 0 ] || { show "$WORK/lowrank.json.err"; fail "plan exited $RC"; }
"$PYTHON" - "$WORK/lowrank.json" <<'PY' || fail "low-rank counts"
import json, sys
plan = json.load(open(sys.argv[1]))
layers = {l["name"]: l for l in plan["layers"]}
dims = [784, 1024, 1024, 512, 256, 10]
ranks = [150, 150, 150, 80, None]
want = 0
for i, r in enumerate(ranks):
    n_in, n_out = dims[i], dims[i + 1]
    t = r * (n_in + n_out) if r else n_in * n_out      # B (out x r) + C (r x in), or dense
    l = layers[f"fc{i + 1}"]
    assert l["trainable"] == t, (l["name"], l["trainable"], t)
    assert l["kind"] == ("lowrank" if r else "dense"), l
    want += t
assert want == 872800 and plan["trainable"] == 872800, plan["trainable"]
assert plan["collapsed"] == 2509312, plan["collapsed"]
print("    ok: trainable 872800, collapsed 2509312, per layer r*(in+out)")
PY

step "plan from shapes: a 1.15 G-parameter expanded MLP is planned under a 3 GB address-space limit"
# Its factors hold 4.6 GB of float32; the plan builds them on the meta device, so it needs none of
# that (a plan that allocated the weights failed here with "can't allocate memory", exit 1).
cat >"$WORK/big.yaml" <<YAML
data: {name: teacher, teacher_inputs: 32, teacher_classes: 6, train_size: 640, test_size: 64, batch_size: 32}
model: {kind: mlp, widths: [32, 12000, 12000, 6]}
param: {kind: expanded, factor: 2, depth: 2}
YAML
if command -v prlimit >/dev/null; then
  RC=0
  prlimit --as=3000000000 "$XPAND" plan "$WORK/big.yaml" --json >"$WORK/big.json" 2>"$WORK/big.err" || RC=$?
  [ "$RC" -eq 0 ] || { show "$WORK/big.err"; fail "plan of the big network under a 3 GB limit exited $RC"; }
  "$PYTHON" - "$WORK/big.json" <<'PY' || fail "big plan counts"
import json, sys
plan = json.load(open(sys.argv[1]))
h = 2 * 12000                                   # factor 2: the hidden width of each layer's product
dims = [32, 12000, 12000, 6]
want = sum(h * i + o * h for i, o in zip(dims, dims[1:])) + sum(dims[1:])   # two factors per layer + biases
assert plan["trainable"] == want, (plan["trainable"], want)
print(f"    ok: trainable {want} (factors {4 * (want - sum(dims[1:])) / 1e9:.1f} GB of float32) planned under 3 GB")
PY
else
  echo "    skipped: no prlimit"
fi

echo "PASS: plan_counts"
