// The contraction planner: its order is optimal against a brute-force enumeration of every
// parenthesization, it picks weight-first on the expanded nanoGPT MLP shape, and every order gives
// the same values and gradients (float64).
#include <gtest/gtest.h>

#include <functional>
#include <limits>
#include <random>

#include "param/planner.h"

using namespace xpand::param;

namespace {

// Cheapest multiply-add count over all parenthesizations of matrices i..j (independent recursion).
double brute(const std::vector<int64_t>& p, int i, int j) {
  if (i == j) return 0;
  double best = std::numeric_limits<double>::infinity();
  for (int k = i; k < j; ++k)
    best = std::min(best, brute(p, i, k) + brute(p, k + 1, j) + double(p[i]) * double(p[k + 1]) * double(p[j + 1]));
  return best;
}

}  // namespace

TEST(Planner, OptimalAgainstBruteForce) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    int n = 2 + int(rng() % 6);  // x and 1..6 matrices
    std::vector<int64_t> p;
    for (int i = 0; i <= n; ++i) p.push_back(1 + int64_t(rng() % 300));
    auto plan = chain_plan(p);
    EXPECT_DOUBLE_EQ(plan.macs, brute(p, 0, n - 1)) << "trial " << trial;
    EXPECT_LE(plan.macs, plan.act_first_macs);
    EXPECT_LE(plan.macs, plan.weight_first_macs);
  }
}

TEST(Planner, FixedOrdersCostWhatTheyShould) {
  // x: 64×10, A1: 10×100, A2: 100×20
  auto plan = chain_plan({64, 10, 100, 20});
  EXPECT_DOUBLE_EQ(plan.act_first_macs, 64.0 * 10 * 100 + 64.0 * 100 * 20);
  EXPECT_DOUBLE_EQ(plan.weight_first_macs, 10.0 * 100 * 20 + 64.0 * 10 * 20);
  EXPECT_EQ(plan.order, "weight");
  EXPECT_EQ(chain_plan({64, 10, 100, 20}, OrderPolicy::Activation).order, "activation");
  EXPECT_EQ(chain_plan({1, 10, 100, 20}).order, "activation");  // batch 1: through the factors
}

TEST(Planner, ExpandedNanoGptMlpGoesWeightFirst) {
  // c_fc 384→1536 and c_proj 1536→384, each through width 2000, 2048 tokens (ARCHITECTURE.md).
  for (auto dims : {std::vector<int64_t>{2048, 384, 2000, 1536}, std::vector<int64_t>{2048, 1536, 2000, 384}}) {
    auto plan = chain_plan(dims);
    EXPECT_EQ(plan.order, "weight");
    double dense = 2048.0 * 384 * 1536;
    EXPECT_LT(plan.macs / dense, 2.0);
    EXPECT_GT(plan.act_first_macs / dense, 6.0);
  }
}

TEST(Planner, EveryOrderGivesTheSameValuesAndGradients) {
  torch::manual_seed(0);
  auto opts = torch::TensorOptions().dtype(torch::kFloat64);
  std::vector<int64_t> dims = {7, 5, 40, 3, 30, 6};
  auto x = torch::randn({7, 5}, opts);
  std::vector<torch::Tensor> mats;
  for (size_t i = 1; i + 1 < dims.size(); ++i)
    mats.push_back(torch::randn({dims[i], dims[i + 1]}, opts).requires_grad_());
  auto g = torch::randn({7, 6}, opts);
  std::vector<std::vector<torch::Tensor>> grads;
  std::vector<torch::Tensor> outs;
  for (auto policy : {OrderPolicy::Auto, OrderPolicy::Activation, OrderPolicy::Weight}) {
    for (auto& m : mats) m.mutable_grad() = torch::Tensor();
    auto y = chain_eval(x, mats, chain_plan(dims, policy));
    (y * g).sum().backward();
    outs.push_back(y.detach());
    grads.push_back({});
    for (auto& m : mats) grads.back().push_back(m.grad().clone());
  }
  EXPECT_NE(chain_plan(dims).order, "activation");  // the auto order differs from at least one fixed order
  for (size_t k = 1; k < outs.size(); ++k) {
    EXPECT_TRUE(torch::allclose(outs[0], outs[k], 1e-12, 1e-12));
    for (size_t i = 0; i < mats.size(); ++i) EXPECT_TRUE(torch::allclose(grads[0][i], grads[k][i], 1e-12, 1e-12));
  }
}

TEST(Planner, FlopsCountForwardAndTheGradientsThatRun) {
  auto plan = chain_plan({64, 10, 100}, OrderPolicy::Activation);       // one matmul
  EXPECT_DOUBLE_EQ(chain_flops(plan, false), 2.0 * 64 * 10 * 100 * 2);  // forward + weight gradient
  EXPECT_DOUBLE_EQ(chain_flops(plan, true), 2.0 * 64 * 10 * 100 * 3);   // + input gradient
}
