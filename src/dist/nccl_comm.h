// The `nccl` communicator (compiled when CMake finds CUDA + NCCL: core/build_info.h sets
// XPAND_HAVE_NCCL). Include only under `#if XPAND_HAVE_NCCL`.
#pragma once
#include <torch/torch.h>

#include "dist/comm.h"

namespace xpand::dist {

// A NCCL communicator over the ranks of `group` (an mpi communicator): group rank 0 creates the
// unique id and broadcasts it over `group`. Collectives run on the communicator's own CUDA stream,
// ordered after the compute stream (the device's legacy default stream, which libtorch uses unless
// a stream guard says otherwise) with events; Work::wait() orders the compute stream after the
// collective without blocking the host. A collective unfinished after timeout_s calls
// ncclCommAbort and aborts the job.
// NCCL's version, "2.28.3".
std::string nccl_version_string();

CommPtr comm_nccl(const CommPtr& group, torch::Device device, double timeout_s);

}  // namespace xpand::dist
