// Expanded linear layers (see expanded.h).
#include "param/expanded.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include <cmath>
#include <limits>

#include "core/error.h"
#include "param/dense.h"
#include "param/expanded_conv.h"
#include "param/form.h"

namespace xpand::param {

namespace F = torch::nn::functional;

Expanded::Expanded(const Spec& spec, WeightShape shape, const Init& init)
    : Parameterization(std::move(shape)),
      in_(shape_.dims[1]),
      out_(shape_.dims[0]),
      h_(std::max<int64_t>(1, spec.width_of == "out"      ? int64_t(spec.factor * double(out_))
                              : spec.width_of == "in-out" ? std::llround(spec.factor * double(in_))
                                                          : std::llround(spec.factor * double(std::max(in_, out_))))),
      depth_(spec.depth),
      batch_norm_(spec.batch_norm),
      bn_every_(spec.batch_norm_at == "every"),
      factor_bias_(spec.factor_bias),
      first_bias_(spec.first_bias),
      learnable_(spec.learnable_residual),
      nonlinear_(spec.nonlinear),
      policy_(order_policy(spec.order)) {
  XPAND_CHECK(!shape_.is_conv(), "Expanded is the linear kind; conv layers use ExpandedConv");
  dims_.push_back(in_);
  for (int64_t i = 1; i < depth_; ++i)  // in-out: r·in first, then r·out (ExpandNets' FC)
    dims_.push_back(spec.width_of == "in-out" && i > 1 ? std::max<int64_t>(1, std::llround(spec.factor * double(out_)))
                                                       : h_);
  dims_.push_back(out_);
  if (nonlinear_) {
    if (depth_ < 2) spec.fail("nonlinear", "puts a ReLU between factors; depth 1 has none");
    const std::pair<const char*, bool> others[] = {{"residual", spec.residual != "none"},
                                                   {"batch_norm", spec.batch_norm},
                                                   {"learnable_residual", spec.learnable_residual},
                                                   {"first_bias", spec.first_bias}};
    for (const auto& [f, set] : others)
      if (set)
        spec.fail("nonlinear", fmt::format("takes a plain chain of factors (ExpandNets' nonlinear counterpart); "
                                           "this layer also sets {}",
                                           f));
  }

  if (factor_bias_ && first_bias_)
    spec.fail("first_bias", "factor_bias already puts a bias in every factor; set one of the two");
  const std::string how = spec.init_for({"default", "torch-default", "overparam"});
  if (first_bias_ && spec.cfg && spec.cfg->has("model.layer_bias") && spec.cfg->get_bool("model.bias") &&
      spec.cfg->get_string("model.layer_bias") != "own")
    spec.fail("first_bias",
              "the first factor's bias stands for the layer's bias; set model.layer_bias: own (or model.bias: false) "
              "so that the layer does not get a second one");
  // Options that only mean something with another one: set without it they would do nothing.
  if (how != "overparam" && spec.non_default("negative_slope"))
    spec.fail("negative_slope", "sets the last factor's gain of init: overparam; this layer's init is " + how);
  if (!batch_norm_ && spec.non_default("batch_norm_at"))
    spec.fail("batch_norm_at", "places batch norm, and this layer has batch_norm: false");
  if (spec.residual != "intervals" && spec.non_default("residual_intervals"))
    spec.fail("residual_intervals", "applies with residual: intervals; this layer's residual is " + spec.residual);
  build_skips(spec);

  // Factors: the product's entries get the dense init's variance (see the header).
  double var = init.kind == Init::Uniform ? init.scale * init.scale / 3.0 : init.scale * init.scale;
  double inner = 1;
  for (int64_t i = 1; i < depth_; ++i) inner *= double(dims_[i]);
  double s = std::sqrt(std::pow(var / inner, 1.0 / double(depth_)));
  const bool torch_default = how == "torch-default", overparam = how == "overparam";
  for (int64_t i = 0; i < depth_; ++i) {
    auto w = torch::empty({dims_[i + 1], dims_[i]}, alloc_options());
    const Init factor_init = Init::torch_default(WeightShape{{dims_[i + 1], dims_[i]}});  // U(±1/√fan_in)
    if (overparam) {  // kaiming_normal_(a, fan_in, leaky_relu): a = 1 inside, negative_slope last
      const double a = i + 1 == depth_ ? spec.negative_slope : 1.0;
      init_fill(w, Init::normal(std::sqrt(2.0 / (1.0 + a * a)) / std::sqrt(double(dims_[i]))));
    } else {
      init_fill(w, torch_default ? factor_init : depth_ == 1 ? init : Init::normal(s));
    }
    w_.push_back(register_parameter(fmt::format("w{}", i + 1), w));
    if (factor_bias_ || (first_bias_ && i == 0)) {
      auto b = torch::zeros({dims_[i + 1]}, alloc_options());
      if (torch_default || overparam) init_fill(b, factor_init);  // nn.Linear's bias init
      fb_.push_back(register_parameter(fmt::format("b{}", i + 1), b));
    }
    if (bn_after(i)) {
      const int64_t c = dims_[i + 1];
      bn_gamma_.push_back(register_parameter(fmt::format("bn{}_weight", i + 1), torch::ones({c}, alloc_options())));
      bn_beta_.push_back(register_parameter(fmt::format("bn{}_bias", i + 1), torch::zeros({c}, alloc_options())));
      bn_mean_.push_back(register_buffer(fmt::format("bn{}_running_mean", i + 1), torch::zeros({c}, alloc_options())));
      bn_var_.push_back(register_buffer(fmt::format("bn{}_running_var", i + 1), torch::ones({c}, alloc_options())));
    }
  }
  if (learnable_) g_ = register_parameter("g", torch::zeros({out_, in_}, alloc_options()));
  std::string why;
  if (can_rotate(&why)) dense_ = register_parameter("dense", torch::empty({0}, alloc_options()));
}

void Expanded::build_skips(const Spec& spec) {
  skips_.assign(size_t(depth_) + 1, {});
  const int d = int(depth_);
  if (spec.residual == "tail") {
    if (depth_ < 2) spec.fail("residual", "tail (a skip around the factors after the first) needs depth >= 2");
    if (dims_[1] != out_)
      spec.fail("residual",
                fmt::format("tail needs the inner width to equal out ({}), got {} (width_of: out and factor 1 give it)",
                            out_, dims_[1]));
    skips_[d].push_back(1);
  } else if (spec.residual == "end") {
    if (in_ != out_) spec.fail("residual", fmt::format("an end-to-end skip needs in == out, got {}x{}", out_, in_));
    skips_[d].push_back(0);
  } else if (spec.residual == "every") {
    bool any = false;
    for (int first = 0; first < d; first += int(spec.residual_every)) {
      const int last = std::min(d, first + int(spec.residual_every));
      if (dims_[first] != dims_[last]) continue;  // a block that is not square has no skip
      skips_[last].push_back(first);
      any = true;
    }
    if (!any)
      spec.fail("residual_every", fmt::format("no block of {} factors is square (widths {}), so no skip applies",
                                              spec.residual_every, fmt::join(dims_, "-")));
  } else if (spec.residual == "intervals") {
    // overparam's construct_computation_graph: -1 is the depth, repeats count once, and every
    // interval n adds x_{m-n} to x_m for m = n, 2n, ... <= depth.
    std::vector<int> seen;
    for (int64_t r : spec.residual_intervals) {
      if (r != -1 && (r < 1 || r > depth_))
        spec.fail("residual_intervals", fmt::format("{} is not an interval: use 1..depth ({}) or -1", r, depth_));
      const int n = r == -1 ? d : int(r);
      if (std::find(seen.begin(), seen.end(), n) != seen.end()) continue;
      seen.push_back(n);
      for (int m = n; m <= d; m += n) {
        if (dims_[m - n] != dims_[m])
          spec.fail("residual_intervals",
                    fmt::format("interval {} adds x{} (width {}) to x{} (width {}); widths {} differ", n, m - n,
                                dims_[m - n], m, dims_[m], fmt::join(dims_, "-")));
        skips_[m].push_back(m - n);
      }
    }
    if (seen.empty()) spec.fail("residual_intervals", "residual: intervals needs at least one interval");
  }
}

bool Expanded::has_skips() const {
  for (const auto& s : skips_)
    if (!s.empty()) return true;
  return false;
}

// --- evaluation ---------------------------------------------------------------------

torch::Tensor Expanded::factor_bias(int i) const {
  if (factor_bias_) return fb_[i];
  if (first_bias_ && i == 0) return fb_[0];
  return {};
}

torch::Tensor Expanded::apply_chain(const torch::Tensor& x, bool bn_training) {
  std::vector<torch::Tensor> xs = {x};
  size_t bn = 0;
  for (int64_t i = 0; i < depth_; ++i) {
    torch::Tensor z = F::linear(xs.back(), w_[i], factor_bias(int(i)));
    if (nonlinear_ && i + 1 < depth_) z = torch::relu(z);
    if (bn_after(i)) {
      auto sizes = z.sizes().vec();
      z = torch::batch_norm(z.reshape({-1, dims_[i + 1]}), bn_gamma_[bn], bn_beta_[bn], bn_mean_[bn], bn_var_[bn],
                            bn_training, kBnMomentum, kBnEps, /*cudnn_enabled=*/false)
              .reshape(sizes);
      ++bn;
    }
    for (int a : skips_[i + 1]) z = z + xs[a];
    xs.push_back(z);
  }
  return xs.back();
}

torch::Tensor Expanded::product() {
  // The same recurrence on matrices: M_0 = I (left implicit), M_v = W_v M_{v-1} + the skipping M_a.
  std::vector<torch::Tensor> ms = {torch::Tensor()};
  for (int64_t i = 0; i < depth_; ++i) {
    torch::Tensor m = ms.back().defined() ? torch::mm(w_[i], ms.back()) : w_[i];
    for (int a : skips_[i + 1]) m = m + (ms[a].defined() ? ms[a] : torch::eye(in_, m.options()));
    ms.push_back(m);
  }
  return ms.back();
}

torch::Tensor Expanded::weight() {
  XPAND_CHECK(!nonlinear_, "a nonlinear expanded layer is not one linear map: it has no weight to collapse to");
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
  XPAND_CHECK(!nonlinear_, "a nonlinear expanded layer is not one linear map: it has no bias to collapse to");
  if (collapsed_ || plain_chain()) return {};
  return apply_chain(torch::zeros({1, in_}, w_[0].options()), false).squeeze(0);
}

const ChainPlan& Expanded::chain_plan_for(int64_t rows) const {
  auto it = plans_.find(rows);
  if (it != plans_.end()) return it->second;
  std::vector<int64_t> dims = {rows};
  dims.insert(dims.end(), dims_.begin(), dims_.end());
  ChainPlan p = chain_plan(dims, policy_);
  if (has_skips()) {
    // With skips only the two whole orders exist: through every factor, or W_eff first (product():
    // M_v = W_v M_{v-1}, each (dims_v × in), then one matmul with the batch).
    double act = 0, wgt = double(rows) * double(in_) * double(out_), kept = 0;
    for (int64_t i = 0; i < depth_; ++i) act += double(rows) * double(dims_[i]) * double(dims_[i + 1]);
    for (int64_t i = 1; i < depth_; ++i) {
      wgt += double(dims_[i + 1]) * double(dims_[i]) * double(in_);
      kept += double(dims_[i]) * double(in_);
    }
    p.act_first_macs = act;
    p.weight_first_macs = wgt;
    bool weight_first = policy_ == OrderPolicy::Weight || (policy_ == OrderPolicy::Auto && wgt < act);
    p.order = weight_first ? "weight" : "activation";
    p.macs = weight_first ? wgt : act;
    p.intermediate_elems = weight_first ? kept : double(rows) * inner_width_sum();
  }
  return plans_.emplace(rows, std::move(p)).first->second;
}

torch::Tensor Expanded::linear(const torch::Tensor& x, const torch::Tensor& bias) {
  if (collapsed_ || (cut_active() && !expanded_form()))
    return F::linear(x, batch_weight(), add_bias(bias, batch_bias()));
  torch::Tensor y;
  if (!plain_chain() || expanded_form()) {  // the expanded form: every factor as its own layer (param/form.h)
    y = apply_chain(x, is_training());
    if (learnable_) y = y + F::linear(x, g_);
    return bias.defined() ? y + bias : y;
  }
  const ChainPlan& p = chain_plan_for(x.numel() / in_);
  if (p.order == "weight") return F::linear(x, weight(), bias);  // G folds into W_eff
  if (!has_skips() && p.order == "activation") {
    // x through each factor with F::linear, as nn.Linear does: autograd then writes every factor's
    // gradient in its own (out, in) layout (a matmul with wᵀ produced transposed gradients that
    // were copied on accumulation), which made a 20-factor step 1.4x PyTorch's.
    y = x;
    for (const auto& w : w_) y = F::linear(y, w);
  } else if (!has_skips()) {
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
    out.flops = out.cut_flops = out.act_first_flops;
    out.memory_bytes = double(rows) * inner_width_sum() * (batch_norm_ || nonlinear_ ? 2.0 : 1.0) * bytes +
                       (bn_every_ && batch_norm_ ? double(rows) * double(out_) * bytes : 0.0);
    return out;
  }
  const ChainPlan& p = chain_plan_for(rows);
  out.order = p.order;
  out.memory_bytes = p.intermediate_elems * bytes;
  if (!has_skips()) {
    out.flops = chain_flops(p, input_grad) + (p.order == "weight" ? 0 : g_flops);
    std::vector<int64_t> dims = {rows};
    dims.insert(dims.end(), dims_.begin(), dims_.end());
    out.cut_flops = p.order == "weight" ? out.flops : chain_flops(chain_plan(dims, OrderPolicy::Weight), input_grad);
  } else {
    // Weight-first: the factor products (forward + two gradients each) and one dense matmul.
    double wprod = 2.0 * (p.weight_first_macs - double(rows) * double(in_) * double(out_)) * 3.0;
    double dense = 2.0 * double(rows) * double(in_) * double(out_) * (input_grad ? 3.0 : 2.0);
    out.flops = p.order == "weight" ? wprod + dense : out.act_first_flops;
    out.cut_flops = wprod + dense;
  }
  return out;
}

bool Expanded::cut_at_weight() {
  if (collapsed_ || batch_norm_ || nonlinear_) return false;
  int64_t eff = in_ * out_ + (factor_bias_ || first_bias_ ? out_ : 0);
  return eff < trainable_count();
}

// --- rotate schedule -------------------------------------------------------------------

bool Expanded::can_rotate(std::string* why) const {
  if (!plain_chain() || learnable_ || has_skips()) {
    *why =
        "only plain linear chains (no skips, batch norm, factor or first biases, learnable skip or nonlinear) can "
        "be re-expanded exactly";
    return false;
  }
  if (depth_ < 2) {
    *why = "depth 1 is already a dense layer";
    return false;
  }
  if (std::any_of(dims_.begin() + 1, dims_.end() - 1, [&](int64_t w) { return w != h_; })) {
    *why = fmt::format("the inner widths {} differ (width_of: in-out)", fmt::join(dims_, "-"));
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
  k.doc = "product of depth factors through width factor x max(in, out) (or x out); conv: cl, ck or a kernel list";
  k.options = {
      key_range(key_def("factor", Type::Float, "4",
                        "expanded: inner width = factor x max(in, out) (fractions allowed; < 1 is a bottleneck); "
                        "conv CL/CK: channel expansion rate r"),
                0, std::numeric_limits<double>::infinity(), true),
      key_range(key_def("depth", Type::Int, "2", "expanded: number of factors W_d...W_1"), 1, 64),
      key_choices(key_def("width_of", Type::String, "max",
                          "expanded: inner width = factor x max(in, out) (max), int(factor x out) (out, as "
                          "overparam's EPLinear), or factor x in then factor x out (in-out, ExpandNets' FC)"),
                  {"max", "out", "in-out"}),
      key_choices(key_def("residual", Type::String, "none",
                          "expanded: identity skip around every residual_every factors (every), around the whole "
                          "chain (end), one skip around all the factors after the first (tail: y = z + E(z), "
                          "z = W_1 x + b_1, the Expansive Networks seed), or none"),
                  {"none", "every", "end", "tail", "intervals"}),
      key_range(key_def("residual_intervals", Type::IntList, "[2]",
                        "expanded, residual: intervals: overparam's residual_intervals: every n adds x_(m-n) to x_m "
                        "for m = n, 2n, ... <= depth (-1 = depth)"),
                -1),
      key_range(key_def("residual_every", Type::Int, "1", "expanded: factors per residual block (residual: every)"), 1),
      key_def("learnable_residual", Type::Bool, "false",
              "expanded: y = G x + F(x) with G dense trainable (initialised to 0)"),
      key_def("batch_norm", Type::Bool, "false", "expanded: batch norm between factors (folded at collapse)"),
      key_choices(key_def("batch_norm_at", Type::String, "between",
                          "expanded, batch_norm: after every factor but the last (between) or after every factor, "
                          "before the skips add (every: overparam's EPLinear)"),
                  {"between", "every"}),
      key_def("negative_slope", Type::Float, "0",
              "expanded, init: overparam: the leaky-ReLU slope after the layer (the last factor's init gain)"),
      key_def("factor_bias", Type::Bool, "false", "expanded: a bias in every factor (propagated at collapse)"),
      key_def("first_bias", Type::Bool, "false",
              "expanded: a bias in the first factor only, inside the chain (the Expansive Networks seed's fc1)"),
      key_def("nonlinear", Type::Bool, "false",
              "expanded: ReLU between the factors (ExpandNets' nonlinear counterpart): not one linear map, so the "
              "layer is never collapsed"),
      key_choices(
          key_def("conv", Type::String, "cl",
                  "expanded conv: cl (1x1 m->rm, kxk rm->rn, 1x1 rn->n), ck ((k-1)/2 3x3 convs m->rm->rn->...->n, "
                  "k >= 5; k = 5: m->rm->n), kernels (param.kernels list)"),
          {"cl", "ck", "kernels"}),
      key_def("expand_input", Type::Bool, "true",
              "expanded conv: the first inner width is r x in (false: in, as ExpandNets' first layer 3->3)"),
      key_range(key_def("kernels", Type::IntList, "[]", "expanded conv with conv: kernels: kernel sizes of the chain"),
                1),
  };
  // Added after run ids were in use: at their defaults they leave every earlier run's id as it was.
  for (auto& o : k.options)
    if (o.key == "width_of" || o.key == "residual_intervals" || o.key == "batch_norm_at" || o.key == "negative_slope" ||
        o.key == "first_bias" || o.key == "nonlinear" || o.key == "expand_input")
      o = config::key_added(o);
  k.also_reads = {"order", "init"};
  k.linear_only = {"depth",      "residual",      "residual_every", "residual_intervals", "learnable_residual",
                   "batch_norm", "batch_norm_at", "width_of",       "first_bias",         "negative_slope"};
  k.conv_only = {"conv", "kernels", "expand_input"};
  k.make = [](const Spec& s, const WeightShape& shape, const Init& init) -> ParamPtr {
    if (shape.is_conv()) return std::make_shared<ExpandedConv>(s, shape, init);
    return std::make_shared<Expanded>(s, shape, init);
  };
  // No init_from_weights: a dense snapshot does not fix an expanded layer's factors.
  return k;
}

}  // namespace xpand::param
