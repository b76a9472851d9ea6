#!/usr/bin/env bash
# Trains a fixed set of runs into OUT, for checking that a change to xpand changes no number:
#   scripts/same-results.sh /tmp/before        # with the old build
#   scripts/same-results.sh /tmp/after         # with the new build
#   /usr/bin/python3 analysis/compare_runs.py /tmp/before /tmp/after
# The set: the quickstart sweep, and 150-step fmnist-mlp, expanded (f2 d3), low-rank, subspace
# (fastfood) runs on one rank, the expanded (cut: auto), grad_accum 2 and subspace runs on 2 ranks.
# Threads are fixed (threads: 2) so OpenBLAS splits every GEMM the same way each time.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:?usage: same-results.sh OUT_DIR}"
xpand="${XPAND:-$root/build/xpand}"
mkdir -p "$out"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
short=(--set threads=2 --set train.max_steps=150 --set train.eval_every=50 --set output.snapshot_every=50)
run() { echo "same-results: $*" >&2; "$@" >/dev/null; }
cd "$root/configs"
run "$xpand" sweep quickstart.yaml --set threads=2 --out "$out/quickstart"
run "$xpand" train fmnist-mlp.yaml "${short[@]}" --out "$out/single"
run "$xpand" train nets/fmnist-expanded.yaml "${short[@]}" --out "$out/single"
run "$xpand" train nets/lowrank-mlp.yaml "${short[@]}" --set param.kind=lowrank --set param.rank=8 --out "$out/single"
run "$xpand" train nets/omega-mlp.yaml "${short[@]}" --set param.kind=subspace --set param.omega_dim=300 \
  --set param.projection=fastfood --set train.lr=0.01 --out "$out/single"
mpi=(mpirun -np 2 --bind-to none "$xpand")
run "${mpi[@]}" train nets/fmnist-expanded.yaml "${short[@]}" --set threads=1 --out "$out/ranks2"
run "${mpi[@]}" train fmnist-mlp.yaml "${short[@]}" --set threads=1 --set train.grad_accum=2 --out "$out/ranks2"
run "${mpi[@]}" train nets/omega-mlp.yaml "${short[@]}" --set threads=1 --set param.kind=subspace \
  --set param.omega_dim=300 --set param.projection=fastfood --set train.lr=0.01 --out "$out/ranks2"
echo "same-results: wrote $out" >&2
