// Optimizer and schedule construction (see optim.h).
#include "train/optim.h"

#include <cmath>

#include "core/error.h"

namespace xpand::train {

std::unique_ptr<torch::optim::Optimizer> optimizer_build(const config::Config& cfg,
                                                         const std::vector<torch::Tensor>& params) {
  const std::string& kind = cfg.get_string("train.optimizer");
  double lr = cfg.get_float("train.lr"), wd = cfg.get_float("train.weight_decay");
  if (kind == "sgd") {
    double momentum = cfg.get_float("train.momentum");
    bool nesterov = cfg.get_bool("train.nesterov");
    if (nesterov && momentum <= 0) cfg.fail("train.nesterov", "Nesterov momentum needs train.momentum > 0");
    return std::make_unique<FusedSGD>(
        params, torch::optim::SGDOptions(lr).momentum(momentum).nesterov(nesterov).weight_decay(wd));
  }
  auto betas = std::make_tuple(cfg.get_float("train.beta1"), cfg.get_float("train.beta2"));
  double eps = cfg.get_float("train.eps");
  if (kind == "adam")
    return std::make_unique<FusedAdam>(params, torch::optim::AdamOptions(lr).betas(betas).eps(eps).weight_decay(wd));
  if (kind == "adamw")
    return std::make_unique<FusedAdamW>(params, torch::optim::AdamWOptions(lr).betas(betas).eps(eps).weight_decay(wd));
  cfg.fail("train.optimizer", "unknown optimizer " + kind);
}

void optimizer_set_lr(torch::optim::Optimizer& opt, double lr) {
  for (auto& g : opt.param_groups()) g.options().set_lr(lr);
}

Schedule Schedule::from_config(const config::Config& cfg, int64_t total_steps) {
  Schedule s;
  s.kind = cfg.get_string("train.schedule");
  s.lr = cfg.get_float("train.lr");
  s.warmup_steps = cfg.get_int("train.warmup_steps");
  s.total_steps = total_steps;
  if (s.kind == "step") s.step_size = cfg.get_int("train.step_size"), s.gamma = cfg.get_float("train.gamma");
  if (s.kind == "cosine") {
    s.lr_min = cfg.get_float("train.lr_min");
    if (s.lr_min > s.lr) cfg.fail("train.lr_min", "must not exceed train.lr");
  }
  if (s.warmup_steps >= total_steps && total_steps > 1)
    cfg.fail("train.warmup_steps",
             fmt::format("{} warmup steps leave nothing of the {} training steps", s.warmup_steps, total_steps));
  return s;
}

double Schedule::at(int64_t step) const {
  if (step < warmup_steps) return lr * double(step + 1) / double(warmup_steps);
  int64_t t = step - warmup_steps;
  if (kind == "step") return lr * std::pow(gamma, double(t / step_size));
  if (kind == "cosine") {
    int64_t span = std::max<int64_t>(1, total_steps - warmup_steps);
    double progress = std::min(1.0, double(t) / double(span));
    return lr_min + 0.5 * (lr - lr_min) * (1.0 + std::cos(M_PI * progress));
  }
  return lr;
}

}  // namespace xpand::train
