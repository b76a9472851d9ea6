// Dense parameterization (see dense.h).
#include "param/dense.h"

namespace xpand::param {

Dense::Dense(WeightShape shape, const Init& init) : Parameterization(std::move(shape)) {
  auto w = torch::empty(shape_.dims);
  torch::NoGradGuard ng;
  if (init.kind == Init::Uniform)
    w.uniform_(-init.scale, init.scale);
  else
    w.normal_(0.0, init.scale);
  w_ = register_parameter("weight", w);
}

Dense::Dense(WeightShape shape, const torch::Tensor& value) : Parameterization(std::move(shape)) {
  w_ = register_parameter("weight", value.detach().clone());
}

torch::Tensor Dense::linear(const torch::Tensor& x, const torch::Tensor& bias) {
  return torch::nn::functional::linear(x, w_, bias);
}

}  // namespace xpand::param
