// train.precision: bf16. The forward of an expanded network under bfloat16 autocast against its
// collapsed float32 network: within bf16's rounding (relative 3e-2, documented in
// docs/PARAMETERIZATIONS.md), and measurably not float32 (above 1e-4), while the same comparison
// without autocast stays within 1e-5. Training under bf16 learns as float32 does (final train loss
// within 15%) without being the float32 run, and evaluates in float32; bf16 with float64 is refused.
#include <gtest/gtest.h>

#include "config/config.h"
#include "core/error.h"
#include "data/dataset.h"
#include "model/network.h"
#include "train/autocast.h"
#include "train/trainer.h"

using xpand::config::Config;
using namespace xpand;

namespace {

const char* kExpandedMlp =
    "data: {name: teacher, batch_size: 32, train_size: 512, test_size: 128}\n"
    "model: {kind: mlp, widths: [32, 64, 64, 10]}\n"
    "layers: {fc2: {kind: expanded, factor: 2, depth: 3}}\n"
    "train: {epochs: 2, lr: 0.01}\n";

double rel_err(const torch::Tensor& a, const torch::Tensor& b) {
  auto x = a.to(torch::kFloat64), y = b.to(torch::kFloat64);
  return ((x - y).abs().max() / y.abs().max()).item<double>();
}

}  // namespace

TEST(Precision, Bf16ForwardOfTheExpandedNetworkIsWithinBf16OfTheCollapsedOne) {
  auto cfg = Config::load_string(kExpandedMlp, "p.yaml");
  torch::manual_seed(0);
  auto ds = data::dataset_load(cfg, torch::kCPU);
  auto net = model::network_build(cfg, ds, param::factory_from_config(cfg));
  auto dense = model::network_collapse(cfg, ds, *net);
  torch::NoGradGuard ng;
  auto x = ds.test_x.narrow(0, 0, 64);
  auto want = dense->forward(x);
  EXPECT_LT(rel_err(net->forward(x), want), 1e-5);  // float32: collapse is exact up to float rounding
  torch::Tensor got;
  {
    train::Autocast ac(true, torch::kCPU);
    got = net->forward(x);
    EXPECT_EQ(got.scalar_type(), torch::kBFloat16);  // the last linear ran in bf16
  }
  const double e = rel_err(got, want);
  EXPECT_LT(e, 3e-2);
  EXPECT_GT(e, 1e-4);  // bf16 has 8 significant bits: a float32 result would be far closer
  // the scope restored the previous state
  EXPECT_FALSE(at::autocast::is_cpu_enabled());
  EXPECT_EQ(net->forward(x).scalar_type(), torch::kFloat32);
}

TEST(Precision, Bf16TrainingLearnsLikeFloat32) {
  train::RunOptions opts;
  opts.console = false;
  opts.write_file = false;
  auto fp32 = train::run_train(Config::load_string(kExpandedMlp, "p.yaml", {"train.epochs=6"}), opts);
  auto bf16 =
      train::run_train(Config::load_string(kExpandedMlp, "p.yaml", {"train.epochs=6", "train.precision=bf16"}), opts);
  ASSERT_EQ(bf16.status, "completed");
  EXPECT_LT(bf16.losses.back(), 0.7 * bf16.losses.front());
  EXPECT_NE(bf16.losses[5], fp32.losses[5]);  // the forward did run in bf16
  // the same learning as float32 on the whole training split, within bf16's noise
  EXPECT_NEAR(bf16.final_eval.train_loss, fp32.final_eval.train_loss, 0.15 * fp32.final_eval.train_loss);
  EXPECT_LT(bf16.final_eval.collapse_error, 1e-5);  // evaluation runs in float32
}

TEST(Precision, Bf16NeedsFloat32) {
  train::RunOptions opts;
  opts.console = false;
  opts.write_file = false;
  try {
    train::run_train(Config::load_string(kExpandedMlp, "p.yaml", {"train.precision=bf16", "dtype=float64"}), opts);
    ADD_FAILURE() << "bf16 with float64 was accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("train.precision"), std::string::npos) << e.what();
  }
}
