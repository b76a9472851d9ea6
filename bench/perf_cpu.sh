#!/usr/bin/env bash
# The CPU measurements of docs/PERFORMANCE.md in one run (an idle machine, about 15 minutes on 2
# cores): xpand against PyTorch on every workload (bench/compare.py), the training step's FLOP/s
# against torch::mm at the same shapes (bench_step), expanded/dense step ratios at the issue's
# batches, and one rank with 2 threads against 2 ranks with 1 thread each.
# Usage: bench/perf_cpu.sh [BUILD_DIR] > docs/results/perf_cpu.txt
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$root/build}"
xpand="$build/xpand"
py=/usr/bin/python3
work=$(mktemp -d /tmp/xpand-perf-XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "# $(date -u +%FT%TZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
echo "# OpenBLAS kernels: $(OPENBLAS_VERBOSE=2 "$xpand" --version 2>&1 | sed -n 's/^Core: //p' | tail -n 1)"

# Median ms/step of `xpand train` (warm-up rows left out) with extra --set arguments.
step_ms() {
  local name=$1 steps=$2; shift 2
  rm -rf "$work/$name"
  "$xpand" train "$@" --set train.epochs=0 --set "train.max_steps=$steps" --set data.eval_max_samples=64 \
    --set output.snapshot_every=0 --out "$work/$name" --force >/dev/null 2>&1
  "$py" - "$work/$name" <<'PY'
import glob, sys, h5py, numpy as np
f = h5py.File(glob.glob(sys.argv[1] + "/runs/*.h5")[0], "r")
t = f["metrics/train/time_step"][:]
print(f"{1e3 * np.median(t[max(1, len(t) // 5):]):.2f}")
PY
}

echo; echo "## bench/compare.py (threads 2)"
"$py" "$root/bench/compare.py" --xpand "$xpand" --rounds 3 --steps 30 --threads 2 --gpt-steps 3 2>/dev/null

echo; echo "## bench_step: training step FLOP/s vs torch::mm (threads 2)"
"$build/bench/bench_step" --benchmark_counters_tabular=true --benchmark_repetitions=3 \
  --benchmark_report_aggregates_only=true 2>/dev/null | grep -E "median|Benchmark"

echo; echo "## expanded / dense step (threads 2, ms)"
em=(configs/nets/expansive-mnist.yaml --set threads=2)
ex=(--set layers.fc2.kind=expanded --set layers.fc2.factor=1 --set layers.fc2.depth=20)
flops() { "$xpand" plan "$@" --json | "$py" -c 'import json, sys; d = json.load(sys.stdin); print(d["flops_per_step"], d["act_first_flops_per_step"])'; }
for b in 64 1024; do
  base=$(step_ms eb$b 60 "$root/${em[0]}" "${em[@]:1}" --set data.batch_size=$b)
  exp=$(step_ms ee$b 60 "$root/${em[0]}" "${em[@]:1}" "${ex[@]}" --set data.batch_size=$b)
  read -r fb _ < <(flops "$root/${em[0]}" --set data.batch_size=$b)
  read -r fe fa < <(flops "$root/${em[0]}" "${ex[@]}" --set data.batch_size=$b)
  "$py" -c "print(f'Expansive MNIST net, 20 factors, batch $b: baseline $base ms, expanded $exp ms, measured ratio {$exp/$base:.2f}; FLOP ratio planned {$fe/$fb:.2f}, activation-first {$fa/$fb:.2f}')"
done
g=(configs/nets/gpt-char.yaml --set threads=2 --set train.warmup_steps=0 --set data.eval_batches=1)
gx=(--set "layers.h*.mlp.*.kind=expanded" --set "layers.h*.mlp.*.factor=1.30209" --set "layers.h*.mlp.*.depth=2")
gd=$(step_ms gd 3 "$root/${g[0]}" "${g[@]:1}")
ge=$(step_ms ge 3 "$root/${g[0]}" "${g[@]:1}" "${gx[@]}")
echo "char GPT at the nanoGPT batch (64 x 256 tokens): dense $gd ms, expanded (c_fc, c_proj through 2000) $ge ms, ratio $("$py" -c "print(f'{$ge/$gd:.2f}')")"

echo; echo "## threads: 1 rank x 2 threads vs 2 ranks x 1 thread (fmnist MLP, batch 128 global, ms/step)"
one=$(step_ms t1 200 "$root/configs/fmnist-mlp.yaml" --set threads=2)
mpi=(mpirun -np 2 --oversubscribe)
[[ $(id -u) -eq 0 ]] && mpi+=(--allow-run-as-root)
rm -rf "$work/t2"
"${mpi[@]}" "$xpand" train "$root/configs/fmnist-mlp.yaml" --set threads=1 --set train.epochs=0 --set train.max_steps=200 \
  --set data.eval_max_samples=64 --set output.snapshot_every=0 --out "$work/t2" --force >/dev/null 2>&1
two=$("$py" - "$work/t2" <<'PY'
import glob, sys, h5py, numpy as np
f = h5py.File(glob.glob(sys.argv[1] + "/runs/*.h5")[0], "r")
t = f["metrics/train/time_step"][:]
print(f"{1e3 * np.median(t[len(t) // 5:]):.2f}")
PY
)
echo "1 rank x 2 threads: $one ms/step; 2 ranks x 1 thread: $two ms/step"
