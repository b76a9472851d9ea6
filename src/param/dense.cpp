// Dense parameterization (see dense.h).
#include "param/dense.h"

#include <fmt/format.h>

#include <limits>

#include "param/spec.h"

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

namespace {
using config::key_choices;
using config::key_def;
using config::key_range;
using config::Type;
constexpr double kInf = std::numeric_limits<double>::infinity();

// Dense and subspace layers copy the snapshot's weight.
void copy_weight(Parameterization& layer, const Spec&, const torch::Tensor& w0) {
  torch::NoGradGuard ng;
  layer.named_parameters()["weight"].copy_(w0);
}
}  // namespace

namespace {
// The init a dense (or subspace) layer draws its weight from: the network's reference init
// (default), PyTorch's nn.Linear / nn.Conv2d default (torch-default), or N(0, init_std²) (normal: the
// omega-space notebook's W ~ N(0, 0.001²)).
Init dense_init(const Spec& spec, const WeightShape& s, const Init& init) {
  const std::string how = spec.init_for({"default", "torch-default", "normal"});
  if (how != "normal" && spec.non_default("init_std"))
    spec.fail("init_std", "is the standard deviation of init: normal; this layer's init is " + how);
  if (how == "torch-default") return Init::torch_default(s);
  if (how == "normal") return Init::normal(spec.get_float("init_std"));
  return init;
}

ParamPtr make_dense(const Spec& spec, const WeightShape& s, const Init& init) {
  return std::make_shared<Dense>(s, dense_init(spec, s, init));
}
}  // namespace

KindInfo dense_kind() {
  KindInfo k;
  k.name = "dense";
  k.doc = "one trainable matrix per layer (the baseline and the collapsed form)";
  k.options = {config::key_added(key_range(
      key_def("init_std", Type::Float, "0.01", "dense / subspace, init: normal: standard deviation of the weights"), 0,
      kInf))};
  k.also_reads = {"init"};
  k.make = make_dense;
  k.init_from_weights = copy_weight;
  return k;
}

KindInfo subspace_kind() {
  KindInfo k;
  k.name = "subspace";
  k.doc = "dense layers whose parameters move together in theta0 + P omega (train/subspace.h)";
  k.network_wide = true;  // every subspace layer shares one omega
  k.shared_what = "omega";
  k.options = {
      key_range(key_def("omega_dim", Type::Int, "100",
                        "subspace: dimension d of omega (theta = theta0 + P omega; the network's parameters are D)"),
                1),
      key_choices(key_def("projection", Type::String, "fastfood",
                          "subspace: random projection P: dense (Gaussian), dense-qr (orthonormal), sparse (Li et "
                          "al.), fastfood (Hadamard-based, O(D) memory)"),
                  {"dense", "dense-qr", "sparse", "fastfood"}),
      key_range(key_def("max_projection_bytes", Type::Float, "1e9",
                        "subspace: a dense or dense-qr P larger than this (d x D x element size) is refused"),
                0, kInf, true),
      key_choices(key_def("anchor", Type::String, "offset",
                          "subspace: offset = theta0 + P omega with omega from 0 (Li et al.); column = P omega with "
                          "P the QR of [theta_init, Gaussian columns], omega from P^T theta_init (the omega-space "
                          "notebook; needs projection: dense-qr)"),
                  {"offset", "column"}),
  };
  k.also_reads = {"init", "init_std"};
  k.make = make_dense;
  k.init_from_weights = copy_weight;
  return k;
}

}  // namespace xpand::param
