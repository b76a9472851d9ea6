#!/usr/bin/env bash
# The README's main job: installs what is missing, builds, and runs the quickstart sweep on CPU
# (configs/quickstart.yaml: the 784-128-128-10 MLP on Fashion-MNIST, dense and expanded at factors
# 1 and 2, depths 2 and 3), then prints the sweep's table. Extra arguments go to `xpand sweep`
# (e.g. --set train.max_steps=20). XPAND_RANKS=2 trains two points at a time under mpirun.
# Rerunning resumes: completed points are skipped, interrupted ones continue from their checkpoints.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${XPAND_BUILD_DIR:-$root/build}"
out="${XPAND_OUT:-$root/out/quickstart}"
ranks="${XPAND_RANKS:-1}"
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
echo "quickstart: sweeping configs/quickstart.yaml into $out ($ranks process(es))"
rc=0
if [[ "$ranks" -gt 1 ]]; then
  mpi=(mpirun -np "$ranks")
  [[ $(id -u) -eq 0 ]] && mpi+=(--allow-run-as-root)
  "${mpi[@]}" "$build/xpand" sweep "$root/configs/quickstart.yaml" --out "$out" --ranks-per-run 1 "$@" || rc=$?
else
  "$build/xpand" sweep "$root/configs/quickstart.yaml" --out "$out" "$@" || rc=$?
fi
"$build/xpand" inspect "$out"
echo "quickstart: run files in $out/runs, index $out/index.h5; one run in detail: $build/xpand inspect $out --run <run_id>"
exit $rc
