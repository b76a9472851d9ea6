// Base networks: exact parameter counts of the seed presets, forward passes against
// hand-written references, GPT causality, the dense init distribution, and collapse (the
// collapsed network reproduces the trained one, batch-norm statistics and all).
#include <gtest/gtest.h>

#include <cmath>

#include "config/config.h"
#include "core/error.h"
#include "data/dataset.h"
#include "model/network.h"
#include "train/collapse_check.h"

using xpand::config::Config;
using namespace xpand;

namespace {

data::Dataset image_meta() {
  data::Dataset ds;
  ds.name = "images";
  ds.sample_shape = {1, 28, 28};
  ds.num_classes = 10;
  return ds;
}

data::Dataset text_meta(int64_t vocab, int64_t block) {
  data::Dataset ds;
  ds.name = "chars";
  ds.task = data::Task::LanguageModel;
  ds.sample_shape = {block};
  ds.num_classes = vocab;
  ds.block_size = block;
  return ds;
}

model::NetworkPtr build(const std::string& yaml, const data::Dataset& ds, const std::vector<std::string>& o = {}) {
  auto cfg = Config::load_string(yaml, "model.yaml", o);
  return model::network_build(cfg, ds, param::factory_from_config(cfg));
}

}  // namespace

TEST(Models, SeedPresetParameterCounts) {
  auto ds = image_meta();
  // 784-200-200-10 with biases: 784·200+200 + 200·200+200 + 200·10+10.
  auto omega = model::network_report(*build("model: {widths: [784, 200, 200, 10]}", ds), 1);
  EXPECT_EQ(omega.trainable, 199210);
  EXPECT_EQ(omega.collapsed, 199210);
  auto deep = model::network_report(*build("model: {widths: [784, 1024, 1024, 512, 256, 10], bias: false}", ds), 1);
  EXPECT_EQ(deep.trainable, 2509312);
  // FLOPs of a dense MLP step: 2·B·Σ in·out forward, twice that backward, minus the input gradient of layer 1.
  auto r = model::network_report(*build("model: {widths: [784, 512, 10], bias: false}", ds), 128);
  EXPECT_DOUBLE_EQ(r.flops, 2.0 * 128 * (784 * 512 * 2 + 512 * 10 * 3));
}

TEST(Models, MlpWithResidualMatchesAHandWrittenForward) {
  torch::manual_seed(0);
  auto net = build("model: {widths: [784, 16, 16, 10], residual: [1], activation: tanh}", image_meta());
  net->to(torch::kFloat64);
  auto x = torch::randn({5, 1, 28, 28}, torch::kFloat64);
  auto p = net->named_parameters();
  auto h = torch::tanh(x.flatten(1).mm(p["fc1.weight"].t()) + p["fc1_bias"]);
  h = torch::tanh(h + h.mm(p["fc2.weight"].t()) + p["fc2_bias"]);
  auto want = h.mm(p["fc3.weight"].t()) + p["fc3_bias"];
  EXPECT_TRUE(torch::allclose(net->forward(x), want, 1e-12, 1e-12));
}

TEST(Models, DenseInitMatchesTorchDefault) {
  torch::manual_seed(1);
  auto net = build("model: {widths: [784, 1024, 10]}", image_meta());
  auto w = net->named_parameters()["fc1.weight"];
  double bound = 1.0 / std::sqrt(784.0);
  EXPECT_LE(w.abs().max().item<double>(), bound);
  // U(-b, b) has std b/√3; with 802,816 samples the estimate is within 1%.
  EXPECT_NEAR(w.std().item<double>(), bound / std::sqrt(3.0), 0.01 * bound / std::sqrt(3.0));
  EXPECT_NEAR(w.mean().item<double>(), 0.0, 0.01 * bound);
}

TEST(Models, MisfitWidthsAreConfigErrors) {
  EXPECT_THROW(build("model: {widths: [100, 10]}", image_meta()), ConfigError);
  EXPECT_THROW(build("model: {widths: [784, 9]}", image_meta()), ConfigError);
  EXPECT_THROW(build("model: {widths: [784, 16, 32, 10], residual: [1]}", image_meta()), ConfigError);
  EXPECT_THROW(build("model: {kind: cnn, kernel_size: 4}", image_meta()), ConfigError);
  EXPECT_THROW(build("model: {kind: cnn, channels: [4, 4, 4, 4, 4, 4]}", image_meta()), ConfigError);
  EXPECT_THROW(build("model: {kind: gpt, n_head: 5, n_embd: 16}\ndata: {name: chars}", text_meta(20, 8)), ConfigError);
}

