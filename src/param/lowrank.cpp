// Low-rank and LoRA layers (see lowrank.h).
#include "param/lowrank.h"

#include <fmt/format.h>

#include <cmath>

#include "core/error.h"
#include "param/dense.h"
#include "store/index.h"
#include "store/run_file.h"

namespace xpand::param {

namespace F = torch::nn::functional;

torch::Tensor snapshot_array(const std::string& path, int64_t step, const std::string& layer, const std::string& name,
                             const std::vector<int64_t>& dims_expected) {
  try {
    store::RunReader r(path);
    if (!r.has_object("/snapshots")) throw Error(fmt::format("{}: has no snapshots", path));
    const auto snaps = store::snapshot_list(r);
    if (snaps.empty()) throw Error(fmt::format("{}: has no snapshots", path));
    // The default is the newest complete snapshot (the newest may be half-written: docs/FORMAT.md).
    auto at = snaps.end() - (snaps.back().complete || snaps.size() == 1 ? 1 : 2);
    if (step > 0)
      at = std::find_if(snaps.begin(), snaps.end(), [&](const store::SnapshotRef& sn) { return sn.step == step; });
    if (at == snaps.end())
      throw Error(fmt::format("{}: no snapshot at step {} (have {})", path, step, store::snapshot_steps_str(snaps)));
    if (!at->complete)
      throw Error(
          fmt::format("{}: the snapshot at step {} is incomplete (its run did not finish writing it)", path, at->step));
    const std::string s = at->group.substr(at->group.rfind('/') + 1);
    const std::string obj = fmt::format("{}/{}/{}", at->group, layer, name);
    if (!r.has_object(obj))
      throw Error(fmt::format("{}: snapshot {} has no {} of layer {}{}", path, s, name, layer,
                              name == "bias" ? " (the run file predates biases in snapshots; retrain it)" : ""));
    // Shape-only (xpand plan): the file and the shape are checked, the values are not read.
    std::vector<int64_t> dims = shape_only() ? r.extent(obj) : std::vector<int64_t>{};
    std::vector<double> data;
    if (!shape_only()) data = r.read_array(obj, &dims);
    if (dims != dims_expected)
      throw Error(fmt::format("{}: snapshot {} of layer {} has {} {}, this network needs {}", path, s, layer, name,
                              fmt::join(dims, "x"), fmt::join(dims_expected, "x")));
    if (shape_only()) return torch::empty(dims, alloc_options().dtype(torch::kFloat64));
    return torch::tensor(data, torch::kFloat64).reshape(dims);  // the network is moved to its dtype after
  } catch (const store::StoreError& e) {
    throw Error(fmt::format("init_from: {}", e.what()));
  }
}

torch::Tensor snapshot_weight(const std::string& path, int64_t step, const std::string& layer,
                              const WeightShape& shape) {
  return snapshot_array(path, step, layer, "weight", shape.dims);
}

// --- lowrank -----------------------------------------------------------------------------

LowRank::LowRank(const Spec& spec, WeightShape shape, const Init& init)
    : Parameterization(std::move(shape)), rank_(spec.rank), policy_(order_policy(spec.order)) {
  XPAND_CHECK(!shape_.is_conv(), "lowrank conv layers are not supported");
  const int64_t out = shape_.dims[0], in = shape_.dims[1];
  if (rank_ > std::min(in, out))
    spec.fail("rank", fmt::format("rank {} exceeds min(in, out) = {}", rank_, std::min(in, out)));
  torch::Tensor b = torch::empty({out, rank_}, alloc_options()), c = torch::empty({rank_, in}, alloc_options());
  if (spec.init == "svd" && spec.init_from.empty())
    spec.fail("init", "init svd needs param.init_from, a run file with a dense snapshot");
  // Shape-only: snapshot_weight checks the file and the shape; the init below fills meta tensors.
  auto w = spec.init == "svd" ? snapshot_weight(spec.init_from, spec.init_step, spec.layer, shape_) : torch::Tensor();
  if (spec.init == "svd" && !shape_only()) {
    w = w.to(torch::kFloat64);
    auto [u, s, vh] = torch::linalg_svd(w, /*full_matrices=*/false);
    auto root = s.slice(0, 0, rank_).sqrt();
    b = (u.slice(1, 0, rank_) * root.unsqueeze(0)).to(torch::kFloat32);
    c = (root.unsqueeze(1) * vh.slice(0, 0, rank_)).to(torch::kFloat32);
  } else {
    double var = init.kind == Init::Uniform ? init.scale * init.scale / 3.0 : init.scale * init.scale;
    double sd = std::pow(var / double(rank_), 0.25);
    init_fill(b, Init::normal(sd));
    init_fill(c, Init::normal(sd));
  }
  b_ = register_parameter("b", b);
  c_ = register_parameter("c", c);
}

const ChainPlan& LowRank::chain_plan_for(int64_t rows) const {
  auto it = plans_.find(rows);
  if (it != plans_.end()) return it->second;
  return plans_.emplace(rows, chain_plan({rows, shape_.dims[1], rank_, shape_.dims[0]}, policy_)).first->second;
}

torch::Tensor LowRank::linear(const torch::Tensor& x, const torch::Tensor& bias) {
  if (cut_active()) return Parameterization::linear(x, bias);
  auto y = chain_eval(x, {c_.t(), b_.t()}, chain_plan_for(x.numel() / shape_.dims[1]));
  return bias.defined() ? y + bias : y;
}

Parameterization::Plan LowRank::plan(int64_t rows, bool input_grad) const {
  const ChainPlan& p = chain_plan_for(rows);
  Plan out;
  out.order = p.order;
  out.flops = chain_flops(p, input_grad);
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
  torch::Tensor w0 = torch::empty({out, in}, alloc_options());
  if (!spec.init_from.empty()) {
    auto w = snapshot_weight(spec.init_from, spec.init_step, spec.layer, shape_);  // shape-only: checked, not read
    if (!shape_only()) w0 = w.to(torch::kFloat32);
  } else {
    init_fill(w0, init);
  }
  w0_ = register_buffer("w0", w0);
  auto a = torch::empty({rank_, in}, alloc_options());
  init_fill(a, Init::torch_default(WeightShape{{rank_, in}}));  // Kaiming uniform, as nn.Linear
  a_ = register_parameter("a", a);
  b_ = register_parameter("b", torch::zeros({out, rank_}, alloc_options()));
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
  p.flops = p.act_first_flops = frozen + adapters;
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

}  // namespace xpand::param
