// Expanded linear layers: W (out×in) trained as a product of `depth` factors W_d⋯W_1 with inner
// width h = round(factor · max(in, out)) (width_of: max) or h = ⌊factor · out⌋ (width_of: out, as
// overparam's EPLinear), optionally with identity skips (every k factors, end to end, one skip
// around all the factors after the first: residual tail, or overparam's residual_intervals), a learnable skip
// y = G x + F(x), batch norm between factors or after every factor (batch_norm_at: every, overparam's
// resblock order: x_v = BN(W x_{v-1} + b) + skips), and a bias in every factor (factor_bias) or in the
// first only (first_bias). Variables x_0 = x, x_v = factor v applied to x_{v-1} (+ batch norm) + the
// variables skipping to v; the layer's output is x_depth.
// Collapse is exact: W_eff (and, with batch norm or factor biases, a folded bias).
// width_of: in-out gives inner widths round(factor · in) for the first and round(factor · out) for the
// others: ExpandNets' FC expansion in → r·in → r·out → out (exp_cifar/models/cifar_tiny_*.py).
// nonlinear: ReLU after every factor but the last, a plain chain only (ExpandNets' "Nonlinear"
// models, the comparison that shows the linear expansion's gain is not from extra depth): not a
// linear map, so the layer has no weight() and evaluates as it trains (collapsible() is false).
//
// The Expansive Networks seed's net (expansive.py, Net(expansive=True)) is fc1 with this layer:
// y = x1 + E_n⋯E_1 x1 with x1 = W_1 x + b_1, i.e. depth n+1, width_of out, factor 1, residual tail,
// first_bias, init torch-default; it collapses to one 128×784 weight and bias (docs/PARAMETERIZATIONS.md).
//
// Initialisation (init: default, "variance-matched"): every factor ~ N(0, s²) with
// s² = (σ² / h^(d-1))^(1/d), where σ² is the variance of the dense layer's init (b²/3 for U(-b, b),
// std² for N(0, std²)). Then each entry of the product W_d⋯W_1 has variance Π s² · h^(d-1) = σ²: the
// collapsed layer starts at the dense layer's scale. depth 1 is the dense init itself. Factor biases
// start at 0. G starts at 0; skips add the identity on top (that is their point).
// init: torch-default: every factor (and its bias) as PyTorch's nn.Linear default, U(-1/√fan_in,
// 1/√fan_in) with the factor's own fan_in, as the seeds that stack nn.Linear layers do.
// init: overparam: overparam's reset_parameter: factor weights N(0, gain²/fan_in), gain 1 for every
// factor but the last, √(2/(1+a²)) with a = negative_slope for the last; biases U(-1/√fan_in, 1/√fan_in).
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
  bool has_bias() override { return nonlinear_ ? factor_bias_ : !(collapsed_ || plain_chain()); }
  bool collapsible() const override { return !nonlinear_; }
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
  bool plain_chain() const { return !batch_norm_ && !factor_bias_ && !first_bias_ && !nonlinear_; }
  // Σ of the inner widths (the activations one row keeps between factors).
  double inner_width_sum() const {
    double n = 0;
    for (size_t i = 1; i + 1 < dims_.size(); ++i) n += double(dims_[i]);
    return n;
  }
  bool has_skips() const;
  // Whether factor i (0-based) is followed by batch norm.
  bool bn_after(int64_t i) const { return batch_norm_ && (bn_every_ || i + 1 < depth_); }
  // The skips into variable v (1..depth) from variables a < v, for `residual`.
  void build_skips(const Spec& spec);
  // The bias of factor i (undefined when it has none).
  torch::Tensor factor_bias(int i) const;
  // Activation-first evaluation of the whole layer map (without G), with batch norm in training
  // (batch statistics) or in evaluation (running statistics) semantics.
  torch::Tensor apply_chain(const torch::Tensor& x, bool bn_training);
  // W_eff of a plain chain in weight-first order (skips as I + product), without G.
  torch::Tensor product();
  const ChainPlan& chain_plan_for(int64_t rows) const;

  int64_t in_, out_, h_, depth_;
  bool batch_norm_, bn_every_, factor_bias_, first_bias_, learnable_, nonlinear_;
  OrderPolicy policy_;
  std::vector<int64_t> dims_;            // in, h, ..., h, out (depth + 1 entries)
  std::vector<std::vector<int>> skips_;  // skips_[v]: the variables added to x_v (v = 0..depth)
  std::vector<torch::Tensor> w_;         // W_1 .. W_d: (dims_[i+1] × dims_[i])
  std::vector<torch::Tensor> fb_;        // factor biases (dims_[i+1]): every factor's (factor_bias) or the first's
  std::vector<torch::Tensor> bn_gamma_, bn_beta_, bn_mean_, bn_var_;  // per factor with bn_after (its width)
  torch::Tensor g_;                                                   // (out × in) learnable skip
  torch::Tensor dense_;  // (out × in) while collapsed by the rotate schedule
  bool collapsed_ = false;
  mutable std::map<int64_t, ChainPlan> plans_;  // per batch rows
  static constexpr double kBnEps = 1e-5, kBnMomentum = 0.1;
};

// The registry entry of kind expanded (linear: Expanded; conv: ExpandedConv).
KindInfo expanded_kind();

}  // namespace xpand::param
