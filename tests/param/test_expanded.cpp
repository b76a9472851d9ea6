// Expanded layers: exact collapse over the grid of the issue (float64 ≤ 1e-10, float32 ≤ 1e-5
// relative), identical gradients in every contraction order and through the data-parallel cut, the
// init scale and exact re-expansion for the rotate schedule. Low-rank and LoRA layers: test_lowrank.cpp.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>

#include "config/config.h"
#include "core/error.h"
#include "data/dataset.h"
#include "model/network.h"
#include "param/dense.h"
#include "param/expanded.h"
#include "param/form.h"
#include "param/lowrank.h"

using namespace xpand;
using namespace xpand::param;

namespace {

Spec expanded_spec(double factor, int64_t depth, const std::string& residual, int64_t every, bool bn, bool fbias,
                   bool learnable = false, const std::string& order = "auto") {
  Spec s;
  s.layer = "test";
  s.kind = "expanded";
  s.factor = factor;
  s.depth = depth;
  s.residual = residual;
  s.residual_every = every;
  s.batch_norm = bn;
  s.factor_bias = fbias;
  s.learnable_residual = learnable;
  s.order = order;
  return s;
}

double rel_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>() / std::max(1e-300, b.abs().max().item<double>());
}

// Expanded output vs the collapsed dense map W_eff x + b_eff + layer bias, in eval mode.
// With `plain` (a chain without skips, biases or batch norm) also the expanded form against a
// hand-written factor product, into *plain.
double collapse_error(Expanded& p, torch::ScalarType dtype, int64_t in, double* plain = nullptr) {
  p.to(dtype);
  auto x = torch::randn({9, in}, torch::TensorOptions().dtype(dtype));
  auto layer_bias = torch::randn({p.shape().out()}, torch::TensorOptions().dtype(dtype));
  {
    // Perturb every trainable tensor and run training-mode forwards so running statistics move.
    torch::NoGradGuard ng;
    for (auto& t : p.parameters()) t.add_(torch::randn_like(t).mul_(0.3));
    p.train();
    for (int i = 0; i < 3; ++i) p.linear(torch::randn({16, in}, x.options()) * 2 + 1, layer_bias);
  }
  p.eval();
  torch::NoGradGuard ng;
  torch::Tensor y;
  {
    // Forced to the expanded form: factor by factor, never through W_eff. Left to the planner, the
    // plain chains of CollapseGridIsExact that it evaluates weight-first would compare weight() with
    // itself (34 of the 56 plain float64 cases).
    ExpandedFormScope form;
    y = p.linear(x, layer_bias);
  }
  if (plain) {
    // And by hand from the layer's own factors, x·W_1ᵀ·W_2ᵀ⋯: the same arithmetic as the expanded
    // form, so this checks that the form is the plain factor chain; the comparison with weight()
    // below is the independent one.
    auto z = x;
    for (const auto& w : p.factors()) z = torch::mm(z, w.t());
    *plain = rel_diff(z + layer_bias, y);
  }
  auto b = p.bias();
  auto yc = torch::nn::functional::linear(x, p.weight(), b.defined() ? layer_bias + b : layer_bias);
  return rel_diff(yc, y);
}

}  // namespace

// The skip structures and batch-norm placement added for the sources (residual tail: the Expansive
// Networks seed; residual intervals and batch norm after every factor: overparam's EPLinear): the
// activation-first chain (apply_chain) against the collapsed W_eff x + b_eff, two different
// computations (the collapse is the matrix recurrence, or f(I) - f(0) with batch norm or biases).
TEST(Expanded, SourceStructuresCollapseExactly) {
  struct Case {
    std::string residual;
    std::vector<int64_t> intervals;
    int64_t depth;
  };
  const std::vector<Case> cases = {{"tail", {}, 2},        {"tail", {}, 5},           {"intervals", {2}, 4},
                                   {"intervals", {-1}, 3}, {"intervals", {1, -1}, 4}, {"intervals", {2, -1}, 4},
                                   {"intervals", {3}, 5}};
  int checked = 0;
  for (const auto& c : cases)
    for (std::string bn_at : {"none", "between", "every"})
      for (std::string bias : {"none", "every", "first"}) {
        auto spec = expanded_spec(1.0, c.depth, c.residual, 1, bn_at != "none", bias == "every", false, "activation");
        spec.width_of = "out";
        spec.residual_intervals = c.intervals;
        spec.batch_norm_at = bn_at == "every" ? "every" : "between";
        spec.first_bias = bias == "first";
        const std::string name = fmt::format("residual {} [{}] depth {} bn {} bias {}", c.residual,
                                             fmt::join(c.intervals, ","), c.depth, bn_at, bias);
        torch::manual_seed(31 + checked);
        Expanded p(spec, WeightShape{{6, 6}}, Init::torch_default({{6, 6}}));
        EXPECT_LE(collapse_error(p, torch::kFloat64, 6), 1e-10) << name;
        ++checked;
      }
  EXPECT_EQ(checked, 63);
}

