// The expansion schedule (expand.schedule): "all" keeps every expanded layer expanded; "rotate"
// keeps exactly one eligible layer expanded at a time and moves on every expand.period steps — the
// current layer collapses exactly into its dense weight and the next is re-expanded by an exact
// factorization of its current weight, so the network function is unchanged across a switch.
// Optimizer state (Adam moments, SGD momentum) of the two switched layers restarts from zero; every
// other layer keeps its state.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <vector>

#include "config/config.h"
#include "model/network.h"
#include "param/expanded.h"

namespace xpand::train {

class ExpandSchedule {
 public:
  // Throws ConfigError when rotate is asked for and a layer cannot be re-expanded exactly.
  ExpandSchedule(const config::Config& cfg, model::Network& net, uint64_t seed);
  bool rotating() const { return rotate_; }
  // Call before step `step` (0-based). Returns true when layers were switched.
  bool before_step(int64_t step, torch::optim::Optimizer& opt);
  // Index of the expanded layer (rotate), for logs.
  const std::string& current() const;
  // The schedule's state, for checkpoints: the index of the expanded layer (0 without rotate).
  int64_t current_index() const { return int64_t(cur_); }
  // Makes layer `index` the expanded one (shapes only: a checkpoint load then sets the values).
  void restore(int64_t index);

 private:
  bool rotate_ = false;
  int64_t period_ = 1;
  uint64_t seed_ = 0;
  size_t cur_ = 0;
  std::vector<std::pair<std::string, std::shared_ptr<param::Expanded>>> layers_;
};

}  // namespace xpand::train
