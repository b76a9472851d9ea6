// Optimizers (SGD with momentum/Nesterov, Adam, AdamW) and the learning-rate schedule (linear
// warmup, then constant, step or cosine), built from the config. The optimizers are libtorch's, with
// step() replaced on CPU tensors by one pass over each tensor (fused_optim.cpp); their state, options
// and serialisation are libtorch's own.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <vector>

#include "config/config.h"

namespace xpand::train {

// libtorch's SGD / Adam / AdamW with a single-pass update of CPU float and double tensors; anything
// else (CUDA tensors, sparse gradients, amsgrad, a closure) goes through libtorch's step().
class FusedSGD : public torch::optim::SGD {
 public:
  using torch::optim::SGD::SGD;
  torch::Tensor step(LossClosure closure = nullptr) override;
};

class FusedAdam : public torch::optim::Adam {
 public:
  using torch::optim::Adam::Adam;
  torch::Tensor step(LossClosure closure = nullptr) override;
};

class FusedAdamW : public torch::optim::AdamW {
 public:
  using torch::optim::AdamW::AdamW;
  torch::Tensor step(LossClosure closure = nullptr) override;
};

// Whether opt's next step() takes the single-pass path (every tensor with a gradient on the CPU,
// float or double, densely stored; no amsgrad), given the gradients it holds now.
bool optimizer_fuses(const torch::optim::Optimizer& opt);

std::unique_ptr<torch::optim::Optimizer> optimizer_build(const config::Config& cfg,
                                                         const std::vector<torch::Tensor>& params);
void optimizer_set_lr(torch::optim::Optimizer& opt, double lr);

// The key libtorch's optimizers file a tensor's state under in `state()`: its TensorImpl's address as
// text (libtorch writes it with c10::guts::to_string, an ostream of the pointer, as c10::str does).
inline std::string optimizer_state_key(const torch::Tensor& p) { return c10::str(p.unsafeGetTensorImpl()); }

// lr(step) for step = 0, 1, ... (the step about to be taken).
struct Schedule {
  std::string kind = "constant";  // constant | step | cosine
  double lr = 1e-3, lr_min = 0, gamma = 0.1;
  int64_t warmup_steps = 0, step_size = 1, total_steps = 1;

  static Schedule from_config(const config::Config& cfg, int64_t total_steps);
  double at(int64_t step) const;
};

}  // namespace xpand::train