// An interval whose skip joins two widths is refused (overparam's graph would fail to add them).
TEST(Expanded, IntervalsBetweenDifferentWidthsAreRefused) {
  auto spec = expanded_spec(2.0, 3, "intervals", 1, false, false);
  spec.width_of = "out";
  spec.residual_intervals = {1};
  EXPECT_THROW(Expanded(spec, WeightShape{{6, 6}}, Init::torch_default({{6, 6}})), ConfigError);
  spec.residual_intervals = {-1};  // x0 (6) to x3 (6): square
  EXPECT_NO_THROW(Expanded(spec, WeightShape{{6, 6}}, Init::torch_default({{6, 6}})));
  spec.residual_intervals = {0};
  EXPECT_THROW(Expanded(spec, WeightShape{{6, 6}}, Init::torch_default({{6, 6}})), ConfigError);
}

// Every case compares the expanded form (factor by factor, forced in collapse_error) with
// x·weight()ᵀ + bias(), and the plain chains also with a product written out here.
TEST(Expanded, CollapseGridIsExact) {
  int checked = 0, refused = 0, plain_checked = 0, multi = 0, nonzero = 0;
  for (int64_t depth : {1, 2, 4, 8, 16})
    for (double factor : {0.5, 1.0, 4.0})
      for (std::string residual : {"none", "every1", "every2", "end"})
        for (bool bn : {false, true})
          for (bool fbias : {false, true}) {
            const int64_t in = 6, out = 6;
            std::string mode = residual.rfind("every", 0) == 0 ? "every" : residual;
            int64_t every = mode == "every" ? residual.back() - '0' : 1;
            auto spec = expanded_spec(factor, depth, mode, every, bn, fbias);
            std::string name =
                fmt::format("depth {} factor {} residual {} bn {} bias {}", depth, factor, residual, bn, fbias);
            for (auto dtype : {torch::kFloat64, torch::kFloat32}) {
              torch::manual_seed(depth * 1000 + int(factor * 10));
              std::unique_ptr<Expanded> p;
              try {
                p = std::make_unique<Expanded>(spec, WeightShape{{out, in}}, Init::torch_default({{out, in}}));
              } catch (const ConfigError& e) {
                // Refused only when "every" leaves no square block (in = out here, so "end" always works).
                int64_t h = std::max<int64_t>(1, std::llround(factor * 6));
                bool square = false;
                for (int64_t first = 0; first < depth; first += every) {
                  int64_t last = std::min(depth, first + every) - 1;
                  int64_t din = first == 0 ? in : h, dout = last == depth - 1 ? out : h;
                  square |= din == dout;
                }
                EXPECT_EQ(mode, "every") << name << ": " << e.what();
                EXPECT_FALSE(square) << name << ": " << e.what();
                ++refused;
                break;
              }
              const bool plain = residual == "none" && !bn && !fbias;
              double by_hand = 0;
              double err = collapse_error(*p, dtype, in, plain ? &by_hand : nullptr);
              const double tol = dtype == torch::kFloat64 ? 1e-10 : 1e-5;
              EXPECT_LE(err, tol) << name << " dtype " << dtype;
              EXPECT_LE(by_hand, tol) << name << " dtype " << dtype << ": expanded form vs the hand-written chain";
              if (depth > 1) {  // two computations: rounding tells them apart (exactly 0: the same arithmetic)
                ++multi;
                nonzero += err > 0;
              }
              plain_checked += plain;
              ++checked;
            }
          }
  EXPECT_GT(checked, 400);
  EXPECT_GT(refused, 0);
  EXPECT_EQ(plain_checked, 5 * 3 * 2);  // depths x factors x dtypes
  EXPECT_GT(nonzero, multi * 9 / 10) << nonzero << " of " << multi << " multi-factor cases differ by rounding";
}

