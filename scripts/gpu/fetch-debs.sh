#!/usr/bin/env bash
# Run HERE (Debian bookworm, with its package mirror): downloads the Debian packages the GPU machine
# may lack for building xpand (its image has CUDA, NCCL, PyTorch with its CUDA libtorch, CMake, ninja
# and a compiler; Open MPI, HDF5, yaml-cpp, spdlog, fmt, CLI11, GoogleTest and Google Benchmark are
# not in its package list) into .gpu/debs/ (about 15 MiB). The folder is ignored by git; name it in
# the device run's `carry` (see scripts/gpu/build-and-check.sh).
# Usage: scripts/gpu/fetch-debs.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="$root/.gpu/debs"
# Named one by one (apt's recursive closure drags in compilers, LLVM and Fortran): the development
# packages and the shared libraries they load that an Ubuntu 24.04 / CUDA image does not ship.
packages=(
  libopenmpi-dev libopenmpi3 openmpi-bin openmpi-common
  libpmix2 libhwloc15 libevent-core-2.1-7 libevent-pthreads-2.1-7 libfabric1 libucx0 libibverbs1 librdmacm1
  libpsm2-2 libpsm-infinipath1 libnl-3-200 libnl-route-3-200 libmunge2 libltdl7 libpciaccess0 libxnvctrl0
  libhdf5-dev libhdf5-103-1 libhdf5-hl-100 libhdf5-cpp-103-1 libhdf5-hl-cpp-100 libsz2 libaec0 libaec-dev
  libcurl3-gnutls libssh2-1 librtmp1 libpsl5 libnghttp2-14 libldap-2.5-0 libsasl2-2 libbrotli1
  libyaml-cpp-dev libyaml-cpp0.7 libcli11-dev libspdlog-dev libspdlog1.10 libfmt-dev libfmt9
  libgtest-dev libbenchmark-dev libbenchmark1debian
)
command -v apt-get >/dev/null || { echo "fetch-debs: needs apt-get (Debian bookworm)" >&2; exit 2; }
rm -rf "$out" && mkdir -p "$out"
(cd "$out" && apt-get download "${packages[@]}" >/dev/null)
grep -qxF '/.gpu/' "$root/.git/info/exclude" 2>/dev/null || echo '/.gpu/' >> "$root/.git/info/exclude"
mib=$(du -sm "$out" | cut -f1)
echo "fetch-debs: ${#packages[@]} packages, ${mib} MiB in $out"
if (( mib > 56 )); then
  echo "fetch-debs: more than 56 MiB: the device run carries at most 64 MiB with the working tree" >&2
  exit 1
fi
