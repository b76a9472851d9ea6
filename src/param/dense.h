// The dense parameterization: W_eff is one trainable matrix (or conv kernel). The reference
// point of every other kind, and what collapse produces (then with the folded bias, if any).
#pragma once
#include "param/param.h"

namespace xpand::param {

class Dense : public Parameterization {
 public:
  Dense(WeightShape shape, const Init& init);
  // A dense layer holding copies of a given effective weight and bias (collapse); bias may be undefined.
  Dense(WeightShape shape, const torch::Tensor& weight, const torch::Tensor& bias);
  std::string kind() const override { return "dense"; }
  torch::Tensor weight() override { return w_; }
  torch::Tensor bias() override { return b_; }

 private:
  torch::Tensor w_;  // shape().dims
  torch::Tensor b_;  // (out) folded bias of a collapsed layer, or undefined
};

// Fills `t` in place from the init distribution (no autograd).
void init_fill(torch::Tensor& t, const Init& init);

// The registry entries of kind dense (one trainable matrix) and kind subspace (dense layers whose
// parameters move together in theta0 + P omega: the optimizer side lives in train/subspace.h).
KindInfo dense_kind();
KindInfo subspace_kind();

}  // namespace xpand::param