TEST(Expanded, NonSquareLayersAndLearnableSkipCollapse) {
  for (bool learnable : {false, true})
    for (std::string residual : {"none", "every"})
      for (bool bn : {false, true}) {
        torch::manual_seed(1);
        auto spec = expanded_spec(2.0, 4, residual, 1, bn, true, learnable);
        Expanded p(spec, {{7, 5}}, Init::torch_default({{7, 5}}));
        EXPECT_LE(collapse_error(p, torch::kFloat64, 5), 1e-10)
            << residual << " learnable " << learnable << " bn " << bn;
      }
  EXPECT_THROW(Expanded(expanded_spec(2.0, 3, "end", 1, false, false), {{7, 5}}, Init::torch_default({{7, 5}})),
               ConfigError);
}

TEST(Expanded, EveryOrderAndTheCutGiveTheSameGradients) {
  auto opts = torch::TensorOptions().dtype(torch::kFloat64);
  for (std::string residual : {"none", "every"}) {
    std::vector<std::vector<torch::Tensor>> grads;
    std::vector<torch::Tensor> xgrads;
    for (std::string order : {"activation", "weight", "auto", "cut"}) {
      torch::manual_seed(5);
      Expanded p(expanded_spec(3.0, 3, residual, 1, false, false, true, order == "cut" ? "auto" : order), {{6, 8}},
                 Init::torch_default({{6, 8}}));
      p.to(torch::kFloat64);
      {
        torch::NoGradGuard ng;  // make the learnable skip G non-zero
        for (auto& t : p.parameters()) t.add_(torch::randn_like(t).mul_(0.1));
      }
      auto x = torch::randn({11, 8}, opts).requires_grad_();
      auto bias = torch::randn({6}, opts);
      if (order == "cut") {
        ASSERT_TRUE(p.cut_at_weight());  // 6x8 = 48 elements < the factors
        EXPECT_EQ(p.cut_numel(), 48);
        p.cut_begin();
      }
      auto y = p.linear(x, bias);
      (y.pow(2) * torch::arange(6, opts)).sum().backward();
      if (order == "cut") {
        for (auto& t : p.cut_tensors()) EXPECT_TRUE(t.grad().defined());
        p.cut_finish();
      }
      grads.push_back({});
      for (auto& t : p.parameters()) grads.back().push_back(t.grad().clone());
      xgrads.push_back(x.grad().clone());
    }
    for (size_t k = 1; k < grads.size(); ++k) {
      EXPECT_TRUE(torch::allclose(xgrads[0], xgrads[k], 1e-12, 1e-12)) << residual << " order " << k;
      for (size_t i = 0; i < grads[0].size(); ++i)
        EXPECT_TRUE(torch::allclose(grads[0][i], grads[k][i], 1e-11, 1e-12))
            << residual << " order " << k << " tensor " << i;
    }
  }
}

TEST(Expanded, InitMatchesTheDenseScale) {
  torch::manual_seed(2);
  const int64_t in = 256, out = 128;
  const double bound = 1.0 / std::sqrt(double(in)), target = bound / std::sqrt(3.0);
  for (int64_t depth : {2, 3, 5}) {
    Expanded p(expanded_spec(4.0, depth, "none", 1, false, false), {{out, in}}, Init::torch_default({{out, in}}));
    double sd = p.weight().std().item<double>();
    EXPECT_NEAR(sd, target, 0.1 * target) << "depth " << depth;
    EXPECT_NEAR(p.weight().mean().item<double>(), 0.0, 0.05 * target);
  }
  Expanded one(expanded_spec(4.0, 1, "none", 1, false, false), {{out, in}}, Init::torch_default({{out, in}}));
  EXPECT_LE(one.weight().abs().max().item<double>(), bound);  // depth 1 is the dense init itself
}

