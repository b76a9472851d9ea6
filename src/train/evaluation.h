// Evaluation and snapshots of a training network. Evaluation runs on the collapsed network (every
// layer one dense matrix) and records its distance to the network as trained; the ranks of a group
// share the evaluation batches. Snapshots hand the collapsed weights (and, when asked, the raw
// factors) to the sinks.
#pragma once
#include <torch/torch.h>

#include <vector>

#include "config/config.h"
#include "data/dataset.h"
#include "dist/comm.h"
#include "model/network.h"
#include "train/metrics.h"
#include "train/settings.h"

namespace xpand::train {

// The training loss: cross-entropy over classes, or over every position of a language model.
torch::Tensor loss_of(const data::Dataset& ds, const torch::Tensor& logits, const torch::Tensor& y);

class Evaluator {
 public:
  Evaluator(const config::Config& cfg, const data::Dataset& ds, const TrainSettings& s, torch::Device device);
  // Train and test loss and accuracy of the collapsed network, the collapse error on the first test
  // batch, and with data.focus_classes the test accuracy on them and on the other classes.
  // Collective over `comm` (batch i on rank i mod size). Leaves `net` in training mode.
  EvalMetrics run(model::Network& net, dist::Communicator& comm, int64_t step) const;
  bool focus() const { return focus_.defined(); }

 private:
  const config::Config& cfg_;
  const data::Dataset& ds_;
  const TrainSettings& s_;
  torch::Tensor focus_;  // a bool per class (undefined: no focus classes)
};

// Every slot's collapsed weight and own bias as float64 arrays, with the raw tensors when `factors`.
std::vector<MetricSink::Tensor> snapshot_of(model::Network& net, bool factors);

}  // namespace xpand::train
