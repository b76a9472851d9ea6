// Optimizers and schedules against closed forms written out here in float64: SGD (momentum,
// Nesterov, weight decay), Adam (L2) and AdamW (decoupled decay); warmup, step and cosine.
#include <gtest/gtest.h>

#include <cmath>

#include <fmt/format.h>

#include "config/config.h"
#include "core/error.h"
#include "train/optim.h"

using xpand::config::Config;
using namespace xpand::train;

namespace {

// Runs 5 steps of the configured optimizer on f(w) = Σ c_i w_i² / 2 + Σ w_i³/3 (non-linear gradient),
// returns the trajectory of w (float64).
std::vector<std::vector<double>> trajectory(const std::string& yaml) {
  auto cfg = Config::load_string(yaml, "optim.yaml");
  auto w = torch::tensor({0.5, -1.0, 2.0}, torch::kFloat64).requires_grad_(true);
  auto c = torch::tensor({1.0, 3.0, 0.5}, torch::kFloat64);
  auto opt = optimizer_build(cfg, {w});
  std::vector<std::vector<double>> out;
  for (int t = 0; t < 5; ++t) {
    opt->zero_grad();
    auto loss = (c * w * w / 2).sum() + (w * w * w / 3).sum();
    loss.backward();
    opt->step();
    auto a = w.detach();
    out.push_back({a[0].item<double>(), a[1].item<double>(), a[2].item<double>()});
  }
  return out;
}

std::vector<double> grad_of(const std::vector<double>& w) {
  const double c[3] = {1.0, 3.0, 0.5};
  std::vector<double> g(3);
  for (int i = 0; i < 3; ++i) g[i] = c[i] * w[i] + w[i] * w[i];
  return g;
}

void expect_same(const std::vector<std::vector<double>>& got, const std::vector<std::vector<double>>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t t = 0; t < got.size(); ++t)
    for (int i = 0; i < 3; ++i) EXPECT_NEAR(got[t][i], want[t][i], 1e-12) << "step " << t << " coord " << i;
}

}  // namespace

TEST(Optim, SgdMomentumNesterovWeightDecay) {
  for (bool nesterov : {false, true}) {
    const double lr = 0.05, mu = 0.9, wd = 0.01;
    std::vector<double> w = {0.5, -1.0, 2.0}, buf(3, 0);
    std::vector<std::vector<double>> want;
    for (int t = 0; t < 5; ++t) {
      auto g = grad_of(w);
      for (int i = 0; i < 3; ++i) {
        double d = g[i] + wd * w[i];
        buf[i] = t == 0 ? d : mu * buf[i] + d;  // PyTorch: the first step's buffer is the gradient
        w[i] -= lr * (nesterov ? d + mu * buf[i] : buf[i]);
      }
      want.push_back(w);
    }
    expect_same(trajectory(fmt::format("train: {{optimizer: sgd, lr: 0.05, momentum: 0.9, nesterov: {}, "
                                       "weight_decay: 0.01}}", nesterov)),
                want);
  }
}

TEST(Optim, AdamAndAdamW) {
  for (bool decoupled : {false, true}) {
    const double lr = 0.1, b1 = 0.8, b2 = 0.95, eps = 1e-6, wd = 0.05;
    std::vector<double> w = {0.5, -1.0, 2.0}, m(3, 0), v(3, 0);
    std::vector<std::vector<double>> want;
    for (int t = 1; t <= 5; ++t) {
      auto g = grad_of(w);
      for (int i = 0; i < 3; ++i) {
        if (decoupled) w[i] *= 1 - lr * wd;  // AdamW: decay applied to the weight, not the gradient
        else g[i] += wd * w[i];              // Adam: L2 added to the gradient
        m[i] = b1 * m[i] + (1 - b1) * g[i];
        v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
        double mhat = m[i] / (1 - std::pow(b1, t)), vhat = v[i] / (1 - std::pow(b2, t));
        w[i] -= lr * mhat / (std::sqrt(vhat) + eps);
      }
      want.push_back(w);
    }
    expect_same(trajectory(fmt::format("train: {{optimizer: {}, lr: 0.1, beta1: 0.8, beta2: 0.95, eps: 1e-6, "
                                       "weight_decay: 0.05}}", decoupled ? "adamw" : "adam")),
                want);
  }
}

TEST(Schedule, WarmupStepAndCosine) {
  auto sched = [](const std::string& yaml, int64_t total) {
    return Schedule::from_config(Config::load_string(yaml, "s.yaml"), total);
  };
  auto constant = sched("train: {lr: 0.1, warmup_steps: 4}", 100);
  EXPECT_DOUBLE_EQ(constant.at(0), 0.025);
  EXPECT_DOUBLE_EQ(constant.at(3), 0.1);
  EXPECT_DOUBLE_EQ(constant.at(99), 0.1);

  auto step = sched("train: {lr: 0.1, schedule: step, step_size: 10, gamma: 0.5}", 100);
  EXPECT_DOUBLE_EQ(step.at(9), 0.1);
  EXPECT_DOUBLE_EQ(step.at(10), 0.05);
  EXPECT_DOUBLE_EQ(step.at(35), 0.0125);

  auto cosine = sched("train: {lr: 1.0, schedule: cosine, lr_min: 0.1, warmup_steps: 10}", 110);
  EXPECT_DOUBLE_EQ(cosine.at(4), 0.5);                 // warmup: (4+1)/10
  EXPECT_DOUBLE_EQ(cosine.at(10), 1.0);                // peak right after warmup
  EXPECT_NEAR(cosine.at(60), 0.55, 1e-12);             // halfway: lr_min + (lr - lr_min)/2
  EXPECT_NEAR(cosine.at(35), 0.1 + 0.45 * (1 + std::cos(M_PI * 0.25)), 1e-12);
  EXPECT_NEAR(cosine.at(110), 0.1, 1e-12);             // floor at the end
  for (int64_t s = 11; s < 110; ++s) EXPECT_LE(cosine.at(s), cosine.at(s - 1));  // monotone decay

  EXPECT_THROW(sched("train: {lr: 0.1, warmup_steps: 200}", 100), xpand::ConfigError);
  EXPECT_THROW(sched("train: {lr: 0.1, schedule: cosine, lr_min: 0.5}", 100), xpand::ConfigError);
}

TEST(Optim, NesterovWithoutMomentumIsAConfigError) {
  auto cfg = Config::load_string("train: {optimizer: sgd, nesterov: true}", "n.yaml");
  auto w = torch::zeros({2}).requires_grad_(true);
  EXPECT_THROW(optimizer_build(cfg, {w}), xpand::ConfigError);
}
