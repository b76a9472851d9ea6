// Resumable checkpoints: everything a run needs to continue bit for bit on CPU — raw parameters
// and buffers, optimizer state, every rank's CPU RNG state, the step (which is also the data
// position: batches are a pure function of seed and step), and the expansion schedule's state.
// A checkpoint is its own HDF5 file, <out>/checkpoints/<run_id>.h5, written to a temporary name and
// renamed over the previous one, so a kill during a checkpoint leaves the previous one whole. The
// run file links it as /checkpoint (an HDF5 external link).
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "dist/comm.h"
#include "model/network.h"
#include "train/expand_schedule.h"

namespace xpand::train {

// Path of the checkpoint file of a run file ("out/runs/x.h5" -> "out/checkpoints/x.h5").
std::string checkpoint_path(const std::string& run_path);

struct CheckpointInfo {
  int64_t step = 0;  // optimizer steps completed
  std::string run_id;
  int64_t world_size = 1;
};

// Collective over `group` (every rank gathers its RNG state to rank 0); rank 0 writes.
// params: the optimizer's parameters in its order. compression: deflate level (0 = off).
// Tensors a checkpoint keeps besides the network's (the subspace's ω), by name under /extra.
using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

void checkpoint_save(const std::string& path, const CheckpointInfo& info, model::Network& net,
                     const std::vector<torch::Tensor>& params, torch::optim::Optimizer& opt,
                     const ExpandSchedule& expand, dist::Communicator& group, int compression,
                     const NamedTensors& extra = {});

// Reads only the header (step, run id, world size); throws store::StoreError on a bad file.
CheckpointInfo checkpoint_peek(const std::string& path);
// Reads every attribute and array of a checkpoint (verifying the arrays' Fletcher-32 checksums) and
// checks that it holds the datasets `expected` names ("/params/<name>", "/buffers/<name>",
// "/extra/<name>") and as many tensors under /params and /buffers; throws an Error naming what is
// damaged or missing.
void checkpoint_verify(const std::string& path, const std::vector<std::string>& expected);

// Restores the state on every rank (each reads the file). The network and optimizer must have
// been built from the same configuration. Returns the header. Throws Error when the checkpoint
// does not match the network (names or shapes).
CheckpointInfo checkpoint_load(const std::string& path, model::Network& net, const std::vector<torch::Tensor>& params,
                               torch::optim::Optimizer& opt, ExpandSchedule& expand, int rank,
                               const NamedTensors& extra = {});

}  // namespace xpand::train
