// Device and gradient backend of a run (see backend.h).
#include "dist/backend.h"

#include <fmt/format.h>

#include "core/build_info.h"
#include "core/error.h"
#include "dist/context.h"
#if XPAND_HAVE_NCCL
#include "dist/nccl_comm.h"
#endif

namespace xpand::dist {

torch::Device device_for_run(const std::string& d) {
  if (d == "cuda" && !torch::cuda::is_available())
    throw ConfigError("cuda was requested but this libtorch build sees no CUDA device");
  // Under MPI: one GPU per rank, from the node-local rank.
  if (Context* ctx = Context::get()) return ctx->device_for(d);
  if (d == "cuda" || (d == "auto" && torch::cuda::is_available())) return torch::Device(torch::kCUDA, 0);
  return torch::Device(torch::kCPU);
}

CommPtr gradient_comm(const std::string& b, const CommPtr& group, torch::Device device, double timeout_s) {
  if (b == "nccl" && !XPAND_HAVE_NCCL)
    throw ConfigError("nccl was requested but this xpand was built without NCCL (XPAND_WITH_NCCL)");
  if (b == "nccl" && !device.is_cuda()) throw ConfigError("nccl needs device: cuda (or auto on a GPU node)");
  if (group->size() == 1) return group;
  // Every rank must pick the same backend (a node without visible GPUs under device: auto would
  // otherwise pair NCCL set-up broadcasts with another rank's parameter broadcasts).
  const double cuda_ranks = group->allreduce_scalar(device.is_cuda() ? 1 : 0, ReduceOp::Sum, "device check");
  if (cuda_ranks != 0 && cuda_ranks != group->size())
    throw Error(
        fmt::format("{} of the group's {} ranks see a CUDA device and the others do not; check "
                    "CUDA_VISIBLE_DEVICES and the GPUs of every node (or set device: cpu)",
                    int(cuda_ranks), group->size()));
  const bool nccl = b == "nccl" || (b == "auto" && device.is_cuda() && XPAND_HAVE_NCCL);
#if XPAND_HAVE_NCCL
  if (nccl) return comm_nccl(group, device, timeout_s);
#endif
  (void)nccl;
  (void)timeout_s;
  return group;
}

int ranks_on_this_node() { return Context::get() ? Context::get()->local_size() : 1; }

}  // namespace xpand::dist
