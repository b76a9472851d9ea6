// What a run file records about where and how a run was trained: versions, hosts and devices of
// every rank, the dataset's source, the communicator and cut, threads, seed (RunInfo for the sinks).
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "data/dataset.h"
#include "dist/comm.h"
#include "model/network.h"
#include "train/metrics.h"
#include "train/settings.h"

namespace xpand::train {

struct RunIdentity {
  std::string run_id, path, checkpoint_path, config_yaml;
  std::vector<std::pair<std::string, std::string>> axes;
  bool write_file = true;
  int64_t resume_step = 0;  // > 0: resuming; the run file up to this step is kept
};

// Collective over `group` (every rank's hostname and device are gathered).
RunInfo make_run_info(const RunIdentity& id, const TrainSettings& s, const data::Dataset& ds, int64_t threads,
                      int64_t trainable, torch::Device device, dist::Communicator& group, const std::string& backend,
                      const std::string& cut_mode);

// The /layers table of the run file: each layer of `net` as configured and planned (kind, shape,
// factor, depth, rank, inner width, collapsed and trainable counts, order, cut, FLOPs per sample).
void add_layers(RunInfo& info, const config::Config& cfg, model::Network& net);

}  // namespace xpand::train
