// Expanded linear layers (see expanded.h).
#include "param/expanded.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include <cmath>
#include <limits>

#include "core/error.h"
#include "param/dense.h"
#include "param/expanded_conv.h"

namespace xpand::param {

namespace F = torch::nn::functional;

Expanded::Expanded(const Spec& spec, WeightShape shape, const Init& init)
    : Parameterization(std::move(shape)),
      in_(shape_.dims[1]),
      out_(shape_.dims[0]),
      h_(std::max<int64_t>(1, std::llround(spec.factor * double(std::max(in_, out_))))),
      depth_(spec.depth),
      batch_norm_(spec.batch_norm),
      factor_bias_(spec.factor_bias),
      learnable_(spec.learnable_residual),
      policy_(order_policy(spec.order)) {
  XPAND_CHECK(!shape_.is_conv(), "Expanded is the linear kind; conv layers use ExpandedConv");
  dims_.push_back(in_);
  for (int64_t i = 1; i < depth_; ++i) dims_.push_back(h_);
  dims_.push_back(out_);

  // Blocks of factors and their identity skips.
  if (spec.residual == "end") {
    if (in_ != out_) spec.fail("residual", fmt::format("an end-to-end skip needs in == out, got {}x{}", out_, in_));
    blocks_.push_back({0, int(depth_) - 1, true});
  } else if (spec.residual == "every") {
    bool any = false;
    for (int64_t first = 0; first < depth_; first += spec.residual_every) {
      int last = int(std::min(depth_, first + spec.residual_every)) - 1;
      bool skip = dims_[first] == dims_[last + 1];
      any |= skip;
      blocks_.push_back({int(first), last, skip});
    }
    if (!any)
      spec.fail("residual_every", fmt::format("no block of {} factors is square (widths {}), so no skip applies",
                                              spec.residual_every, fmt::join(dims_, "-")));
  } else {
    blocks_.push_back({0, int(depth_) - 1, false});
  }

  // Factors: the product's entries get the dense init's variance (see the header).
  double var = init.kind == Init::Uniform ? init.scale * init.scale / 3.0 : init.scale * init.scale;
  double s = std::sqrt(std::pow(var / std::pow(double(h_), double(depth_ - 1)), 1.0 / double(depth_)));
  for (int64_t i = 0; i < depth_; ++i) {
    auto w = torch::empty({dims_[i + 1], dims_[i]}, alloc_options());
    init_fill(w, depth_ == 1 ? init : Init::normal(s));
    w_.push_back(register_parameter(fmt::format("w{}", i + 1), w));
    if (factor_bias_)
      fb_.push_back(register_parameter(fmt::format("b{}", i + 1), torch::zeros({dims_[i + 1]}, alloc_options())));
    if (batch_norm_ && i + 1 < depth_) {
      bn_gamma_.push_back(register_parameter(fmt::format("bn{}_weight", i + 1), torch::ones({h_}, alloc_options())));
      bn_beta_.push_back(register_parameter(fmt::format("bn{}_bias", i + 1), torch::zeros({h_}, alloc_options())));
      bn_mean_.push_back(register_buffer(fmt::format("bn{}_running_mean", i + 1), torch::zeros({h_}, alloc_options())));
      bn_var_.push_back(register_buffer(fmt::format("bn{}_running_var", i + 1), torch::ones({h_}, alloc_options())));
    }
  }
  if (learnable_) g_ = register_parameter("g", torch::zeros({out_, in_}, alloc_options()));
  std::string why;
  if (can_rotate(&why)) dense_ = register_parameter("dense", torch::empty({0}, alloc_options()));
}

// --- evaluation ---------------------------------------------------------------------

torch::Tensor Expanded::apply_chain(const torch::Tensor& x, bool bn_training) {
  torch::Tensor z = x;
  for (const auto& b : blocks_) {
    torch::Tensor start = z;
    for (int i = b.first; i <= b.last; ++i) {
      z = F::linear(z, w_[i], factor_bias_ ? fb_[i] : torch::Tensor());
      if (batch_norm_ && i + 1 < depth_) {
        auto sizes = z.sizes().vec();
        z = torch::batch_norm(z.reshape({-1, h_}), bn_gamma_[i], bn_beta_[i], bn_mean_[i], bn_var_[i], bn_training,
                              kBnMomentum, kBnEps, /*cudnn_enabled=*/false)
                .reshape(sizes);
      }
    }
    if (b.skip) z = z + start;
  }
  return z;
}

torch::Tensor Expanded::product() {
  torch::Tensor m;
  for (const auto& b : blocks_) {
    torch::Tensor p = w_[b.first];
    for (int i = b.first + 1; i <= b.last; ++i) p = torch::mm(w_[i], p);  // W_last ⋯ W_first
    if (b.skip) p = p + torch::eye(p.size(0), p.options());
    m = m.defined() ? torch::mm(p, m) : p;
  }
  return m;
}

torch::Tensor Expanded::weight() {
  if (collapsed_) return dense_;
  torch::Tensor w;
  if (plain_chain()) {
    w = product();
  } else {
    // An affine map f(x) = W x + b (batch norm with running statistics): W = f(I) - f(0).
    auto eye = torch::eye(in_, w_[0].options());
    w = (apply_chain(eye, false) - apply_chain(torch::zeros({1, in_}, w_[0].options()), false)).t();
  }
  return learnable_ ? w + g_ : w;
}

torch::Tensor Expanded::bias() {
  if (collapsed_ || plain_chain()) return {};
  return apply_chain(torch::zeros({1, in_}, w_[0].options()), false).squeeze(0);
}

const ChainPlan& Expanded::chain_plan_for(int64_t rows) const {
  auto it = plans_.find(rows);
  if (it != plans_.end()) return it->second;
  std::vector<int64_t> dims = {rows};
  dims.insert(dims.end(), dims_.begin(), dims_.end());
  ChainPlan p = chain_plan(dims, policy_);
  bool pure = blocks_.size() == 1 && !blocks_[0].skip;
  if (!pure) {
    // With skips only the two whole orders exist: through every factor, or W_eff first.
    double act = 0, wgt = double(rows) * double(in_) * double(out_);
    for (int64_t i = 0; i < depth_; ++i) act += double(rows) * double(dims_[i]) * double(dims_[i + 1]);
    for (const auto& b : blocks_)
      for (int i = b.first + 1; i <= b.last; ++i)
        wgt += double(dims_[i + 1]) * double(dims_[i]) * double(dims_[b.first]);
    for (size_t b = 1; b < blocks_.size(); ++b)
      wgt += double(dims_[blocks_[b].last + 1]) * double(dims_[blocks_[b].first]) * double(in_);
    p.act_first_macs = act;
    p.weight_first_macs = wgt;
    bool weight_first = policy_ == OrderPolicy::Weight || (policy_ == OrderPolicy::Auto && wgt < act);
    p.order = weight_first ? "weight" : "activation";
    p.macs = weight_first ? wgt : act;
    p.intermediate_elems = weight_first ? double(in_) * double(h_) * double(blocks_.size())
                                        : double(rows) * double(h_) * double(depth_ - 1);
  }
  return plans_.emplace(rows, std::move(p)).first->second;
}

torch::Tensor Expanded::linear(const torch::Tensor& x, const torch::Tensor& bias) {
  if (cut_active() || collapsed_) return F::linear(x, batch_weight(), add_bias(bias, batch_bias()));
  torch::Tensor y;
  if (!plain_chain()) {
    y = apply_chain(x, is_training());
    if (learnable_) y = y + F::linear(x, g_);
    return bias.defined() ? y + bias : y;
  }
  const ChainPlan& p = chain_plan_for(x.numel() / in_);
  if (p.order == "weight") return F::linear(x, weight(), bias);  // G folds into W_eff
  if (blocks_.size() == 1 && !blocks_[0].skip && p.order == "activation") {
    // x through each factor with F::linear, as nn.Linear does: autograd then writes every factor's
    // gradient in its own (out, in) layout (a matmul with wᵀ produced transposed gradients that
    // were copied on accumulation), which made a 20-factor step 1.4x PyTorch's.
    y = x;
    for (const auto& w : w_) y = F::linear(y, w);
  } else if (blocks_.size() == 1 && !blocks_[0].skip) {
    std::vector<torch::Tensor> mats;
    for (const auto& w : w_) mats.push_back(w.t());
    y = chain_eval(x, mats, p);
  } else {
    y = apply_chain(x, false);
  }
  if (learnable_) y = y + F::linear(x, g_);
  return bias.defined() ? y + bias : y;
}

Parameterization::Plan Expanded::plan(int64_t rows, bool input_grad) const {
  if (collapsed_) return Parameterization::plan(rows, input_grad);
  const double bytes = double(w_[0].element_size());
  Plan out;
  // Activation-first: every factor as a matmul over the batch (the first skips its input gradient).
  double act = 0;
  for (int64_t i = 0; i < depth_; ++i)
    act += 2.0 * double(rows) * double(dims_[i]) * double(dims_[i + 1]) * ((i == 0 && !input_grad) ? 2.0 : 3.0);
  const double g_flops = learnable_ ? 2.0 * double(rows) * double(in_) * double(out_) * (input_grad ? 3.0 : 2.0) : 0;
  out.act_first_flops = act + g_flops;
  if (!plain_chain()) {
    out.order = "activation";
    out.flops = out.act_first_flops;
    out.memory_bytes = double(rows) * double(h_) * double(depth_ - 1) * (batch_norm_ ? 2.0 : 1.0) * bytes;
    return out;
  }
  const ChainPlan& p = chain_plan_for(rows);
  out.order = p.order;
  out.memory_bytes = p.intermediate_elems * bytes;
  bool pure = blocks_.size() == 1 && !blocks_[0].skip;
  if (pure) {
    out.flops = chain_flops(p, input_grad) + (p.order == "weight" ? 0 : g_flops);
  } else {
    // Weight-first: the factor products (forward + two gradients each) and one dense matmul.
    double wprod = 2.0 * (p.weight_first_macs - double(rows) * double(in_) * double(out_)) * 3.0;
    double dense = 2.0 * double(rows) * double(in_) * double(out_) * (input_grad ? 3.0 : 2.0);
    out.flops = p.order == "weight" ? wprod + dense : out.act_first_flops;
  }
  return out;
}

bool Expanded::cut_at_weight() {
  if (collapsed_ || batch_norm_) return false;
  int64_t eff = in_ * out_ + (factor_bias_ ? out_ : 0);
  return eff < trainable_count();
}

// --- rotate schedule -------------------------------------------------------------------

bool Expanded::can_rotate(std::string* why) const {
  if (!plain_chain() || learnable_ || blocks_.size() != 1 || blocks_[0].skip) {
    *why = "only plain chains (no skips, batch norm, factor biases or learnable skip) can be re-expanded exactly";
    return false;
  }
  if (depth_ < 2) {
    *why = "depth 1 is already a dense layer";
    return false;
  }
  if (h_ < in_ && h_ < out_) {
    *why = fmt::format("inner width {} is below both in ({}) and out ({}): a rank-{} product cannot equal every weight",
                       h_, in_, out_, h_);
    return false;
  }
  return true;
}

void Expanded::collapse_in_place() {
  std::string why;
  XPAND_CHECK(can_rotate(&why) && !collapsed_, "collapse_in_place: {}", why);
  torch::NoGradGuard ng;
  dense_.set_data(product().detach().clone());
  for (auto& w : w_) w.set_data(torch::empty({0}, w.options()));
  collapsed_ = true;
}

void Expanded::expand_in_place(uint64_t seed) {
  XPAND_CHECK(collapsed_, "expand_in_place on an expanded layer");
  torch::NoGradGuard ng;
  auto gen = at::detail::createCPUGenerator(seed);
  const auto opts = dense_.options();
  auto orthonormal = [&](int64_t rows, int64_t cols) {  // (rows × cols), orthonormal columns
    auto a = torch::randn({rows, cols}, gen, torch::TensorOptions().dtype(torch::kFloat64));
    return std::get<0>(torch::linalg_qr(a)).to(opts);
  };
  torch::Tensor w = dense_;
  std::vector<torch::Tensor> f(depth_);
  if (h_ >= in_) {  // W_1 = Q_1, W_i = Q_i Q_{i-1}ᵀ, W_d = W Q_{d-1}ᵀ  (QᵀQ = I_in)
    torch::Tensor prev = orthonormal(h_, in_);
    f[0] = prev;
    for (int64_t i = 1; i + 1 < depth_; ++i) {
      auto q = orthonormal(h_, in_);
      f[i] = torch::mm(q, prev.t());
      prev = q;
    }
    f[depth_ - 1] = torch::mm(w, prev.t());
  } else {  // h >= out: W_1 = V_1 W, W_i = V_i V_{i-1}ᵀ, W_d = V_{d-1}ᵀ  (VᵀV = I_out)
    torch::Tensor prev = orthonormal(h_, out_);
    f[0] = torch::mm(prev, w);
    for (int64_t i = 1; i + 1 < depth_; ++i) {
      auto v = orthonormal(h_, out_);
      f[i] = torch::mm(v, prev.t());
      prev = v;
    }
    f[depth_ - 1] = prev.t().contiguous();
  }
  for (int64_t i = 0; i < depth_; ++i) w_[i].set_data(f[i].contiguous());
  dense_.set_data(torch::empty({0}, opts));
  collapsed_ = false;
}

KindInfo expanded_kind() {
  using config::key_choices;
  using config::key_def;
  using config::key_range;
  using config::Type;
  KindInfo k;
  k.name = "expanded";
  k.doc = "product of depth factors through width factor x max(in, out); conv: cl, ck or a kernel list";
  k.options = {
      key_range(key_def("factor", Type::Float, "4",
                        "expanded: inner width = factor x max(in, out) (fractions allowed; < 1 is a bottleneck); "
                        "conv CL/CK: channel expansion rate r"),
                0, std::numeric_limits<double>::infinity(), true),
      key_range(key_def("depth", Type::Int, "2", "expanded: number of factors W_d...W_1"), 1, 64),
      key_choices(key_def("residual", Type::String, "none",
                          "expanded: identity skip around every residual_every factors (every), around the whole "
                          "chain (end), or none"),
                  {"none", "every", "end"}),
      key_range(key_def("residual_every", Type::Int, "1", "expanded: factors per residual block (residual: every)"), 1),
      key_def("learnable_residual", Type::Bool, "false",
              "expanded: y = G x + F(x) with G dense trainable (initialised to 0)"),
      key_def("batch_norm", Type::Bool, "false", "expanded: batch norm between factors (folded at collapse)"),
      key_def("factor_bias", Type::Bool, "false", "expanded: a bias in every factor (propagated at collapse)"),
      key_choices(key_def("conv", Type::String, "cl",
                          "expanded conv: cl (1x1, kxk, 1x1), ck (chain of 3x3), kernels (param.kernels list)"),
                  {"cl", "ck", "kernels"}),
      key_range(key_def("kernels", Type::IntList, "[]", "expanded conv with conv: kernels: kernel sizes of the chain"),
                1),
  };
  k.also_reads = {"order"};
  k.make = [](const Spec& s, const WeightShape& shape, const Init& init) -> ParamPtr {
    if (shape.is_conv()) return std::make_shared<ExpandedConv>(s, shape, init);
    return std::make_shared<Expanded>(s, shape, init);
  };
  // No init_from_weights: a dense snapshot does not fix an expanded layer's factors.
  return k;
}

}  // namespace xpand::param
