// Dense parameterization (see dense.h).
#include "param/dense.h"

namespace xpand::param {

void init_fill(torch::Tensor& t, const Init& init) {
  torch::NoGradGuard ng;
  if (init.kind == Init::Uniform)
    t.uniform_(-init.scale, init.scale);
  else
    t.normal_(0.0, init.scale);
}

Dense::Dense(WeightShape shape, const Init& init) : Parameterization(std::move(shape)) {
  auto w = torch::empty(shape_.dims, alloc_options());
  init_fill(w, init);
  w_ = register_parameter("weight", w);
}

Dense::Dense(WeightShape shape, const torch::Tensor& weight, const torch::Tensor& bias)
    : Parameterization(std::move(shape)) {
  w_ = register_parameter("weight", weight.detach().clone());
  if (bias.defined()) b_ = register_parameter("bias", bias.detach().clone());
}

}  // namespace xpand::param
