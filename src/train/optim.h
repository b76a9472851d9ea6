// Optimizers (SGD with momentum/Nesterov, Adam, AdamW: libtorch's implementations) and the
// learning-rate schedule (linear warmup, then constant, step or cosine), built from the config.
#pragma once
#include <memory>
#include <vector>

#include <torch/torch.h>

#include "config/config.h"

namespace xpand::train {

std::unique_ptr<torch::optim::Optimizer> optimizer_build(const config::Config& cfg,
                                                         const std::vector<torch::Tensor>& params);
void optimizer_set_lr(torch::optim::Optimizer& opt, double lr);

// lr(step) for step = 0, 1, ... (the step about to be taken).
struct Schedule {
  std::string kind = "constant";  // constant | step | cosine
  double lr = 1e-3, lr_min = 0, gamma = 0.1;
  int64_t warmup_steps = 0, step_size = 1, total_steps = 1;

  static Schedule from_config(const config::Config& cfg, int64_t total_steps);
  double at(int64_t step) const;
};

}  // namespace xpand::train
