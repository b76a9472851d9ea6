#!/usr/bin/env bash
# Run ON THE GPU MACHINE, from the repository root, with .gpu/ carried (scripts/gpu/fetch-debs.sh
# fills it here first). One call does the whole GPU session's work and leaves its logs in $OUT:
#   scripts/gpu/fetch-debs.sh                                   # here
#   device run: command "bash scripts/gpu/build-and-check.sh", carry [".gpu"], timeout_s 540
#
# 1. Unpacks the carried Debian packages into /tmp/xpand-deps (never into /): Open MPI (relocated
#    with OPAL_PREFIX), HDF5, yaml-cpp, spdlog, fmt, CLI11, GoogleTest, Google Benchmark.
# 2. Builds xpand with CMake + ninja against the CUDA libtorch inside the machine's PyTorch
#    (torch.utils.cmake_prefix_path) and NCCL (CUDA_HOME, else the nvidia-nccl wheel).
# 3. Runs the checks: the unit tests on the CPU (a sanity check of the build), one training run
#    with the NCCL backend on 1 rank, the same with CUDA tensors through the MPI backend on 2 ranks
#    sharing the GPU, and the char GPT at nanoGPT's shakespeare_char shape dense and expanded
#    (tokens/s from the run files). Each step's log goes to $OUT; a failing step is reported and
#    the next one still runs.
#
# Status: written without a GPU machine (none was lent yet) and never run on one: the package and
# build steps follow what was seen of the machine's image (docs/PERFORMANCE.md, "GPU: what is left");
# expect to fix paths on the first lease.
set -uo pipefail
out=${OUT:-/tmp/xpand-gpu}
mkdir -p "$out"
summary="$out/summary.txt"
say() { echo "[$(date +%T)] $*" | tee -a "$summary"; }
step() {  # step NAME CMD...: runs CMD with its output in $out/NAME.log, reports the exit status
  local name=$1; shift
  say "$name: $*"
  local t0=$SECONDS
  "$@" >"$out/$name.log" 2>&1
  local rc=$?
  say "$name: exit $rc after $((SECONDS - t0)) s$([[ $rc -ne 0 ]] && echo " (tail: $(tail -n 3 "$out/$name.log" | tr '\n' ' '))")"
  return $rc
}

ls .gpu/debs/*.deb >/dev/null 2>&1 || { say "no .gpu/debs: run scripts/gpu/fetch-debs.sh here and carry .gpu"; exit 2; }
deps=/tmp/xpand-deps
for f in .gpu/debs/*.deb; do dpkg -x "$f" "$deps"; done
usr=$deps/usr
lib=$usr/lib/x86_64-linux-gnu
export OPAL_PREFIX=$usr PATH=$usr/bin:$PATH
export LD_LIBRARY_PATH=$lib:$lib/openmpi/lib:$lib/hdf5/serial:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
mpirun=$usr/bin/mpirun.openmpi

say "machine: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1)"
say "python: $(python3 -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available())' 2>&1)"
torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
# Debian's yaml-cpp, spdlog, fmt and GoogleTest use the C++11 string ABI; a libtorch built with the
# old one (pip wheels before PyTorch 2.7) cannot link with them.
if [[ "$(python3 -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')" != 1 ]]; then
  say "this PyTorch's libtorch uses the pre-C++11 string ABI: Debian's libraries cannot link with it"
  exit 2
fi
nccl_home=${NCCL_HOME:-}
if [[ -z "$nccl_home" && ! -e "${CUDA_HOME:-/usr/local/cuda}/include/nccl.h" ]]; then
  nccl_home=$(python3 -c 'import nvidia.nccl, os; print(os.path.dirname(nvidia.nccl.__file__))' 2>/dev/null || true)
fi
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda} NCCL_HOME=$nccl_home
say "torch cmake prefix: $torch_prefix; NCCL: ${nccl_home:-$CUDA_HOME}"

step configure cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$torch_prefix;$usr" -DCMAKE_CUDA_ARCHITECTURES=90 -DXPAND_WITH_NCCL=ON \
  -DMPI_CXX_COMPILER="$usr/bin/mpicxx.openmpi" -DMPIEXEC_EXECUTABLE="$mpirun" \
  -DHDF5_C_INCLUDE_DIR="$usr/include/hdf5/serial" -DHDF5_C_LIBRARY_hdf5="$lib/hdf5/serial/libhdf5.so" \
  -DHDF5_NO_FIND_PACKAGE_CONFIG_FILE=ON || exit 1
step build cmake --build build-gpu -j "$(nproc)" || exit 1
ldd build-gpu/xpand | grep "not found" | tee -a "$summary"

step unit-tests build-gpu/tests/xpand_tests --gtest_brief=1
tmp=$(mktemp -d)
gpt=(configs/nets/gpt-char.yaml --set device=cuda --set train.warmup_steps=0 --set data.eval_batches=1
     --set train.epochs=0 --set output.snapshot_every=0)
gx=(--set "layers.h*.mlp.*.kind=expanded" --set "layers.h*.mlp.*.factor=1.30209" --set "layers.h*.mlp.*.depth=2")
step nccl-1rank build-gpu/xpand train configs/fmnist-mlp.yaml --set device=cuda --set dist.backend=nccl \
  --set train.epochs=0 --set train.max_steps=200 --out "$tmp/nccl" --force
step mpi-cuda-2ranks "$mpirun" -np 2 build-gpu/xpand train configs/fmnist-mlp.yaml --set device=cuda \
  --set dist.backend=mpi --set train.epochs=0 --set train.max_steps=200 --out "$tmp/mpi" --force
step gpt-dense build-gpu/xpand train "${gpt[@]}" --set train.max_steps=30 --out "$tmp/gd" --force
step gpt-expanded build-gpu/xpand train "${gpt[@]}" "${gx[@]}" --set train.max_steps=30 --out "$tmp/ge" --force
python3 - "$tmp" <<'PY' | tee -a "$summary"
import glob, sys
import h5py, numpy as np
for name in ("gd", "ge"):
    for path in glob.glob(f"{sys.argv[1]}/{name}/runs/*.h5"):
        with h5py.File(path, "r") as f:
            t = f["metrics/train/time_step"][:]
            ms = 1e3 * float(np.median(t[len(t) // 3:]))
            print(f"{name}: {ms:.1f} ms/step, {64 * 256 / ms * 1e3:,.0f} tokens/s")
PY
cp build-gpu/CMakeCache.txt "$out/" 2>/dev/null
say "done"
