// Optimizers and schedules against closed forms written out here in float64: SGD (momentum,
// Nesterov, weight decay), Adam (L2) and AdamW (decoupled decay); warmup, step and cosine.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <sstream>

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
                                       "weight_decay: 0.01}}",
                                       nesterov)),
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
        if (decoupled)
          w[i] *= 1 - lr * wd;  // AdamW: decay applied to the weight, not the gradient
        else
          g[i] += wd * w[i];  // Adam: L2 added to the gradient
        m[i] = b1 * m[i] + (1 - b1) * g[i];
        v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
        double mhat = m[i] / (1 - std::pow(b1, t)), vhat = v[i] / (1 - std::pow(b2, t));
        w[i] -= lr * mhat / (std::sqrt(vhat) + eps);
      }
      want.push_back(w);
    }
    expect_same(trajectory(fmt::format("train: {{optimizer: {}, lr: 0.1, beta1: 0.8, beta2: 0.95, eps: 1e-6, "
                                       "weight_decay: 0.05}}",
                                       decoupled ? "adamw" : "adam")),
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
  EXPECT_DOUBLE_EQ(cosine.at(4), 0.5);      // warmup: (4+1)/10
  EXPECT_DOUBLE_EQ(cosine.at(10), 1.0);     // peak right after warmup
  EXPECT_NEAR(cosine.at(60), 0.55, 1e-12);  // halfway: lr_min + (lr - lr_min)/2
  EXPECT_NEAR(cosine.at(35), 0.1 + 0.45 * (1 + std::cos(M_PI * 0.25)), 1e-12);
  EXPECT_NEAR(cosine.at(110), 0.1, 1e-12);                                       // floor at the end
  for (int64_t s = 11; s < 110; ++s) EXPECT_LE(cosine.at(s), cosine.at(s - 1));  // monotone decay

  EXPECT_THROW(sched("train: {lr: 0.1, warmup_steps: 200}", 100), xpand::ConfigError);
  EXPECT_THROW(sched("train: {lr: 0.1, schedule: cosine, lr_min: 0.5}", 100), xpand::ConfigError);
}

TEST(Optim, NesterovWithoutMomentumIsAConfigError) {
  auto cfg = Config::load_string("train: {optimizer: sgd, nesterov: true}", "n.yaml");
  auto w = torch::zeros({2}).requires_grad_(true);
  EXPECT_THROW(optimizer_build(cfg, {w}), xpand::ConfigError);
}

namespace {

// Tensors of several sizes (a scalar-sized one, a matrix, one long enough to be split across
// threads with a ragged tail), a non-linear loss so each step's gradient depends on the last update.
std::vector<torch::Tensor> fused_params(torch::ScalarType dtype) {
  torch::manual_seed(7);
  std::vector<torch::Tensor> ps;
  for (auto shape : std::vector<std::vector<int64_t>>{{3}, {37, 41}, {100003}})
    ps.push_back(torch::randn(shape, torch::kFloat64).to(dtype).requires_grad_(true));
  return ps;
}

void fused_step_grads(const std::vector<torch::Tensor>& ps) {
  torch::Tensor loss = torch::zeros({}, ps[0].options());
  for (auto& p : ps) loss = loss + (p * p * p / 3 + torch::sin(3 * p)).sum();
  loss.backward();
}

double max_rel_diff(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    auto x = a[i].detach().to(torch::kFloat64), y = b[i].detach().to(torch::kFloat64);
    worst = std::max(worst, ((x - y).abs() / (1 + y.abs())).max().item<double>());
  }
  return worst;
}

}  // namespace

