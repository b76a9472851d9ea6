#!/usr/bin/env bash
# The layer boundaries of docs/ARCHITECTURE.md, checked on every C/C++ file of the tree:
#   - only src/dist/ talks to MPI, NCCL and CUDA (mpi.h, nccl.h, cuda*.h, cuda_runtime*.h);
#   - only src/store/ talks to HDF5 (hdf5.h, H5*.h).
# bench/mpi_allreduce_reference.c is the one exception: a plain-MPI reference that the all-reduce
# benchmark compares xpand's communicator with (it must not go through xpand's layers).
# Usage: check_boundaries.sh SOURCE_DIR     exit 0 when clean, 1 listing every violation.
set -uo pipefail
root="${1:?usage: check_boundaries.sh SOURCE_DIR}"
cd "$root" || exit 2
violations=0
report() { echo "boundary: $1"; violations=$((violations + 1)); }
while IFS= read -r file; do
  case "$file" in bench/mpi_allreduce_reference.c) continue ;; esac
  while IFS=: read -r line text; do
    header=$(sed -E 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"]([^>"]+)[>"].*/\1/' <<<"$text")
    base=${header##*/}
    case "$base" in
      mpi.h|mpi-ext.h|mpicxx.h|nccl.h|nccl_net.h|cuda.h|cuda_runtime.h|cuda_runtime_api.h|cuda_fp16.h|cuda_bf16.h)
        [[ "$file" == src/dist/* ]] || report "$file:$line includes <$header>: only src/dist/ may use MPI, NCCL or CUDA directly (use dist/comm.h)" ;;
      hdf5.h|hdf5_hl.h|H5*.h)
        [[ "$file" == src/store/* ]] || report "$file:$line includes <$header>: only src/store/ may use HDF5 directly (use store/run_file.h)" ;;
    esac
  done < <(grep -nE '^[[:space:]]*#[[:space:]]*include' "$file")
done < <(git ls-files -co --exclude-standard -- 'src/*' 'tests/*' 'bench/*' 2>/dev/null | grep -E '\.(c|cc|cpp|h|hpp|cu)$' ||
         find src tests bench -type f \( -name '*.c' -o -name '*.cc' -o -name '*.cpp' -o -name '*.h' -o -name '*.hpp' -o -name '*.cu' \))
if ((violations > 0)); then
  echo "boundary: $violations violation(s)"
  exit 1
fi
echo "boundary: no file outside src/dist uses MPI/NCCL/CUDA headers, none outside src/store uses HDF5"
