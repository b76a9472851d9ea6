#!/usr/bin/env bash
# The README's main job: installs what is missing, builds, and runs the quickstart on CPU
# (configs/quickstart.yaml), then prints where the results are and a summary table.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${XPAND_BUILD_DIR:-$root/build}"
out="${XPAND_OUT:-$root/out/quickstart}"
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
echo "quickstart: training configs/quickstart.yaml into $out"
"$build/xpand" train "$root/configs/quickstart.yaml" --out "$out" "$@"
echo "quickstart: inspect the run file with h5dump -H, or /usr/bin/python3 + h5py (see docs/FORMAT.md)"
