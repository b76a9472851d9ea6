// Shared parts of the parameterization interface (see param.h).
#include "param/param.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <numeric>

#include "param/form.h"

namespace xpand::param {

int64_t WeightShape::fan_in() const {
  int64_t f = 1;
  for (size_t i = 1; i < dims.size(); ++i) f *= dims[i];
  return f;
}

namespace {
thread_local bool t_shape_only = false;
thread_local bool t_expanded_form = false;
}  // namespace

ShapeOnlyScope::ShapeOnlyScope() : previous_(t_shape_only) { t_shape_only = true; }
ShapeOnlyScope::~ShapeOnlyScope() { t_shape_only = previous_; }
bool shape_only() { return t_shape_only; }

ExpandedFormScope::ExpandedFormScope() : previous_(t_expanded_form) { t_expanded_form = true; }
ExpandedFormScope::~ExpandedFormScope() { t_expanded_form = previous_; }
bool expanded_form() { return t_expanded_form; }

torch::TensorOptions alloc_options() {
  return t_shape_only ? torch::TensorOptions().device(torch::kMeta) : torch::TensorOptions();
}

int64_t WeightShape::numel() const {
  return std::accumulate(dims.begin(), dims.end(), int64_t(1), std::multiplies<int64_t>());
}

std::string WeightShape::str() const { return fmt::format("{}", fmt::join(dims, "x")); }

Init Init::torch_default(const WeightShape& s) { return {Uniform, 1.0 / std::sqrt(double(s.fan_in()))}; }

torch::Tensor Parameterization::add_bias(const torch::Tensor& a, const torch::Tensor& b) {
  if (!a.defined()) return b;
  if (!b.defined()) return a;
  return a + b;
}

torch::Tensor Parameterization::linear(const torch::Tensor& x, const torch::Tensor& bias) {
  return torch::nn::functional::linear(x, batch_weight(), add_bias(bias, batch_bias()));
}

torch::Tensor Parameterization::conv2d(const torch::Tensor& x, const torch::Tensor& bias, int64_t stride,
                                       int64_t padding, int64_t groups) {
  return torch::conv2d(x, batch_weight(), add_bias(bias, batch_bias()), stride, padding, /*dilation=*/1, groups);
}

int64_t Parameterization::trainable_count() {
  int64_t n = 0;
  for (const auto& p : parameters())
    if (p.requires_grad()) n += p.numel();
  return n;
}

Parameterization::Plan Parameterization::plan(int64_t rows, bool input_grad) const {
  // One matmul of rows x fan_in x out forward; backward: weight gradient, plus input gradient.
  double fwd = 2.0 * double(rows) * double(shape_.fan_in()) * double(shape_.out());
  Plan p;
  p.flops = p.act_first_flops = p.cut_flops = fwd * (input_grad ? 3.0 : 2.0);
  return p;
}

int64_t Parameterization::cut_numel() {
  int64_t eff = shape_.numel() + (has_bias() ? shape_.out() : 0);
  return cut_at_weight() ? eff : trainable_count();
}

void Parameterization::cut_begin() {
  if (!cut_at_weight()) return;
  // The leaves persist from step to step (the reducer's hooks stay on their accumulators); each
  // step they take W_eff's current values.
  auto leaf_of = [](torch::Tensor& leaf, const torch::Tensor& src) {
    if (!leaf.defined() || leaf.sizes() != src.sizes() || leaf.options().dtype() != src.options().dtype() ||
        leaf.device() != src.device())
      leaf = torch::empty_like(src).requires_grad_(true);
    torch::NoGradGuard ng;
    leaf.copy_(src.detach());
    leaf.mutable_grad() = torch::Tensor();
  };
  cut_w_src_ = weight();
  leaf_of(cut_w_, cut_w_src_);
  cut_b_src_ = bias();
  if (cut_b_src_.defined())
    leaf_of(cut_b_, cut_b_src_);
  else
    cut_b_ = torch::Tensor();
  cut_on_ = true;
}

std::vector<torch::Tensor> Parameterization::cut_tensors() {
  if (cut_active()) {
    std::vector<torch::Tensor> t = {cut_w_};
    if (cut_b_.defined()) t.push_back(cut_b_);
    return t;
  }
  std::vector<torch::Tensor> raw;
  for (const auto& p : parameters())
    if (p.requires_grad()) raw.push_back(p);
  return raw;
}

void Parameterization::cut_finish() {
  if (!cut_active()) return;
  std::vector<torch::Tensor> roots = {cut_w_src_}, grads = {cut_w_.grad()};
  if (cut_b_.defined()) roots.push_back(cut_b_src_), grads.push_back(cut_b_.grad());
  bool any = false;
  for (auto& g : grads) any |= g.defined();
  if (any) {
    for (size_t i = 0; i < grads.size(); ++i)
      if (!grads[i].defined()) grads[i] = torch::zeros_like(roots[i]);
    torch::autograd::backward(roots, grads);
  }
  cut_w_src_ = cut_b_src_ = torch::Tensor();
  cut_w_.mutable_grad() = torch::Tensor();
  if (cut_b_.defined()) cut_b_.mutable_grad() = torch::Tensor();
  cut_on_ = false;
}

}  // namespace xpand::param
