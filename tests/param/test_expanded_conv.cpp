// Expanded convolutions collapse exactly: the chain (activation-first) equals one conv with the
// composed kernel and folded bias, over kernel lists, strides, groups and the CL / CK strategies;
// the composed kernel matches a brute-force 1-D reference.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>

#include "core/error.h"
#include "param/expanded_conv.h"

using namespace xpand;
using namespace xpand::param;

namespace {

Spec conv_spec(const std::string& strategy, double rate, std::vector<int64_t> kernels, bool bias,
               const std::string& order) {
  Spec s;
  s.layer = "conv";
  s.kind = "expanded";
  s.conv = strategy;
  s.factor = rate;
  s.kernels = std::move(kernels);
  s.factor_bias = bias;
  s.order = order;
  return s;
}

// max |chain - collapsed| / max |collapsed| for one configuration.
double conv_collapse_error(const std::string& strategy, double rate, const std::vector<int64_t>& kernels, int64_t k,
                           int64_t stride, bool depthwise, bool bias, torch::ScalarType dtype) {
  const int64_t in = depthwise ? 4 : 3, out = 4, groups = depthwise ? 4 : 1;
  WeightShape shape{{out, in / groups, k, k}, groups};
  torch::manual_seed(int(k * 100 + stride * 10 + depthwise));
  ExpandedConv chain(conv_spec(strategy, rate, kernels, bias, "activation"), shape, Init::torch_default(shape));
  chain.to(dtype);
  {
    torch::NoGradGuard ng;
    for (auto& t : chain.parameters()) t.add_(torch::randn_like(t).mul_(0.2));
  }
  auto opts = torch::TensorOptions().dtype(dtype);
  auto x = torch::randn({2, in, 11, 11}, opts);
  auto layer_bias = torch::randn({out}, opts);
  torch::NoGradGuard ng;
  auto y = chain.conv2d(x, layer_bias, stride, k / 2, groups);
  auto b = chain.bias();
  auto yc = torch::conv2d(x, chain.weight(), b.defined() ? b + layer_bias : layer_bias, stride, k / 2, 1, groups);
  EXPECT_EQ(y.sizes(), yc.sizes());
  return (y - yc).abs().max().item<double>() / yc.abs().max().item<double>();
}

}  // namespace

TEST(ExpandedConv, ComposedKernelMatchesBruteForce) {
  // K[o, i, t, u] = Σ_c Σ_{p+r=t, q+s=u} w1[c, i, p, q] · w2[o, c, r, s], by explicit loops.
  torch::manual_seed(9);
  auto w1 = torch::randn({3, 2, 3, 3}, torch::kFloat64), w2 = torch::randn({4, 3, 2, 2}, torch::kFloat64);
  auto want = torch::zeros({4, 2, 4, 4}, torch::kFloat64);
  auto a = w1.accessor<double, 4>(), b = w2.accessor<double, 4>();
  auto k = want.accessor<double, 4>();
  for (int o = 0; o < 4; ++o)
    for (int i = 0; i < 2; ++i)
      for (int c = 0; c < 3; ++c)
        for (int p = 0; p < 3; ++p)
          for (int q = 0; q < 3; ++q)
            for (int r = 0; r < 2; ++r)
              for (int t = 0; t < 2; ++t) k[o][i][p + r][q + t] += a[c][i][p][q] * b[o][c][r][t];
  EXPECT_TRUE(torch::allclose(compose_kernels(w1, w2, 1), want, 1e-13, 1e-13));
}

TEST(ExpandedConv, CollapseGridIsExact) {
  struct Case {
    std::string strategy;
    std::vector<int64_t> kernels;
    int64_t k;
  };
  std::vector<Case> cases = {{"kernels", {1}, 1},
                             {"kernels", {5}, 5},
                             {"kernels", {3, 3}, 5},
                             {"kernels", {5, 3, 1}, 7},
                             {"kernels", {1, 3, 5}, 7},
                             {"kernels", std::vector<int64_t>(8, 3), 17},
                             {"cl", {}, 1},
                             {"cl", {}, 3},
                             {"cl", {}, 5},
                             {"ck", {}, 5},
                             {"ck", {}, 7}};
  int checked = 0;
  for (const auto& c : cases)
    for (double rate : {1.0, 4.0})
      for (int64_t stride : {1, 2})
        for (bool depthwise : {false, true})
          for (bool bias : {false, true})
            for (auto dtype : {torch::kFloat64, torch::kFloat32}) {
              double err = conv_collapse_error(c.strategy, rate, c.kernels, c.k, stride, depthwise, bias, dtype);
              EXPECT_LE(err, dtype == torch::kFloat64 ? 1e-10 : 1e-5)
                  << c.strategy << " [" << fmt::format("{}", fmt::join(c.kernels, ",")) << "] k " << c.k << " r "
                  << rate << " stride " << stride << " depthwise " << depthwise << " bias " << bias;
              ++checked;
            }
  EXPECT_EQ(checked, 11 * 2 * 2 * 2 * 2 * 2);
}

