// Where a rank computes and which communicator its gradients travel on: the device from the
// `device` key (one GPU per rank under MPI, from the node-local rank) and the backend from
// `dist.backend` (the group's mpi communicator, or a NCCL communicator built over it).
#pragma once
#include <torch/torch.h>

#include <string>

#include "dist/comm.h"

namespace xpand::dist {

// `requested`: cpu | cuda | auto. ConfigError (its message without the key: the caller names
// `device`) when cuda is asked for and absent.
torch::Device device_for_run(const std::string& requested);

// `backend`: auto | mpi | nccl. ConfigError (for dist.backend, unnamed) for nccl without NCCL or without
// a CUDA device; Error when the ranks of a group disagree on having a GPU. One rank: the group.
CommPtr gradient_comm(const std::string& backend, const CommPtr& group, torch::Device device, double timeout_s);

// Ranks of this process's node (1 without MPI).
int ranks_on_this_node();

}  // namespace xpand::dist
