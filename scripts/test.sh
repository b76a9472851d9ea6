#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, and runs the whole ctest suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${XPAND_BUILD_DIR:-$root/build}"
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
cd "$build"
# The test programs that are not the xpand binary get the OpenBLAS kernels xpand itself settles on
# (it corrects OpenBLAS's fallback to Prescott kernels on CPUs it does not recognise; src/core/blas.h).
if [[ -z "${OPENBLAS_CORETYPE:-}" ]]; then
  core=$(OPENBLAS_VERBOSE=2 "$build/xpand" --version 2>&1 | sed -n 's/^Core: //p' | tail -n 1)
  if [[ -n "$core" ]]; then export OPENBLAS_CORETYPE="$core"; echo "test: OpenBLAS kernels $core"; fi
fi
ctest --output-on-failure -j"$(nproc)" "$@"
