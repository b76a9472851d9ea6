// Low-rank and LoRA layers: the parameter counts of the low-rank notebook's network, the same
// output in every contraction order, the rank checked against the layer's shape, and LoRA starting
// at W0, training only its adapters and merging exactly.
#include <gtest/gtest.h>

#include <algorithm>

#include "config/config.h"
#include "core/error.h"
#include "data/dataset.h"
#include "model/network.h"
#include "param/lowrank.h"

using namespace xpand;
using namespace xpand::param;

namespace {

double rel_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>() / std::max(1e-300, b.abs().max().item<double>());
}

}  // namespace

TEST(LowRank, NotebookNetworkCounts) {
  data::Dataset ds;
  ds.sample_shape = {1, 28, 28};
  ds.num_classes = 10;
  auto cfg = config::Config::load_string(
      "model: {widths: [784, 1024, 1024, 512, 256, 10], bias: false}\n"
      "layers:\n  fc1: {kind: lowrank, rank: 150}\n  fc2: {kind: lowrank, rank: 150}\n"
      "  fc3: {kind: lowrank, rank: 150}\n  fc4: {kind: lowrank, rank: 80}\n",
      "lowrank.yaml");
  auto net = model::network_build(cfg, ds, factory_from_config(cfg));
  auto r = model::network_report(*net, 128);
  EXPECT_EQ(r.trainable, 872800);
  EXPECT_EQ(r.collapsed, 2509312);
  auto collapsed = model::network_collapse(cfg, ds, *net);
  auto x = torch::randn({3, 1, 28, 28});
  EXPECT_LE(rel_diff(collapsed->forward(x), net->forward(x)), 1e-5);
}

TEST(LowRank, OrdersAgreeAndRankIsChecked) {
  auto opts = torch::TensorOptions().dtype(torch::kFloat64);
  Spec s;
  s.layer = "fc";
  s.kind = "lowrank";
  s.rank = 3;
  torch::manual_seed(4);
  LowRank p(s, {{20, 30}}, Init::torch_default({{20, 30}}));
  p.to(torch::kFloat64);
  auto x = torch::randn({50, 30}, opts);
  EXPECT_LE(rel_diff(p.linear(x, {}), torch::mm(x, p.weight().t())), 1e-12);
  EXPECT_EQ(p.trainable_count(), 3 * 50);
  s.rank = 21;
  EXPECT_THROW(LowRank(s, {{20, 30}}, Init::torch_default({{20, 30}})), ConfigError);
}

TEST(Lora, StartsAtW0TrainsOnlyAdaptersAndMerges) {
  Spec s;
  s.layer = "fc";
  s.kind = "lora";
  s.rank = 4;
  s.lora_alpha = 8;
  torch::manual_seed(6);
  Lora p(s, {{16, 12}}, Init::torch_default({{16, 12}}));
  p.to(torch::kFloat64);
  EXPECT_EQ(p.trainable_count(), 4 * (16 + 12));
  auto w0 = p.named_buffers()["w0"].clone();
  EXPECT_TRUE(torch::equal(p.weight(), w0));  // B = 0
  {
    torch::NoGradGuard ng;
    p.named_parameters()["b"].normal_();
  }
  auto x = torch::randn({5, 12}, torch::kFloat64);
  auto y = p.linear(x, {});
  EXPECT_LE(rel_diff(y, torch::mm(x, (w0 + 2.0 * torch::mm(p.named_parameters()["b"], p.named_parameters()["a"])).t())),
            1e-12);
  p.merge();
  EXPECT_LE(rel_diff(p.linear(x, {}), y), 1e-12);
  p.unmerge();
  EXPECT_LE(rel_diff(p.named_buffers()["w0"], w0), 1e-15);
  y.sum().backward();
  EXPECT_TRUE(p.named_parameters()["a"].grad().defined());
  EXPECT_FALSE(p.named_buffers()["w0"].requires_grad());
}