TEST(ExpandedConv, StrategiesHaveTheirShapesAndOrdersAgree) {
  WeightShape shape{{8, 4, 5, 5}};
  ExpandedConv cl(conv_spec("cl", 4, {}, false, "auto"), shape, Init::torch_default(shape));
  EXPECT_EQ(cl.kernels(), (std::vector<int64_t>{1, 5, 1}));
  EXPECT_EQ(cl.channels(), (std::vector<int64_t>{4, 16, 32, 8}));
  ExpandedConv ck(conv_spec("ck", 2, {}, false, "auto"), shape, Init::torch_default(shape));
  EXPECT_EQ(ck.kernels(), (std::vector<int64_t>{3, 3}));
  EXPECT_EQ(ck.channels(), (std::vector<int64_t>{4, 8, 8}));  // m -> r·m -> n
  // ExpandNets' widths (exp_cifar/models/cifar_tiny_7.py): CK of a 7×7 16→32 layer at r = 4 is
  // 16→64→128→32; the first layer keeps its 3 input channels (expand_input: false): 3→3→32→8.
  WeightShape seven{{32, 16, 7, 7}};
  ExpandedConv ck7(conv_spec("ck", 4, {}, false, "auto"), seven, Init::torch_default(seven));
  EXPECT_EQ(ck7.kernels(), (std::vector<int64_t>{3, 3, 3}));
  EXPECT_EQ(ck7.channels(), (std::vector<int64_t>{16, 64, 128, 32}));
  Spec keep = conv_spec("ck", 4, {}, false, "auto");
  keep.expand_input = false;
  WeightShape first{{8, 3, 7, 7}};
  EXPECT_EQ(ExpandedConv(keep, first, Init::torch_default(first)).channels(), (std::vector<int64_t>{3, 3, 32, 8}));
  keep.conv = "cl";
  EXPECT_EQ(ExpandedConv(keep, first, Init::torch_default(first)).channels(), (std::vector<int64_t>{3, 3, 32, 8}));
  // CK exists for kernels of at least 5 (a 3×3 conv has no chain of smaller 3×3 convs).
  WeightShape three{{8, 4, 3, 3}};
  EXPECT_THROW(ExpandedConv(conv_spec("ck", 2, {}, false, "auto"), three, Init::torch_default(three)), ConfigError);
  EXPECT_THROW(ExpandedConv(conv_spec("kernels", 2, {3, 5}, false, "auto"), shape, Init::torch_default(shape)),
               ConfigError);
  EXPECT_THROW(
      ExpandedConv(conv_spec("ck", 2, {}, false, "auto"), WeightShape{{8, 4, 4, 4}}, Init::torch_default(shape)),
      ConfigError);
  // Weight-first and activation-first give the same values and gradients.
  std::vector<torch::Tensor> grads;
  for (std::string order : {"activation", "weight"}) {
    torch::manual_seed(8);
    ExpandedConv p(conv_spec("cl", 2, {}, true, order), shape, Init::torch_default(shape));
    p.to(torch::kFloat64);
    auto x = torch::randn({2, 4, 7, 7}, torch::kFloat64);
    p.conv2d(x, {}, 2, 2, 1).pow(2).sum().backward();
    for (auto& t : p.parameters()) grads.push_back(t.grad().clone());
  }
  size_t n = grads.size() / 2;
  for (size_t i = 0; i < n; ++i) EXPECT_TRUE(torch::allclose(grads[i], grads[n + i], 1e-11, 1e-12)) << i;
}
