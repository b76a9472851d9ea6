// Spectrum and rank-r fits of a weight matrix (analysis.h): float64 SVD for the spectrum and the
// Eckart–Young optimum, alternating gradient descent on B·C from a seeded init for the comparison.
#include "param/analysis.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <string>

#include "core/error.h"

namespace xpand::param {

namespace {

std::string shape_str(const torch::Tensor& w) {
  std::string s;
  for (int64_t i = 0; i < w.dim(); ++i) s += (i ? "x" : "") + std::to_string(w.size(i));
  return s.empty() ? "scalar" : s;
}

// Machine epsilon of the dtype the weight was held in: the precision its small singular values can
// be trusted to. Integers are exact, so they get float64's like the float64 copy we compute on.
double dtype_eps(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat32:
      return FLT_EPSILON;
    case torch::kHalf:
      return 0x1p-10;
    case torch::kBFloat16:
      return 0x1p-7;
    default:
      return DBL_EPSILON;
  }
}

// W as a float64 (m, n) matrix: 2-D as is, conv kernels (out, in, kh, kw) as (out, in·kh·kw).
torch::Tensor as_matrix(const torch::Tensor& w) {
  if (!w.defined()) throw ConfigError("low-rank analysis: undefined weight tensor");
  if (w.dim() != 2 && w.dim() != 4)
    throw ConfigError(
        fmt::format("low-rank analysis: weight of shape {} is neither a matrix (out, in) nor a conv "
                    "kernel (out, in, kh, kw)",
                    shape_str(w)));
  if (w.is_complex()) throw ConfigError(fmt::format("low-rank analysis: complex weight of shape {}", shape_str(w)));
  auto a = w.detach().to(torch::kFloat64).reshape({w.size(0), -1}).contiguous();
  // LAPACK would fail with an opaque "did not converge" (or return garbage) on these.
  if (a.numel() > 0 && !torch::isfinite(a).all().item<bool>())
    throw DataError(fmt::format("low-rank analysis: weight of shape {} holds NaN or infinite values", shape_str(w)));
  return a;
}

std::vector<double> to_vector(const torch::Tensor& t) {
  auto c = t.to(torch::kCPU, torch::kFloat64).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

// ‖W − B·C‖_F after gd_steps alternating block steps (analysis.h). a: (m, n) float64, ‖a‖_F = fro > 0.
double gd_fit_error(const torch::Tensor& a, int64_t r, int64_t gd_steps, uint64_t seed, double fro) {
  const int64_t m = a.size(0), n = a.size(1);
  // Entries of B·C have std s²·√r when B, C have std s: s² = ‖W‖_F / √(r·m·n) gives ‖B·C‖_F ≈ ‖W‖_F,
  // balanced between the factors, so the first steps are neither tiny nor explosive.
  const double s = std::sqrt(fro / std::sqrt(double(r) * double(m) * double(n)));
  auto gen = at::detail::createCPUGenerator(seed);
  auto b = (torch::randn({m, r}, gen, torch::kFloat64) * s).to(a.device());  // (m, r)
  auto c = (torch::randn({r, n}, gen, torch::kFloat64) * s).to(a.device());  // (r, n)
  for (int64_t step = 0; step < gd_steps; ++step) {
    // ∇_B ½‖W − B·C‖² = B·(C·Cᵀ) − W·Cᵀ, never forming the (m, n) product; L_B = λ_max(C·Cᵀ).
    auto cct = c.mm(c.t());  // (r, r)
    double lb = torch::linalg_eigvalsh(cct).max().item<double>();
    if (lb > 0) b = b - (b.mm(cct) - a.mm(c.t())) / lb;
    auto btb = b.t().mm(b);  // (r, r)
    double lc = torch::linalg_eigvalsh(btb).max().item<double>();
    if (lc > 0) c = c - (btb.mm(c) - b.t().mm(a)) / lc;
  }
  return (a - b.mm(c)).norm().item<double>() / fro;
}

}  // namespace

Spectrum spectrum(const torch::Tensor& w) {
  torch::NoGradGuard no_grad;
  auto a = as_matrix(w);  // (m, n)
  const int64_t m = a.size(0), n = a.size(1);
  Spectrum out;
  out.singular_values = torch::linalg_svdvals(a).to(torch::kCPU);  // (min(m,n)), descending
  auto sv = to_vector(out.singular_values);
  if (sv.empty() || sv[0] == 0) return out;  // zero (or empty) matrix: every rank is 0

  const double tol = double(std::max(m, n)) * dtype_eps(w.scalar_type()) * sv[0];
  double sum = 0, sum_sq = 0;
  for (double x : sv) {
    out.numerical_rank += x > tol;
    sum += x;
    sum_sq += x * x;
  }
  double entropy = 0;
  for (double x : sv) {
    double p = x / sum;
    if (p > 0) entropy -= p * std::log(p);  // 0·log 0 = 0
  }
  out.effective_rank = std::exp(entropy);
  out.stable_rank = sum_sq / (sv[0] * sv[0]);
  return out;
}

std::vector<RankFit> rank_fits(const torch::Tensor& w, const std::vector<int64_t>& ranks, int64_t gd_steps,
                               uint64_t seed) {
  torch::NoGradGuard no_grad;
  auto a = as_matrix(w);  // (m, n)
  const int64_t m = a.size(0), n = a.size(1), k = std::min(m, n);
  for (int64_t r : ranks)
    if (r < 1 || r > k)
      throw ConfigError(fmt::format("low-rank fit: rank {} is outside 1..{} for a weight of shape {}{}", r, k,
                                    shape_str(w), w.dim() == 4 ? fmt::format(" (as {}x{})", m, n) : ""));
  if (gd_steps < 0) throw ConfigError(fmt::format("low-rank fit: gd_steps must be >= 0, got {}", gd_steps));

  auto sv = to_vector(torch::linalg_svdvals(a));
  // tail[i] = Σ_{j≥i} σ_j², summed from the smallest so tiny tails are not lost to rounding.
  std::vector<double> tail(sv.size() + 1, 0.0);
  for (size_t i = sv.size(); i-- > 0;) tail[i] = tail[i + 1] + sv[i] * sv[i];
  const double fro = std::sqrt(tail[0]);

  std::vector<RankFit> out;
  for (int64_t r : ranks) {
    RankFit f;
    f.rank = r;
    f.compression = double(m) * double(n) / (double(r) * double(m + n));
    if (fro > 0) {
      f.svd_abs_error = std::sqrt(tail[r]);
      f.svd_error = f.svd_abs_error / fro;
      f.gd_error = gd_fit_error(a, r, gd_steps, seed, fro);
      f.gd_abs_error = f.gd_error * fro;
    }
    out.push_back(f);
  }
  return out;
}

int64_t threshold_rank(const torch::Tensor& w, double threshold) {
  if (!(threshold >= 0) || !std::isfinite(threshold))
    throw ConfigError(fmt::format("threshold rank: the error threshold must be finite and >= 0, got {}", threshold));
  torch::NoGradGuard no_grad;
  auto sv = to_vector(torch::linalg_svdvals(as_matrix(w)));
  std::vector<double> tail(sv.size() + 1, 0.0);  // tail[r] = ‖W − W_r‖_F², summed from the smallest
  for (size_t i = sv.size(); i-- > 0;) tail[i] = tail[i + 1] + sv[i] * sv[i];
  for (size_t r = 0; r < tail.size(); ++r)
    if (std::sqrt(tail[r]) <= threshold) return int64_t(r);
  return int64_t(sv.size());
}

}  // namespace xpand::param