TEST(Models, GptIsCausal) {
  torch::manual_seed(2);
  auto net =
      build("model: {kind: gpt, n_layer: 2, n_head: 2, n_embd: 16, dropout: 0}\ndata: {name: chars}", text_meta(11, 8));
  net->to(torch::kFloat64);
  net->eval();
  auto idx = torch::randint(0, 11, {3, 8}, torch::kInt64);
  auto changed = idx.clone();
  changed.index_put_({torch::indexing::Slice(), 5}, (idx.select(1, 5) + 1) % 11);
  auto a = net->forward(idx), b = net->forward(changed);
  EXPECT_EQ(a.sizes().vec(), (std::vector<int64_t>{3, 8, 11}));
  using torch::indexing::Slice;
  auto past = (a.index({Slice(), Slice(0, 5)}) - b.index({Slice(), Slice(0, 5)})).abs().max().item<double>();
  EXPECT_LT(past, 1e-12);  // the past is untouched (up to summation order in the batched matmuls)
  EXPECT_FALSE(torch::allclose(a.index({Slice(), Slice(5)}), b.index({Slice(), Slice(5)})));  // the future sees it
  // Output head tied to the token embedding, and the nanoGPT layer names.
  auto slots = net->slots();
  ASSERT_EQ(slots.size(), 8u);
  EXPECT_EQ(slots[0].name, "h0.attn.c_attn");
  EXPECT_EQ(slots[3].name, "h0.mlp.c_proj");
  EXPECT_EQ(slots[3].param->shape().dims, (std::vector<int64_t>{16, 64}));
}

// Every network and parameterization, in float64: the collapsed network against the network in its
// expanded form (train/collapse_check.h: factor by factor, batch norm with running statistics), two
// different computations that agree to float64 rounding. Dense networks (and subspace layers, dense
// at forward) are their own expanded form: identical outputs.
TEST(Models, CollapseReproducesEveryNetworkInFloat64) {
  struct Case {
    std::string yaml;
    data::Dataset ds;
    torch::Tensor x;
    bool dense;  // no layer with factors: both sides the same matrices
  };
  torch::manual_seed(3);
  const auto img = torch::randn({4, 1, 28, 28});
  const auto mlp = std::string("model: {widths: [784, 32, 32, 10], residual: [1]}\n");
  const auto cnn = std::string("model: {kind: cnn, channels: [4, 8], fc: [16], kernel_size: 5}\n");
  std::vector<Case> cases = {
      {mlp, image_meta(), img, true},
      {cnn, image_meta(), img, true},
      {"model: {kind: gpt, n_layer: 1, n_head: 2, n_embd: 8}\ndata: {name: chars}", text_meta(7, 6),
       torch::randint(0, 7, {4, 6}, torch::kInt64), true},
      {mlp + "param: {kind: expanded, factor: 4, depth: 3, order: weight}", image_meta(), img, false},
      {mlp + "param: {kind: expanded, factor: 2, depth: 4, residual: every, batch_norm: true, factor_bias: true, "
             "learnable_residual: true}",
       image_meta(), img, false},
      {"model: {widths: [784, 32, 32, 10], layer_bias: own}\nparam: {kind: expanded, factor: 1, depth: 4, width_of: "
       "out, residual: tail, first_bias: true}",
       image_meta(), img, false},
      {cnn + "param: {kind: expanded, factor: 2, depth: 3, factor_bias: true}", image_meta(), img, false},
      {cnn + "param: {kind: expanded, factor: 2, conv: ck}", image_meta(), img, false},
      {mlp + "param: {kind: lowrank, rank: 5}", image_meta(), img, false},
      {mlp + "param: {kind: lora, rank: 3}", image_meta(), img, false},
      {mlp + "param: {kind: subspace, omega_dim: 20}", image_meta(), img, true},
      {"model: {kind: gpt, n_layer: 1, n_head: 2, n_embd: 8}\ndata: {name: chars}\nparam: {kind: expanded, factor: 2, "
       "depth: 3}",
       text_meta(7, 6), torch::randint(0, 7, {4, 6}, torch::kInt64), false}};
  for (auto& c : cases) {
    auto net = build(c.yaml, c.ds);
    net->to(torch::kFloat64);
    auto x = c.x.is_floating_point() ? c.x.to(torch::kFloat64) : c.x;
    {
      torch::NoGradGuard ng;  // off the initialisation (LoRA's B starts at 0, skips' G too)
      for (auto& t : net->parameters()) t.add_(torch::randn_like(t).mul_(0.05));
    }
    net->train();
    net->forward(x);  // moves batch-norm running statistics away from their initial values
    net->eval();
    auto collapsed = model::network_collapse(Config::load_string(c.yaml, "m.yaml"), c.ds, *net);
    EXPECT_FALSE(collapsed->is_training());
    const double err = train::collapse_error(*net, *collapsed, x);
    if (c.dense) {
      EXPECT_EQ(err, 0.0) << c.yaml;
    } else {
      EXPECT_LE(err, 1e-12) << c.yaml;
      EXPECT_GT(err, 0.0) << c.yaml << ": exactly 0 would mean both sides computed the same thing";
    }
    EXPECT_EQ(model::network_report(*collapsed, 1).collapsed, model::network_report(*net, 1).collapsed);
  }
}

