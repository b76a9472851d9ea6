// The dense parameterization: W_eff is one trainable matrix (or conv kernel). The reference
// point of every other kind, and what collapse produces.
#pragma once
#include "param/param.h"

namespace xpand::param {

class Dense : public Parameterization {
 public:
  Dense(WeightShape shape, const Init& init);
  // A dense layer holding a copy of a given effective weight (collapse).
  Dense(WeightShape shape, const torch::Tensor& value);
  std::string kind() const override { return "dense"; }
  torch::Tensor weight() override { return w_; }
  torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& bias) override;

 private:
  torch::Tensor w_;  // shape().dims
};

}  // namespace xpand::param