TEST(Expanded, RotateReexpansionKeepsTheFunction) {
  for (auto [in, out, factor] : {std::tuple<int64_t, int64_t, double>{8, 5, 2.0}, {5, 8, 2.0}, {12, 4, 0.5}}) {
    torch::manual_seed(3);
    Expanded p(expanded_spec(factor, 3, "none", 1, false, false), {{out, in}}, Init::torch_default({{out, in}}));
    p.to(torch::kFloat64);
    std::string why;
    ASSERT_TRUE(p.can_rotate(&why)) << why;
    auto x = torch::randn({4, in}, torch::kFloat64);
    auto before = p.linear(x, {}).detach();
    p.collapse_in_place();
    EXPECT_EQ(p.trainable_count(), in * out);  // factors released
    EXPECT_LE(rel_diff(p.linear(x, {}), before), 1e-12);
    p.expand_in_place(99);
    EXPECT_EQ(p.trainable_count(), (in + out) * p.inner_width() + p.inner_width() * p.inner_width());
    EXPECT_LE(rel_diff(p.linear(x, {}), before), 1e-10);
  }
  Expanded narrow(expanded_spec(0.25, 3, "none", 1, false, false), {{8, 8}}, Init::torch_default({{8, 8}}));
  std::string why;
  EXPECT_FALSE(narrow.can_rotate(&why));
  EXPECT_NE(why.find("inner width"), std::string::npos);
}

// ExpandNets' nonlinear counterparts (nonlinear: true): ReLU between the factors, so the layer is not
// one linear map. Checked against the chain written out here with F::linear and relu (an
// independent computation), and: no weight(), never collapsed or cut, and network_collapse's
// factory hands the same module over instead of a dense layer.
TEST(Expanded, NonlinearChainIsNotCollapsed) {
  torch::manual_seed(5);
  Spec s = expanded_spec(2, 3, "none", 1, false, true);
  s.width_of = "in-out";
  s.nonlinear = true;
  auto p = std::make_shared<Expanded>(s, WeightShape{{3, 4}}, Init::torch_default(WeightShape{{3, 4}}));
  p->to(torch::kFloat64);
  const auto& w = p->factors();
  ASSERT_EQ(w.size(), 3u);
  EXPECT_EQ(w[0].sizes(), (std::vector<int64_t>{8, 4}));  // in-out: 4 -> 2·4 -> 2·3 -> 3
  EXPECT_EQ(w[1].sizes(), (std::vector<int64_t>{6, 8}));
  auto named = p->named_parameters();
  auto x = torch::randn({5, 4}, torch::kFloat64);
  namespace F = torch::nn::functional;
  auto want = F::linear(torch::relu(F::linear(torch::relu(F::linear(x, w[0], named["b1"])), w[1], named["b2"])), w[2],
                        named["b3"]);
  EXPECT_LE(rel_diff(p->linear(x, {}), want), 1e-14);
  // Without the ReLUs the chain differs (the check above would catch a linear chain).
  auto linear_chain = F::linear(F::linear(F::linear(x, w[0], named["b1"]), w[1], named["b2"]), w[2], named["b3"]);
  EXPECT_GT(rel_diff(linear_chain, want), 1e-3);
  EXPECT_FALSE(p->collapsible());
  EXPECT_FALSE(p->cut_at_weight());
  EXPECT_TRUE(p->has_bias());
  EXPECT_THROW(p->weight(), Error);
  std::string why;
  EXPECT_FALSE(p->can_rotate(&why));
  auto same = factory_collapsed([&](const std::string&) -> ParamPtr { return p; })("fc1", p->shape(), Init{});
  EXPECT_EQ(same.get(), p.get());
  Spec with_bn = expanded_spec(2, 3, "none", 1, true, true);
  with_bn.nonlinear = true;
  EXPECT_THROW(Expanded(with_bn, WeightShape{{3, 4}}, Init::torch_default(WeightShape{{3, 4}})), ConfigError);
}
