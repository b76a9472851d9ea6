// Expanded convolutions (see expanded_conv.h).
#include "param/expanded_conv.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <numeric>

#include "core/error.h"
#include "param/dense.h"
#include "param/form.h"

namespace xpand::param {

torch::Tensor compose_kernels(const torch::Tensor& w1, const torch::Tensor& w2, int64_t groups) {
  // out[i, o, t] = Σ_c Σ_v w1[c, i, t - v] w2[o, c, v]: a correlation of w1 (as a batch over i,
  // channels c) with the flipped w2, padded by k2 - 1.
  const int64_t k2 = w2.size(2);
  auto flipped = w2.flip({2, 3});
  auto out = torch::conv2d(w1.transpose(0, 1), flipped, {}, 1, k2 - 1, 1, groups);  // (in/g, out, K, K)
  return out.transpose(0, 1).contiguous();
}

ExpandedConv::ExpandedConv(const Spec& spec, WeightShape shape, const Init& init)
    : Parameterization(std::move(shape)),
      groups_(shape_.groups),
      factor_bias_(spec.factor_bias),
      nonlinear_(spec.nonlinear),
      policy_(order_policy(spec.order)) {
  XPAND_CHECK(shape_.is_conv() && shape_.dims[2] == shape_.dims[3], "ExpandedConv needs a square conv kernel");
  const int64_t g = groups_, out = shape_.dims[0], in = shape_.dims[1] * g, k = shape_.dims[2];
  auto width = [&](double per_group) { return g * std::max<int64_t>(1, std::llround(per_group)); };
  const int64_t r_in = spec.expand_input ? width(spec.factor * double(in / g)) : in;
  const int64_t r_out = width(spec.factor * double(out / g));
  if (!spec.expand_input && spec.conv == "kernels")
    spec.fail("expand_input", "applies to conv: cl and ck; conv: kernels uses one inner width");
  if (spec.conv == "cl") {  // ExpandNets' CL: 1×1 m→rm, k×k rm→rn, 1×1 rn→n
    k_ = {1, k, 1};
    c_ = {in, r_in, r_out, out};
    stride_stage_ = 1;
  } else {
    if (spec.conv == "ck") {  // ExpandNets' CK: (k-1)/2 3×3 convs m→rm→rn→…→rn→n
      if (k < 5 || k % 2 == 0)
        spec.fail("conv", fmt::format("ck replaces an odd kernel of at least 5 by 3x3 convs; this layer's is {}x{} "
                                      "(a 3x3 layer has no CK expansion; use cl)",
                                      k, k));
      k_.assign((k - 1) / 2, 3);
      c_ = {in, r_in};
      while (c_.size() < k_.size()) c_.push_back(r_out);
      c_.push_back(out);
    } else {
      k_ = spec.kernels;
      if (k_.empty()) spec.fail("kernels", "conv: kernels needs a list of kernel sizes");
      int64_t eff = std::accumulate(k_.begin(), k_.end(), int64_t(0)) - int64_t(k_.size()) + 1;
      if (eff != k)
        spec.fail("kernels", fmt::format("kernels [{}] compose to {}x{}, this layer's kernel is {}x{}",
                                         fmt::join(k_, ", "), eff, eff, k, k));
      int64_t h = width(spec.factor * double(std::max(in, out) / g));
      c_ = {in};
      for (size_t i = 1; i < k_.size(); ++i) c_.push_back(h);
      c_.push_back(out);
    }
    stride_stage_ = 0;
    for (size_t i = 0; i < k_.size(); ++i)
      if (k_[i] > 1) stride_stage_ = int(i);  // the last spatial conv; later 1×1 convs commute
  }
  if (nonlinear_ && g != 1) spec.fail("nonlinear", "applies to ungrouped convs");
  // Init (default): N(0, s²) per conv with s² = (σ² / Π fan_in of the later convs)^(1/d) — the same
  // scale argument as the linear kind: the composed kernel's entries get the dense variance σ².
  // torch-default: every conv as nn.Conv2d's default (weight and bias U(±1/√fan_in), fan_in of that conv).
  const bool torch_default = spec.init_for({"default", "torch-default"}) == "torch-default";
  const int64_t d = int64_t(k_.size());
  double var = init.kind == Init::Uniform ? init.scale * init.scale / 3.0 : init.scale * init.scale;
  double inner = 1;
  for (int64_t i = 1; i < d; ++i) inner *= double(c_[i] / g);  // channel sums of the composition
  double s = std::sqrt(std::pow(var / inner, 1.0 / double(d)));
  for (int64_t i = 0; i < d; ++i) {
    auto w = torch::empty({c_[i + 1], c_[i] / g, k_[i], k_[i]}, alloc_options());
    const Init conv_init = Init::torch_default(WeightShape{{c_[i + 1], c_[i] / g, k_[i], k_[i]}, g});
    init_fill(w, torch_default ? conv_init : Init::normal(s));
    w_.push_back(register_parameter(fmt::format("w{}", i + 1), w));
    if (factor_bias_) {
      auto b = torch::zeros({c_[i + 1]}, alloc_options());
      if (torch_default) init_fill(b, conv_init);
      b_.push_back(register_parameter(fmt::format("b{}", i + 1), b));
    }
  }
}

torch::Tensor ExpandedConv::weight() {
  XPAND_CHECK(!nonlinear_, "a nonlinear expanded conv is not one linear map: it has no kernel to collapse to");
  torch::Tensor k = w_[0];
  for (size_t i = 1; i < w_.size(); ++i) k = compose_kernels(k, w_[i], groups_);
  return k;
}

torch::Tensor ExpandedConv::bias() {
  XPAND_CHECK(!nonlinear_, "a nonlinear expanded conv is not one linear map: it has no bias to collapse to");
  if (!factor_bias_) return {};
  torch::Tensor b = b_[0];  // (c_1)
  for (size_t i = 1; i < w_.size(); ++i) {
    // b_i + W_i applied to a constant map b: Σ over each group's inputs of b_c · Σ_spatial W_i[o, c].
    auto sums = w_[i].sum({2, 3});                                                              // (c_{i+1}, c_i/g)
    auto bg = b.view({groups_, -1});                                                            // (g, c_i/g)
    auto prop = (sums.view({groups_, -1, sums.size(1)}) * bg.unsqueeze(1)).sum(2).reshape(-1);  // (c_{i+1})
    b = b_[i] + prop;
  }
  return b;
}

bool ExpandedConv::weight_first(int64_t rows) const {
  if (policy_ != OrderPolicy::Auto) return policy_ == OrderPolicy::Weight;
  Plan p = plan(rows, true);
  return p.order == "weight";
}

torch::Tensor ExpandedConv::conv2d(const torch::Tensor& x, const torch::Tensor& bias, int64_t stride, int64_t padding,
                                   int64_t groups) {
  XPAND_CHECK(groups == groups_, "conv layer built for {} groups called with {}", groups_, groups);
  const bool expanded = expanded_form();  // conv by conv, never through the composed kernel (param/form.h)
  if (cut_active() && !expanded) return Parameterization::conv2d(x, bias, stride, padding, groups);
  int64_t h_out = (x.size(2) + 2 * padding - shape_.dims[2]) / stride + 1;
  int64_t w_out = (x.size(3) + 2 * padding - shape_.dims[3]) / stride + 1;
  if (!nonlinear_ && !expanded && weight_first(x.size(0) * h_out * w_out))
    return torch::conv2d(x, weight(), add_bias(bias, this->bias()), stride, padding, 1, groups_);
  torch::Tensor z = x;
  for (size_t i = 0; i < w_.size(); ++i) {
    if (nonlinear_ && i > 0) z = torch::relu(z);
    z = torch::conv2d(z, w_[i], factor_bias_ ? b_[i] : torch::Tensor(), int(i) == stride_stage_ ? stride : 1,
                      i == 0 ? padding : 0, 1, groups_);
  }
  return bias.defined() ? z + bias.view({1, -1, 1, 1}) : z;
}

Parameterization::Plan ExpandedConv::plan(int64_t rows, bool input_grad) const {
  // rows = batch · output positions. Intermediate maps are counted at the output resolution.
  const double n = double(rows), g = double(groups_);
  Plan p;
  double act = 0, mem = 0;
  for (size_t i = 0; i < k_.size(); ++i) {
    double macs = n * double(c_[i + 1]) * double(c_[i]) / g * double(k_[i] * k_[i]);
    act += 2.0 * macs * ((i == 0 && !input_grad) ? 2.0 : 3.0);
    if (i + 1 < k_.size()) mem += n * double(c_[i + 1]) * (nonlinear_ ? 2.0 : 1.0);  // ReLU keeps its input too
  }
  // Weight-first: compose the kernels (independent of the batch), then one conv.
  double compose = 0;
  int64_t ksz = k_[0];
  for (size_t i = 1; i < k_.size(); ++i) {
    ksz += k_[i] - 1;
    compose += double(c_[i + 1]) * double(c_[0]) / g * double(c_[i]) / g * double(ksz * ksz) * double(k_[i] * k_[i]);
  }
  const int64_t k = shape_.dims[2];
  double direct = 2.0 * n * double(shape_.dims[0]) * double(shape_.dims[1]) * double(k * k) * (input_grad ? 3.0 : 2.0);
  double wgt = 2.0 * compose * 3.0 + direct;
  p.act_first_flops = act;
  bool weight = !nonlinear_ && (policy_ == OrderPolicy::Weight || (policy_ == OrderPolicy::Auto && wgt < act));
  p.order = weight ? "weight" : "activation";
  p.flops = weight ? wgt : act;
  p.cut_flops = nonlinear_ ? act : wgt;
  p.memory_bytes = (weight ? double(shape_.numel()) : mem) * double(w_[0].element_size());
  return p;
}

}  // namespace xpand::param
