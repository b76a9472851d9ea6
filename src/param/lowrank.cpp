// Low-rank and LoRA layers (see lowrank.h).
#include "param/lowrank.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>

#include "core/error.h"
#include "param/dense.h"
#include "param/form.h"
#include "param/spec.h"

namespace xpand::param {

namespace F = torch::nn::functional;

// --- lowrank -----------------------------------------------------------------------------

LowRank::LowRank(const Spec& spec, WeightShape shape, const Init& init)
    : Parameterization(std::move(shape)), rank_(spec.rank), policy_(order_policy(spec.order)) {
  XPAND_CHECK(!shape_.is_conv(), "lowrank conv layers are not supported");
  const int64_t out = shape_.dims[0], in = shape_.dims[1];
  if (rank_ > std::min(in, out))
    spec.fail("rank", fmt::format("rank {} exceeds min(in, out) = {}", rank_, std::min(in, out)));
  torch::Tensor b = torch::zeros({out, rank_}, alloc_options()), c = torch::zeros({rank_, in}, alloc_options());
  const std::string how = spec.init_for({"default", "torch-default", "svd"});
  if (how == "svd" && spec.init_from.empty())
    spec.fail("init", "init svd needs param.init_from, a run file with a dense snapshot");
  if (how == "torch-default") {  // each factor as nn.Linear's default: U(-1/√fan_in, 1/√fan_in)
    init_fill(b, Init::torch_default(WeightShape{{out, rank_}}));
    init_fill(c, Init::torch_default(WeightShape{{rank_, in}}));
  } else if (how != "svd") {  // init svd: init_from_weights() sets the factors from the snapshot's weight
    double var = init.kind == Init::Uniform ? init.scale * init.scale / 3.0 : init.scale * init.scale;
    double sd = std::pow(var / double(rank_), 0.25);
    init_fill(b, Init::normal(sd));
    init_fill(c, Init::normal(sd));
  }
  b_ = register_parameter("b", b);
  c_ = register_parameter("c", c);
}

void LowRank::init_from_weights(const torch::Tensor& w0) {
  // The best rank-r approximation (truncated SVD, in float64): B = U_r sqrt(S_r), C = sqrt(S_r) V_r^T,
  // rounded to float32 as xpand has always built them (a float64 run gets those values widened).
  torch::NoGradGuard ng;
  auto [u, s, vh] = torch::linalg_svd(w0.to(torch::kFloat64), /*full_matrices=*/false);
  auto root = s.slice(0, 0, rank_).sqrt();
  b_.copy_((u.slice(1, 0, rank_) * root.unsqueeze(0)).to(torch::kFloat32));
  c_.copy_((root.unsqueeze(1) * vh.slice(0, 0, rank_)).to(torch::kFloat32));
}

const ChainPlan& LowRank::chain_plan_for(int64_t rows) const {
  auto it = plans_.find(rows);
  if (it != plans_.end()) return it->second;
  return plans_.emplace(rows, chain_plan({rows, shape_.dims[1], rank_, shape_.dims[0]}, policy_)).first->second;
}

torch::Tensor LowRank::linear(const torch::Tensor& x, const torch::Tensor& bias) {
  if (expanded_form()) return F::linear(F::linear(x, c_), b_, bias);  // x·Cᵀ then ·Bᵀ (param/form.h)
  if (cut_active()) return Parameterization::linear(x, bias);
  auto y = chain_eval(x, {c_.t(), b_.t()}, chain_plan_for(x.numel() / shape_.dims[1]));
  return bias.defined() ? y + bias : y;
}

Parameterization::Plan LowRank::plan(int64_t rows, bool input_grad) const {
  const ChainPlan& p = chain_plan_for(rows);
  Plan out;
  out.order = p.order;
  out.flops = chain_flops(p, input_grad);
  // At a rank where W is smaller than B and C together the cut is W (formed first, the batch through it).
  const bool at_weight = shape_.numel() < b_.numel() + c_.numel();
  out.cut_flops = at_weight ? chain_flops(chain_plan(p.dims, OrderPolicy::Weight), input_grad) : out.flops;
  out.act_first_flops = chain_flops(chain_plan(p.dims, OrderPolicy::Activation), input_grad);
  out.memory_bytes = p.intermediate_elems * double(b_.element_size());
  return out;
}

// --- lora ----------------------------------------------------------------------------------

Lora::Lora(const Spec& spec, WeightShape shape, const Init& init)
    : Parameterization(std::move(shape)), rank_(spec.rank), scale_(spec.lora_alpha / double(spec.rank)) {
  XPAND_CHECK(!shape_.is_conv(), "lora conv layers are not supported");
  const int64_t out = shape_.dims[0], in = shape_.dims[1];
  if (rank_ > std::min(in, out))
    spec.fail("rank", fmt::format("rank {} exceeds min(in, out) = {}", rank_, std::min(in, out)));
  torch::Tensor w0 = torch::zeros({out, in}, alloc_options());
  if (spec.init_from.empty()) init_fill(w0, init);  // else init_from_weights() sets W0 from the snapshot
  w0_ = register_buffer("w0", w0);
  auto a = torch::empty({rank_, in}, alloc_options());
  init_fill(a, Init::torch_default(WeightShape{{rank_, in}}));  // Kaiming uniform, as nn.Linear
  a_ = register_parameter("a", a);
  b_ = register_parameter("b", torch::zeros({out, rank_}, alloc_options()));
}

void Lora::init_from_weights(const torch::Tensor& w0) {
  torch::NoGradGuard ng;
  w0_.copy_(w0);  // in the training dtype: a float64 run keeps every digit
}

torch::Tensor Lora::weight() { return merged_ ? w0_ : w0_ + scale_ * torch::mm(b_, a_); }

torch::Tensor Lora::linear(const torch::Tensor& x, const torch::Tensor& bias) {
  auto y = F::linear(x, w0_, bias);
  if (merged_) return y;
  return y + scale_ * F::linear(F::linear(x, a_), b_);  // adapters activation-first: r is small
}

Parameterization::Plan Lora::plan(int64_t rows, bool input_grad) const {
  const double in = double(shape_.dims[1]), out = double(shape_.dims[0]), r = double(rank_), n = double(rows);
  Plan p;
  p.order = "activation";
  // Frozen W0: forward, plus the input gradient when needed; adapters: forward and both gradients.
  double frozen = 2.0 * n * in * out * (input_grad ? 2.0 : 1.0);
  double adapters = 2.0 * n * r * (in + out) * 3.0;
  p.flops = p.act_first_flops = p.cut_flops = frozen + adapters;
  p.memory_bytes = n * r * double(a_.element_size());
  return p;
}

void Lora::merge() {
  XPAND_CHECK(!merged_, "lora layer merged twice");
  torch::NoGradGuard ng;
  w0_.add_(torch::mm(b_, a_), scale_);
  merged_ = true;
}

void Lora::unmerge() {
  XPAND_CHECK(merged_, "lora layer unmerged while not merged");
  torch::NoGradGuard ng;
  w0_.sub_(torch::mm(b_, a_), scale_);
  merged_ = false;
}

// --- registry entries ------------------------------------------------------------------

namespace {
using config::key_choices;
using config::key_def;
using config::key_range;
using config::Type;

template <typename T>
ParamPtr make_linear_only(const Spec& s, const WeightShape& shape, const Init& init) {
  if (shape.is_conv())
    s.fail("kind", fmt::format("kind {} is for linear layers; this layer is a {} convolution", s.kind, shape.str()));
  return std::make_shared<T>(s, shape, init);
}
}  // namespace

KindInfo lowrank_kind() {
  KindInfo k;
  k.name = "lowrank";
  k.doc = "W = B C with rank r";
  k.options = {
      key_range(key_def("rank", Type::Int, "8", "lowrank / lora: rank r"), 1),
      key_choices(key_def("init", Type::String, "default",
                          "lowrank / expanded: default (variance-matched: the product matches the dense init's "
                          "scale), torch-default (every factor as PyTorch's nn.Linear / nn.Conv2d default, "
                          "U(+-1/sqrt(fan_in))), overparam (expanded: overparam's reset_parameter), normal "
                          "(dense / subspace: N(0, init_std^2)), or svd (lowrank: truncated SVD of init_from)"),
                  {"default", "torch-default", "overparam", "normal", "svd"}),
      key_def("init_from", Type::String, "''",
              "run file whose snapshot gives the dense weights (lowrank svd, lora W0)"),
      key_range(key_def("init_step", Type::Int, "0", "snapshot step in init_from (0 = the last)"), 0),
  };
  k.also_reads = {"order"};
  k.make = make_linear_only<LowRank>;
  // Only init: svd takes the weight; with model.init_from any other init is an error, and a
  // layer's own init_from with another init is not read (train/network_init.cpp).
  k.wants_weights = [](const Spec& spec) { return spec.init == "svd"; };
  k.init_from_weights = [](Parameterization& layer, const Spec& spec, const torch::Tensor& w0) {
    if (spec.init != "svd")
      spec.fail("init",
                "model.init_from starts a lowrank layer only with init: svd (the truncated SVD of the "
                "snapshot's weight)");
    dynamic_cast<LowRank&>(layer).init_from_weights(w0);
  };
  return k;
}

KindInfo lora_kind() {
  KindInfo k;
  k.name = "lora";
  k.doc = "frozen W0 + (alpha/r) B A adapters";
  k.options = {key_range(key_def("lora_alpha", Type::Float, "16", "lora: scale alpha (adapter enters as alpha/r B A)"),
                         0, std::numeric_limits<double>::infinity(), true)};
  k.also_reads = {"rank", "init_from", "init_step", "order"};
  k.make = make_linear_only<Lora>;
  k.init_from_weights = [](Parameterization& layer, const Spec& spec, const torch::Tensor& w0) {
    // W0 in the training dtype when model.init_from names the snapshot; a layer's own init_from
    // alone gives W0 rounded to float32, as xpand has always built it (kept: no number changes).
    const bool whole = spec.cfg && spec.cfg->has("model.init_from") && !spec.cfg->get_string("model.init_from").empty();
    dynamic_cast<Lora&>(layer).init_from_weights(whole ? w0 : w0.to(torch::kFloat32));
  };
  return k;
}

}  // namespace xpand::param
