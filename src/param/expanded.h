// Expanded linear layers: W (out×in) trained as a product of `depth` factors W_d⋯W_1 with inner
// width h = round(factor · max(in, out)), optionally with identity skips (every k factors or end to
// end), a learnable skip y = G x + F(x), batch norm between factors and a bias in every factor.
// Collapse is exact: W_eff (and, with batch norm or factor biases, a folded bias).
//
// Initialisation: every factor ~ N(0, s²) with s² = (σ² / h^(d-1))^(1/d), where σ² is the variance
// of the dense layer's init (b²/3 for U(-b, b), std² for N(0, std²)). Then each entry of the product
// W_d⋯W_1 has variance Π s² · h^(d-1) = σ²: the collapsed layer starts at the dense layer's scale.
// depth 1 is the dense init itself. G starts at 0; skips add the identity on top (that is their point).
#pragma once
#include <map>

#include "param/param.h"
#include "param/planner.h"
#include "param/spec.h"

namespace xpand::param {

class Expanded : public Parameterization {
 public:
  Expanded(const Spec& spec, WeightShape shape, const Init& init);
  std::string kind() const override { return "expanded"; }

  torch::Tensor weight() override;
  torch::Tensor bias() override;
  bool has_bias() override { return !(collapsed_ || plain_chain()); }
  torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& bias) override;
  Plan plan(int64_t rows, bool input_grad) const override;
  bool cut_at_weight() override;

  int64_t inner_width() const { return h_; }
  const std::vector<torch::Tensor>& factors() const { return w_; }

  // --- the rotate schedule (one expanded layer at a time) ---
  // Whether the layer can be collapsed and re-expanded exactly (plain chains whose inner width
  // covers in or out); `why` says what prevents it.
  bool can_rotate(std::string* why) const;
  bool is_collapsed() const { return collapsed_; }
  // Replaces the factors by one dense matrix equal to their product (factors released).
  void collapse_in_place();
  // Re-expands the dense matrix into factors whose product equals it: random orthonormal
  // matrices Q_i (h×in, seeded) give W_1 = Q_1, W_i = Q_i Q_{i-1}ᵀ, W_d = W Q_{d-1}ᵀ.
  void expand_in_place(uint64_t seed);

 private:
  // A run of consecutive factors [first, last] with an identity skip when it is square.
  struct Block {
    int first, last;
    bool skip;
  };
  bool plain_chain() const { return !batch_norm_ && !factor_bias_; }
  // Activation-first evaluation of the whole layer map (without G), with batch norm in training
  // (batch statistics) or in evaluation (running statistics) semantics.
  torch::Tensor apply_chain(const torch::Tensor& x, bool bn_training);
  // W_eff of a plain chain in weight-first order (skips as I + product), without G.
  torch::Tensor product();
  const ChainPlan& chain_plan_for(int64_t rows) const;

  int64_t in_, out_, h_, depth_;
  bool batch_norm_, factor_bias_, learnable_;
  OrderPolicy policy_;
  std::vector<int64_t> dims_;  // in, h, ..., h, out (depth + 1 entries)
  std::vector<Block> blocks_;
  std::vector<torch::Tensor> w_;                                      // W_1 .. W_d: (dims_[i+1] × dims_[i])
  std::vector<torch::Tensor> fb_;                                     // factor biases (dims_[i+1]) when factor_bias
  std::vector<torch::Tensor> bn_gamma_, bn_beta_, bn_mean_, bn_var_;  // (h) after factors 1..d-1
  torch::Tensor g_;                                                   // (out × in) learnable skip
  torch::Tensor dense_;  // (out × in) while collapsed by the rotate schedule
  bool collapsed_ = false;
  mutable std::map<int64_t, ChainPlan> plans_;  // per batch rows
  static constexpr double kBnEps = 1e-5, kBnMomentum = 0.1;
};

// The registry entry of kind expanded (linear: Expanded; conv: ExpandedConv).
KindInfo expanded_kind();

}  // namespace xpand::param
