// Shared parts of the parameterization interface (see param.h).
#include "param/param.h"

#include <cmath>
#include <numeric>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace xpand::param {

int64_t WeightShape::fan_in() const {
  int64_t f = 1;
  for (size_t i = 1; i < dims.size(); ++i) f *= dims[i];
  return f;
}

int64_t WeightShape::numel() const {
  return std::accumulate(dims.begin(), dims.end(), int64_t(1), std::multiplies<int64_t>());
}

std::string WeightShape::str() const { return fmt::format("{}", fmt::join(dims, "x")); }

Init Init::torch_default(const WeightShape& s) { return {Uniform, 1.0 / std::sqrt(double(s.fan_in()))}; }

torch::Tensor Parameterization::linear(const torch::Tensor& x, const torch::Tensor& bias) {
  return torch::nn::functional::linear(x, weight(), bias);
}

torch::Tensor Parameterization::conv2d(const torch::Tensor& x, const torch::Tensor& bias, int64_t stride,
                                       int64_t padding, int64_t groups) {
  return torch::conv2d(x, weight(), bias, stride, padding, /*dilation=*/1, groups);
}

int64_t Parameterization::trainable_count() {
  int64_t n = 0;
  for (const auto& p : parameters())
    if (p.requires_grad()) n += p.numel();
  return n;
}

double Parameterization::flops(int64_t rows, bool input_grad) const {
  // One matmul of rows x fan_in x out forward; backward: weight gradient, plus input gradient.
  double fwd = 2.0 * double(rows) * double(shape_.fan_in()) * double(shape_.out());
  return fwd * (input_grad ? 3.0 : 2.0);
}

}  // namespace xpand::param