// The single-pass optimizers against libtorch's own on the same trajectories (10 steps, float64 and
// float32), and their state read back by libtorch's optimizer halfway (what a checkpoint does).
TEST(Optim, FusedUpdatesEqualLibtorchs) {
  using torch::optim::Optimizer;
  struct Kind {
    std::string name;
    std::function<std::unique_ptr<Optimizer>(std::vector<torch::Tensor>, bool fused)> make;
  };
  std::vector<Kind> kinds = {
      {"sgd",
       [](auto ps, bool f) -> std::unique_ptr<Optimizer> {
         auto o = torch::optim::SGDOptions(0.01).weight_decay(0.01);
         if (f) return std::make_unique<FusedSGD>(ps, o);
         return std::make_unique<torch::optim::SGD>(ps, o);
       }},
      {"sgd-momentum",
       [](auto ps, bool f) -> std::unique_ptr<Optimizer> {
         auto o = torch::optim::SGDOptions(0.01).momentum(0.9).dampening(0.1).weight_decay(0.01);
         if (f) return std::make_unique<FusedSGD>(ps, o);
         return std::make_unique<torch::optim::SGD>(ps, o);
       }},
      {"sgd-nesterov",
       [](auto ps, bool f) -> std::unique_ptr<Optimizer> {
         auto o = torch::optim::SGDOptions(0.01).momentum(0.9).nesterov(true);
         if (f) return std::make_unique<FusedSGD>(ps, o);
         return std::make_unique<torch::optim::SGD>(ps, o);
       }},
      {"adam",
       [](auto ps, bool f) -> std::unique_ptr<Optimizer> {
         auto o = torch::optim::AdamOptions(0.01).betas({0.8, 0.95}).eps(1e-6).weight_decay(0.05);
         if (f) return std::make_unique<FusedAdam>(ps, o);
         return std::make_unique<torch::optim::Adam>(ps, o);
       }},
      {"adamw",
       [](auto ps, bool f) -> std::unique_ptr<Optimizer> {
         auto o = torch::optim::AdamWOptions(0.01).weight_decay(0.1);
         if (f) return std::make_unique<FusedAdamW>(ps, o);
         return std::make_unique<torch::optim::AdamW>(ps, o);
       }},
  };
  for (auto dtype : {torch::kFloat64, torch::kFloat32})
    for (auto& k : kinds) {
      SCOPED_TRACE(k.name + (dtype == torch::kFloat64 ? " float64" : " float32"));
      const double tol = dtype == torch::kFloat64 ? 1e-13 : 2e-6;
      auto ref = fused_params(dtype), fused = fused_params(dtype), resumed = fused_params(dtype);
      auto opt_ref = k.make(ref, false), opt_fused = k.make(fused, true);
      std::unique_ptr<Optimizer> opt_resumed;
      for (int t = 0; t < 10; ++t) {
        if (t == 5) {  // libtorch's optimizer continues from the fused one's state and parameters
          for (size_t i = 0; i < fused.size(); ++i) resumed[i].detach().copy_(fused[i].detach());
          std::stringstream buf;
          torch::save(*opt_fused, buf);
          opt_resumed = k.make(resumed, false);
          torch::load(*opt_resumed, buf);
        }
        for (auto* pair : {&ref, &fused, &resumed})
          for (auto& p : *pair) p.mutable_grad() = torch::Tensor();
        fused_step_grads(ref);
        fused_step_grads(fused);
        ASSERT_TRUE(optimizer_fuses(*opt_fused));  // the single-pass loops, not libtorch's fallback
        opt_ref->step();
        opt_fused->step();
        if (opt_resumed) {
          fused_step_grads(resumed);
          opt_resumed->step();
        }
        ASSERT_LT(max_rel_diff(fused, ref), tol) << "step " << t + 1;
        // a real difference from libtorch's update would be orders of magnitude above the tolerance
        ASSERT_GT(max_rel_diff(ref, fused_params(dtype)), 1e3 * tol);
      }
      EXPECT_LT(max_rel_diff(resumed, ref), tol);
    }
  // What the loops do not take goes to libtorch's step(): amsgrad, gradients of another dtype.
  auto ps = fused_params(torch::kFloat32);
  fused_step_grads(ps);
  EXPECT_FALSE(optimizer_fuses(FusedAdam(ps, torch::optim::AdamOptions(0.01).amsgrad(true))));
  EXPECT_TRUE(optimizer_fuses(FusedAdam(ps, torch::optim::AdamOptions(0.01))));
  ps[1].mutable_grad() = ps[1].grad().to(torch::kFloat64);
  EXPECT_FALSE(optimizer_fuses(FusedSGD(ps, torch::optim::SGDOptions(0.01))));
}
