// Parameterizations: how the effective weight W_eff of one layer is computed from raw trainable
// tensors (ARCHITECTURE.md). Base networks only see this interface: they ask for x·W_effᵀ (or a
// convolution with W_eff) and never know whether the weight is dense, a product of factors, a
// low-rank product, an adapter or a point of a random subspace.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "config/config.h"

namespace xpand::param {

// Shape of the effective weight: (out, in) for linear, (out, in/groups, kh, kw) for conv.
struct WeightShape {
  std::vector<int64_t> dims;
  bool is_conv() const { return dims.size() == 4; }
  int64_t out() const { return dims[0]; }
  int64_t fan_in() const;  // in (linear) or in/groups * kh * kw (conv)
  int64_t numel() const;
  std::string str() const;  // "512x784"
};

// Distribution of the dense weight a layer would have: U(-bound, bound) or N(0, std²).
// Every parameterization initialises so that its W_eff matches this distribution's scale.
struct Init {
  enum Kind { Uniform, Normal } kind = Uniform;
  double scale = 0;  // bound (Uniform) or std (Normal)
  static Init torch_default(const WeightShape& s);  // kaiming_uniform(a=√5): bound 1/√fan_in
  static Init normal(double std) { return {Normal, std}; }
};

class Parameterization : public torch::nn::Module {
 public:
  explicit Parameterization(WeightShape shape) : shape_(std::move(shape)) {}
  virtual std::string kind() const = 0;
  const WeightShape& shape() const { return shape_; }

  // The effective weight W_eff, shaped shape().dims (differentiable w.r.t. the raw tensors).
  virtual torch::Tensor weight() = 0;
  // y = x·W_effᵀ + bias for x of shape (..., in); bias may be undefined.
  virtual torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& bias);
  // 2-D convolution with W_eff (NCHW input).
  virtual torch::Tensor conv2d(const torch::Tensor& x, const torch::Tensor& bias, int64_t stride, int64_t padding,
                               int64_t groups);

  // Raw trainable scalars, and scalars of the collapsed dense weight.
  virtual int64_t trainable_count();
  int64_t collapsed_count() const { return shape_.numel(); }
  // Forward+backward FLOPs (multiply-add = 2) for `rows` applications of the layer (batch rows for
  // linear, batch·H_out·W_out for conv); input_grad: whether the gradient w.r.t. the input is needed.
  virtual double flops(int64_t rows, bool input_grad) const;
  // One line on how the forward is evaluated (the planner's choice), for `xpand plan`.
  virtual std::string order() const { return "direct"; }

 protected:
  WeightShape shape_;
};

using ParamPtr = std::shared_ptr<Parameterization>;

// Builds the parameterization of one layer: its dotted name, weight shape and reference init.
using Factory = std::function<ParamPtr(const std::string& layer, const WeightShape&, const Init&)>;

// --- registry ------------------------------------------------------------------------
// Each kind registers here (registry.cpp: one line per kind).
struct KindInfo {
  std::string name;
  std::string doc;
  std::function<ParamPtr(const std::string& layer, const WeightShape&, const Init&, const config::Config&)> make;
};
const std::vector<KindInfo>& kinds();
std::vector<std::string> kind_names();

// The factory for a run: param.kind for every layer.
Factory factory_from_config(const config::Config& cfg);
// A factory of dense layers holding copies of the effective weights of `source` layers (collapse).
Factory factory_collapsed(const std::function<torch::Tensor(const std::string& layer)>& weight_of);

}  // namespace xpand::param
