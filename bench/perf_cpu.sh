#!/usr/bin/env bash
# The CPU measurements of docs/PERFORMANCE.md in one run (an idle machine, about 20 minutes on 2
# cores): xpand against PyTorch on every workload (bench/compare.py), the training step's FLOP/s
# against the same GEMMs alone (bench_step), expanded/dense step ratios at the issue's batches, one
# epoch end to end against a torchvision DataLoader (bench/epoch_compare.py), and one rank with 2
# threads against 2 ranks with 1 thread each. Needs python3-torch and python3-torchvision
# (scripts/setup.sh --bench).
# Usage: bench/perf_cpu.sh [BUILD_DIR] > docs/results/perf_cpu.txt
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$root/build}"
xpand="$build/xpand"
py=/usr/bin/python3
work=$(mktemp -d /tmp/xpand-perf-XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "# $(date -u +%FT%TZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
core=$(OPENBLAS_VERBOSE=2 "$xpand" --version 2>&1 | sed -n 's/^Core: //p' | tail -n 1)  # the kernels xpand runs
echo "# OpenBLAS kernels: $core"

# Median ms/step of the run in DIR (the first fifth, warm-up, left out), read with analysis/xpand_h5.
median_ms() {
  PYTHONPATH="$root/analysis" "$py" -c 'import sys, numpy as np, xpand_h5
t = xpand_h5.load_runs(sys.argv[1])[0].train["time_step"]
print(f"{1e3 * np.median(t[max(1, len(t) // 5):]):.2f}")' "$1"
}
# `xpand train` with extra --set arguments (LAUNCHER: e.g. mpirun, or empty); prints median_ms.
step_ms() {
  local name=$1 steps=$2; shift 2
  rm -rf "$work/$name"
  ${LAUNCHER:-} "$xpand" train "$@" --set train.epochs=0 --set "train.max_steps=$steps" --set data.eval_max_samples=64 \
    --set output.snapshot_every=0 --out "$work/$name" --force >/dev/null 2>&1
  median_ms "$work/$name"
}

echo; echo "## bench/compare.py (threads 2)"
"$py" "$root/bench/compare.py" --xpand "$xpand" --rounds 3 --steps 30 --threads 2 --gpt-steps 3 2>/dev/null

echo; echo "## bench_step: training step FLOP/s vs the GEMMs of the same step alone (threads 2)"
# 7 repetitions of every row in random order, medians: this VM's speed drifts by +-20% over seconds.
efficiency=$(cat <<'PY'
import json, sys
rows = {b["run_name"]: b for b in json.load(sys.stdin)["benchmarks"] if b.get("aggregate_name") == "median"}
for name, b in rows.items():
    rate = "%8.1f GFLOP/s" % (b["FLOP/s"] / 1e9) if "FLOP/s" in b else ""
    print("%-45s %8.2f ms %s" % (name, b["real_time"], rate))
for shape in ("width:512/batch:128", "width:1024/batch:128", "width:512/batch:1024"):
    step, gemms = rows["BM_mlp_step/" + shape], rows["BM_mlp_gemms/" + shape]
    print("step efficiency %s: %.2f of the GEMM rate at the step's shapes" % (shape, step["FLOP/s"] / gemms["FLOP/s"]))
PY
)
XPAND_BENCH_THREADS=2 "$build/bench/bench_step" --benchmark_repetitions=7 --benchmark_enable_random_interleaving=true \
  --benchmark_report_aggregates_only=true --benchmark_format=json 2>/dev/null | "$py" -c "$efficiency"

echo; echo "## expanded / dense step (threads 2, ms)"
# The benchmark's fixed geometry (784-128-[128x128 + skip]-10), kept so recorded times stay comparable.
em=(configs/nets/expansive-mnist.yaml --set threads=2 --set 'model.widths=[784,128,128,10]' --set 'model.residual=[1]')
ex=(--set layers.fc2.kind=expanded --set layers.fc2.factor=1 --set layers.fc2.depth=20)
flops() { "$xpand" plan "$@" --json | "$py" -c 'import json, sys; d = json.load(sys.stdin); print(d["flops_per_step"], d["act_first_flops_per_step"])'; }
for b in 64 1024; do
  base=$(step_ms eb$b 60 "$root/${em[0]}" "${em[@]:1}" --set data.batch_size=$b)
  exp=$(step_ms ee$b 60 "$root/${em[0]}" "${em[@]:1}" "${ex[@]}" --set data.batch_size=$b)
  read -r fb _ < <(flops "$root/${em[0]}" --set data.batch_size=$b)
  read -r fe fa < <(flops "$root/${em[0]}" "${ex[@]}" --set data.batch_size=$b)
  "$py" -c "print(f'Expansive MNIST net, 20 factors, batch $b: baseline $base ms, expanded $exp ms, measured ratio {$exp/$base:.2f}; FLOP ratio planned {$fe/$fb:.2f}, activation-first {$fa/$fb:.2f}')"
done
OPENBLAS_CORETYPE=$core "$py" "$root/bench/chain_threads.py" --batch 1024
g=(configs/nets/gpt-char.yaml --set threads=2 --set train.warmup_steps=0 --set data.eval_batches=1)
gx=(--set "layers.h*.mlp.*.kind=expanded" --set "layers.h*.mlp.*.factor=1.30209" --set "layers.h*.mlp.*.depth=2")
gd=$(step_ms gd 3 "$root/${g[0]}" "${g[@]:1}")
ge=$(step_ms ge 3 "$root/${g[0]}" "${g[@]:1}" "${gx[@]}")
echo "char GPT at the nanoGPT batch (64 x 256 tokens): dense $gd ms, expanded (c_fc, c_proj through 2000) $ge ms, ratio $("$py" -c "print(f'{$ge/$gd:.2f}')")"
read -r gf _ < <(flops "$root/${g[0]}" "${g[@]:1}")
echo "char GPT dense step: $("$py" -c "print(f'{$gf / ($gd / 1e3) / 1e9:.1f}')") GFLOP/s (planner FLOPs over the step time); its GEMMs alone:"
OPENBLAS_CORETYPE=$core "$py" "$root/bench/gpt_gemm_rate.py" --threads 2

echo; echo "## one epoch end to end: xpand train vs a torchvision Dataset + DataLoader (bench/epoch_compare.py)"
"$py" "$root/bench/epoch_compare.py" --xpand "$xpand" --rounds 2 --threads 2 --workers 0,2

echo; echo "## threads: 1 rank x 2 threads vs 2 ranks x 1 thread (fmnist MLP, batch 128 global, ms/step)"
one=$(step_ms t1 200 "$root/configs/fmnist-mlp.yaml" --set threads=2)
mpi=(mpirun -np 2 --oversubscribe)
[[ $(id -u) -eq 0 ]] && mpi+=(--allow-run-as-root)
two=$(LAUNCHER="${mpi[*]}" step_ms t2 200 "$root/configs/fmnist-mlp.yaml" --set threads=1)
echo "1 rank x 2 threads: $one ms/step; 2 ranks x 1 thread: $two ms/step"
