// Low-rank analysis of trained weights (the low-rank notebook's questions): the singular spectrum
// of a weight with its numerical, effective and stable ranks, and how well rank-r products fit it
// (truncated SVD, the optimum, against gradient descent on a two-factor product B·C).
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <vector>

namespace xpand::param {

struct Spectrum {
  torch::Tensor singular_values;  // (min(m,n)) float64, descending
  // Count of σ_i > tol with tol = max(m,n) · eps(input dtype) · σ_max: torch.linalg.matrix_rank's
  // default rule, so a float32 weight is judged at float32 precision even though σ is float64.
  int64_t numerical_rank = 0;
  // The entropy rank exp(entropy of p = σ / Σσ) (Roy & Vetterli 2007; "effective rank" in their
  // paper and in run files); 0 for a zero matrix. Not the low-rank notebook's effective rank, which
  // is threshold_rank() below.
  double effective_rank = 0;
  double stable_rank = 0;  // ‖W‖_F² / ‖W‖_2²; 0 for a zero matrix
};

// W: 2-D (m, n), or a 4-D conv kernel (out, in, kh, kw) viewed as (out, in·kh·kw). Computed in
// float64 from the input's values; the rank tolerance uses the eps of the input's dtype (float64's
// for integer inputs, whose values are exact). Throws ConfigError for another rank or a complex
// dtype, DataError when W holds NaN or ±inf (e.g. a snapshot of a diverged run).
Spectrum spectrum(const torch::Tensor& w);

struct RankFit {
  int64_t rank = 0;
  double svd_error = 0;  // ‖W − W_r‖_F / ‖W‖_F of the truncated SVD (the optimum, Eckart–Young)
  double gd_error = 0;   // same error of the alternating gradient-descent fit W ≈ B·C
  double svd_abs_error = 0, gd_abs_error = 0;  // the same, absolute: ‖W − W_r‖_F (the notebook's table)
  double compression = 0;                      // (m·n) / (r·(m+n)): dense scalars per factored scalar
};

// One fit per r in `ranks` (each 1..min(m,n), else ConfigError naming r and the shape; gd_steps ≥ 0).
// W as in spectrum(). The descent starts from B (m, r), C (r, n) drawn N(0, s²) with s chosen so that
// ‖B·C‖_F ≈ ‖W‖_F, from a local generator seeded with `seed` (the global RNG is untouched, so the
// result depends only on W, r, gd_steps and seed), then takes gd_steps alternating steps: with C
// fixed, B −= ∇_B / L_B (L_B = ‖C·Cᵀ‖_2, the Lipschitz constant of ∇_B ½‖W − B·C‖_F²), then the same
// for C with L_C = ‖Bᵀ·B‖_2. Errors are 0 for a zero matrix.
std::vector<RankFit> rank_fits(const torch::Tensor& w, const std::vector<int64_t>& ranks, int64_t gd_steps = 200,
                               uint64_t seed = 0);

// The low-rank notebook's "effective rank": the smallest r (0..min(m,n)) whose best rank-r
// approximation (truncated SVD) has absolute Frobenius error ‖W − W_r‖_F <= threshold. W as in
// spectrum(); ConfigError for a negative or non-finite threshold.
int64_t threshold_rank(const torch::Tensor& w, double threshold);

}  // namespace xpand::param
