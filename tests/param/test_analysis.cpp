// Low-rank analysis (param/analysis.h) against independent references: matrices built as
// U·diag(s)·Vᵀ with known s, torch::linalg_matrix_rank for the rank rule, closed forms for the
// effective / stable ranks and the Eckart–Young error.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include "core/error.h"
#include "param/analysis.h"

using namespace xpand::param;

namespace {

// Random orthonormal columns: Q of the QR of a seeded (n, k) Gaussian. (n, k) float64
torch::Tensor orthonormal(int64_t n, int64_t k, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  return std::get<0>(torch::linalg_qr(torch::randn({n, k}, gen, torch::kFloat64)));
}

// W = U·diag(s)·Vᵀ: (m, n) float64 with singular values s (s.size() ≤ min(m, n), the rest 0).
torch::Tensor with_spectrum(int64_t m, int64_t n, const std::vector<double>& s, uint64_t seed = 1) {
  const int64_t k = int64_t(s.size());
  auto u = orthonormal(m, k, seed), v = orthonormal(n, k, seed + 1000);
  return u.mm(torch::diag(torch::tensor(s, torch::kFloat64))).mm(v.t());
}

std::vector<double> values(const torch::Tensor& t) {
  auto c = t.to(torch::kFloat64).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

int64_t torch_rank(const torch::Tensor& w) { return torch::linalg_matrix_rank(w).item<int64_t>(); }

void expect_message(const std::function<void()>& f, const std::vector<std::string>& needles) {
  try {
    f();
    ADD_FAILURE() << "no ConfigError";
  } catch (const xpand::ConfigError& e) {
    for (const auto& n : needles)
      EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << "'" << n << "' not in: " << e.what();
  }
}

}  // namespace

TEST(LowRankAnalysis, SingularValuesAndNumericalRank) {
  const std::vector<double> s = {5, 3, 2, 1e-20, 0, 0};
  auto w = with_spectrum(7, 6, s);
  auto sp = spectrum(w);
  ASSERT_EQ(sp.singular_values.dtype(), torch::kFloat64);
  auto sv = values(sp.singular_values);
  ASSERT_EQ(sv.size(), 6u);
  for (size_t i = 0; i < s.size(); ++i) EXPECT_NEAR(sv[i], s[i], 1e-12 * s[0]) << i;
  for (size_t i = 1; i < sv.size(); ++i) EXPECT_GE(sv[i - 1], sv[i]);
  EXPECT_EQ(sp.numerical_rank, 3);
  EXPECT_EQ(sp.numerical_rank, torch_rank(w));
  auto w32 = w.to(torch::kFloat32);
  EXPECT_EQ(spectrum(w32).numerical_rank, 3);
  EXPECT_EQ(spectrum(w32).numerical_rank, torch_rank(w32));
}

TEST(LowRankAnalysis, RankToleranceFollowsTheInputDtype) {
  // σ₄ = 1e-9 is above float64's tol (7·2.2e-16·5 ≈ 8e-15) but below float32's (7·1.2e-7·5 ≈ 4e-6).
  auto w = with_spectrum(7, 6, {5, 3, 2, 1e-9, 0, 0});
  EXPECT_EQ(spectrum(w).numerical_rank, 4);
  EXPECT_EQ(torch_rank(w), 4);
  auto w32 = w.to(torch::kFloat32);
  EXPECT_EQ(spectrum(w32).numerical_rank, 3);
  EXPECT_EQ(torch_rank(w32), 3);
  // The values are still those of the float32 input, computed in float64.
  auto sv32 = values(spectrum(w32).singular_values);
  EXPECT_NEAR(sv32[0], 5, 1e-5);
  EXPECT_EQ(spectrum(w32).singular_values.dtype(), torch::kFloat64);

  // A ladder of small values, several of them on each side of both tolerances.
  auto ladder = with_spectrum(8, 8, {5, 1e-3, 1e-5, 1e-6, 1e-8, 1e-12, 1e-15, 1e-18}, 7);
  EXPECT_EQ(spectrum(ladder).numerical_rank, torch_rank(ladder));
  EXPECT_EQ(spectrum(ladder).numerical_rank, 6);
  EXPECT_EQ(spectrum(ladder.to(torch::kFloat32)).numerical_rank, torch_rank(ladder.to(torch::kFloat32)));
  EXPECT_EQ(spectrum(ladder.to(torch::kFloat32)).numerical_rank, 3);
}

TEST(LowRankAnalysis, EffectiveAndStableRank) {
  auto eye = torch::eye(6, torch::kFloat64);
  EXPECT_NEAR(spectrum(eye).effective_rank, 6, 1e-12);
  EXPECT_NEAR(spectrum(eye).stable_rank, 6, 1e-12);
  EXPECT_EQ(spectrum(eye).numerical_rank, 6);

  auto gen = at::detail::createCPUGenerator(3);
  auto rank1 = torch::randn({5, 1}, gen, torch::kFloat64).mm(torch::randn({1, 4}, gen, torch::kFloat64));
  EXPECT_NEAR(spectrum(rank1).effective_rank, 1, 1e-12);
  EXPECT_NEAR(spectrum(rank1).stable_rank, 1, 1e-12);
  EXPECT_EQ(spectrum(rank1).numerical_rank, 1);

  // s = [2, 1]: p = [2/3, 1/3]; ‖W‖_F² / ‖W‖_2² = (4 + 1) / 4.
  auto w = with_spectrum(3, 2, {2, 1});
  const double h = -(2.0 / 3 * std::log(2.0 / 3) + 1.0 / 3 * std::log(1.0 / 3));
  EXPECT_NEAR(spectrum(w).effective_rank, std::exp(h), 1e-12);
  EXPECT_NEAR(spectrum(w).stable_rank, 1.25, 1e-12);

  auto zero = spectrum(torch::zeros({4, 3}, torch::kFloat64));
  EXPECT_EQ(zero.numerical_rank, 0);
  EXPECT_EQ(zero.effective_rank, 0);
  EXPECT_EQ(zero.stable_rank, 0);
  EXPECT_EQ(zero.singular_values.numel(), 3);
}

TEST(LowRankAnalysis, SvdErrorIsTheEckartYoungTail) {
  const std::vector<double> s = {4, 3, 2, 1, 0.5, 0.1};
  auto w = with_spectrum(9, 6, s);
  auto fits = rank_fits(w, {1, 2, 3, 4, 5, 6}, 200, 0);
  ASSERT_EQ(fits.size(), 6u);
  const double total = std::inner_product(s.begin(), s.end(), s.begin(), 0.0);
  for (int64_t r = 1; r <= 6; ++r) {
    const auto& f = fits[r - 1];
    EXPECT_EQ(f.rank, r);
    double tail = std::inner_product(s.begin() + r, s.end(), s.begin() + r, 0.0);
    EXPECT_NEAR(f.svd_error, std::sqrt(tail / total), 1e-12) << r;
    EXPECT_GE(f.gd_error, f.svd_error - 1e-9) << r;  // nothing beats the truncated SVD
    EXPECT_DOUBLE_EQ(f.compression, 9.0 * 6 / (r * (9.0 + 6))) << r;
  }
  EXPECT_NEAR(fits[5].svd_error, 0, 1e-15);
}

TEST(LowRankAnalysis, GradientDescentReachesTheOptimumWhenWellConditioned) {
  auto w = with_spectrum(6, 5, {3, 2.5, 2, 0.5, 0.2}, 11);
  auto fits = rank_fits(w, {1, 2, 3, 4}, 2000, 5);
  for (const auto& f : fits) {
    EXPECT_GE(f.gd_error, f.svd_error - 1e-9) << f.rank;
    EXPECT_NEAR(f.gd_error, f.svd_error, 1e-3) << f.rank;
  }
  // With no steps the fit is the random init: far from the optimum.
  EXPECT_GT(rank_fits(w, {2}, 0, 5)[0].gd_error, rank_fits(w, {2}, 0, 5)[0].svd_error + 0.1);
}

TEST(LowRankAnalysis, GradientDescentIsSeededLocally) {
  auto w = with_spectrum(8, 6, {3, 2, 1, 0.5, 0.2, 0.1}, 4);
  torch::manual_seed(42);
  auto expected = torch::randn({3});
  torch::manual_seed(42);
  auto a = rank_fits(w, {2, 3}, 10, 9);
  auto drawn = torch::randn({3});
  EXPECT_TRUE(torch::equal(drawn, expected)) << "rank_fits used the global generator";
  auto b = rank_fits(w, {3, 2}, 10, 9);  // order of the list does not matter either
  EXPECT_EQ(a[0].gd_error, b[1].gd_error);
  EXPECT_EQ(a[1].gd_error, b[0].gd_error);
  EXPECT_NE(rank_fits(w, {2}, 10, 10)[0].gd_error, a[0].gd_error);
}

TEST(LowRankAnalysis, BadInputsAreRejected) {
  auto w = torch::randn({5, 4}, torch::kFloat64);
  expect_message([&] { rank_fits(w, {0}); }, {"rank 0", "5x4"});
  expect_message([&] { rank_fits(w, {2, 5}); }, {"rank 5", "5x4", "1..4"});
  expect_message([&] { rank_fits(w, {2}, -1); }, {"gd_steps"});
  expect_message([&] { spectrum(torch::randn({2, 3, 4})); }, {"2x3x4"});
  auto bad = w.clone();
  bad[1][2] = std::nan("");
  EXPECT_THROW(spectrum(bad), xpand::DataError);
  EXPECT_THROW(rank_fits(bad, {1}), xpand::DataError);

  auto zero = rank_fits(torch::zeros({4, 3}), {1, 3});
  EXPECT_EQ(zero[0].svd_error, 0);
  EXPECT_EQ(zero[0].gd_error, 0);
}

TEST(LowRankAnalysis, ConvKernelIsAnalysedAsOutByFanIn) {
  auto gen = at::detail::createCPUGenerator(8);
  auto k = torch::randn({8, 3, 3, 3}, gen, torch::kFloat64);
  auto sp = spectrum(k);
  ASSERT_EQ(sp.singular_values.numel(), 8);
  auto expected = values(torch::linalg_svdvals(k.reshape({8, 27})));
  auto got = values(sp.singular_values);
  for (size_t i = 0; i < 8; ++i) EXPECT_NEAR(got[i], expected[i], 1e-12 * expected[0]) << i;
  EXPECT_EQ(sp.numerical_rank, torch_rank(k.reshape({8, 27})));
  auto fits = rank_fits(k, {2, 8});
  EXPECT_DOUBLE_EQ(fits[0].compression, 8.0 * 27 / (2 * 35.0));
  EXPECT_NEAR(fits[1].svd_error, 0, 1e-14);
  expect_message([&] { rank_fits(k, {9}); }, {"rank 9", "8x3x3x3", "8x27"});
}