// `xpand plan` builds under param::ShapeOnlyScope: every parameterization's tensors on the meta
// device. Its report (counts, order, FLOPs, memory, cut) equals the one of the network built with
// real weights, for every kind and option that changes a layer's tensors; and no weight of the
// shape-only build holds memory.
TEST(Models, ShapeOnlyBuildReportsWhatTheRealBuildDoes) {
  const std::vector<std::pair<std::string, data::Dataset>> cases = {
      {"model: {widths: [784, 64, 32, 10]}", image_meta()},
      {"model: {widths: [784, 64, 32, 10]}\nparam: {kind: expanded, factor: 3, depth: 3}", image_meta()},
      {"model: {widths: [784, 64, 64, 10]}\nparam: {kind: expanded, factor: 2, depth: 4, residual: every, "
       "residual_every: 1, batch_norm: true, learnable_residual: true}",
       image_meta()},
      {"model: {widths: [784, 64, 32, 10]}\nparam: {kind: lowrank, rank: 8}", image_meta()},
      {"model: {widths: [784, 64, 32, 10]}\nparam: {kind: lora, rank: 4}", image_meta()},
      {"model: {widths: [784, 64, 32, 10]}\nparam: {kind: subspace, omega_dim: 50}", image_meta()},
      {"model: {kind: cnn, channels: [4, 8], fc: [16], kernel_size: 5}\nparam: {kind: expanded, factor: 2, depth: 3}",
       image_meta()},
      {"model: {kind: gpt, n_layer: 2, n_head: 2, n_embd: 16}\ndata: {name: chars}\nparam: {kind: expanded, factor: 2}",
       text_meta(11, 8)}};
  for (const auto& [yaml, ds] : cases) {
    auto real_net = build(yaml, ds);
    for (auto& s : real_net->slots())  // the report counts has_bias(); it must say what bias() does
      EXPECT_EQ(s.param->has_bias(), s.param->bias().defined()) << yaml << " " << s.name;
    auto real = model::network_report(*real_net, 32);
    model::NetworkPtr meta;
    {
      param::ShapeOnlyScope scope;
      meta = build(yaml, ds);
    }
    EXPECT_FALSE(param::shape_only());  // the scope ended
    auto shapes = model::network_report(*meta, 32);
    ASSERT_EQ(shapes.layers.size(), real.layers.size()) << yaml;
    for (size_t i = 0; i < real.layers.size(); ++i) {
      const auto &a = real.layers[i], &b = shapes.layers[i];
      EXPECT_EQ(a.name, b.name) << yaml;
      EXPECT_EQ(a.kind, b.kind) << yaml << " " << a.name;
      EXPECT_EQ(a.order, b.order) << yaml << " " << a.name;
      EXPECT_EQ(a.trainable, b.trainable) << yaml << " " << a.name;
      EXPECT_EQ(a.collapsed, b.collapsed) << yaml << " " << a.name;
      EXPECT_EQ(a.flops, b.flops) << yaml << " " << a.name;
      EXPECT_EQ(a.act_first_flops, b.act_first_flops) << yaml << " " << a.name;
      EXPECT_EQ(a.memory_bytes, b.memory_bytes) << yaml << " " << a.name;
      EXPECT_EQ(a.cut, b.cut) << yaml << " " << a.name;
    }
    EXPECT_EQ(shapes.trainable, real.trainable) << yaml;
    EXPECT_GT(shapes.trainable, 0) << yaml;
    for (auto& s : meta->slots()) {
      for (auto& t : s.param->parameters())
        if (t.numel() > 0) EXPECT_TRUE(t.is_meta()) << yaml << " " << s.name;
      for (auto& t : s.param->buffers())
        if (t.numel() > 0) EXPECT_TRUE(t.is_meta()) << yaml << " " << s.name << " (buffer)";
    }
  }
}
