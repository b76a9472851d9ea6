// Parameterizations: how the effective weight W_eff of one layer is computed from raw trainable
// tensors (docs/ARCHITECTURE.md). Base networks only see this interface: they ask for x·W_effᵀ (or a
// convolution with W_eff) and never know whether the weight is dense, a product of factors, a
// low-rank product, an adapter or a point of a random subspace.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"

namespace xpand::param {

// Shape of the effective weight: (out, in) for linear, (out, in/groups, kh, kw) for conv.
struct WeightShape {
  std::vector<int64_t> dims;
  int64_t groups = 1;  // conv groups (in channels = dims[1] * groups)
  bool is_conv() const { return dims.size() == 4; }
  int64_t out() const { return dims[0]; }
  int64_t fan_in() const;  // in (linear) or in/groups * kh * kw (conv)
  int64_t numel() const;
  std::string str() const;  // "512x784"
};

// Shape-only construction (`xpand plan`): while a ShapeOnlyScope lives on this thread, the
// parameterizations create their tensors on the meta device (shapes, no memory, no values) and read
// no files (init_from): what their plans and counts need, without the weights.
class ShapeOnlyScope {
 public:
  ShapeOnlyScope();
  ~ShapeOnlyScope();
  ShapeOnlyScope(const ShapeOnlyScope&) = delete;
  ShapeOnlyScope& operator=(const ShapeOnlyScope&) = delete;

 private:
  bool previous_;
};
bool shape_only();
// The options of a parameterization's own tensors: meta under a ShapeOnlyScope, else the default.
torch::TensorOptions alloc_options();

// Distribution of the dense weight a layer would have: U(-bound, bound) or N(0, std²).
// Every parameterization initialises so that its W_eff matches this distribution's scale.
struct Init {
  enum Kind { Uniform, Normal } kind = Uniform;
  double scale = 0;                                 // bound (Uniform) or std (Normal)
  static Init torch_default(const WeightShape& s);  // kaiming_uniform(a=√5): bound 1/√fan_in
  static Init normal(double std) { return {Normal, std}; }
};

class Parameterization : public torch::nn::Module {
 public:
  explicit Parameterization(WeightShape shape) : shape_(std::move(shape)) {}
  virtual std::string kind() const = 0;
  const WeightShape& shape() const { return shape_; }

  // The effective weight W_eff, shaped shape().dims (differentiable w.r.t. the raw tensors).
  // Layers with batch norm between factors give the evaluation-mode (running statistics) map.
  virtual torch::Tensor weight() = 0;
  // Whether the layer is one linear map at all: false for a chain with nonlinearities between its
  // factors (ExpandNets' nonlinear comparison), which has no weight() and evaluates as it trains.
  virtual bool collapsible() const { return true; }
  // The bias the parameterization itself contributes (factor biases, folded batch norm), shaped
  // (out); undefined when it contributes none. The layer computes x·W_effᵀ + bias() + its own bias.
  virtual torch::Tensor bias() { return {}; }
  // Whether bias() is defined, without computing it (for reports built from shapes).
  virtual bool has_bias() { return bias().defined(); }
  // y = x·W_effᵀ + bias for x of shape (..., in); bias may be undefined.
  virtual torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& bias);
  // 2-D convolution with W_eff (NCHW input).
  virtual torch::Tensor conv2d(const torch::Tensor& x, const torch::Tensor& bias, int64_t stride, int64_t padding,
                               int64_t groups);

  // Raw trainable scalars, and scalars of the collapsed dense weight.
  virtual int64_t trainable_count();
  int64_t collapsed_count() const { return shape_.numel(); }
  // How `rows` applications of the layer (batch rows for linear, batch·H_out·W_out for conv) are
  // evaluated: the planner's order, forward+backward FLOPs (multiply-add = 2) of that order and of
  // the activation-first order, and the bytes of intermediate results kept for backward.
  // input_grad: whether backward needs the gradient w.r.t. the layer's input.
  // cut_flops: forward+backward FLOPs when W_eff is formed first and the batch runs through it (what
  // the data-parallel cut at W_eff computes, dist.cut); the planner's flops when no cut exists.
  struct Plan {
    std::string order = "direct";
    double flops = 0, act_first_flops = 0, memory_bytes = 0, cut_flops = 0;
  };
  virtual Plan plan(int64_t rows, bool input_grad) const;

  // --- the data-parallel cut (docs/ARCHITECTURE.md, docs/DISTRIBUTED.md) ---
  // Elements whose gradients are all-reduced: the smaller of W_eff (+ bias()) and the raw tensors.
  virtual int64_t cut_numel();
  // Whether the cut is W_eff rather than the raw tensors.
  virtual bool cut_at_weight() { return false; }
  // cut_begin: W_eff is computed once and copied into a leaf (the same tensor every step) that the forward uses, so
  // the batch backward stops there. cut_tensors: the tensors whose .grad() the reducer sums.
  // cut_finish: backward from the leaves' gradients to the raw tensors (batch-independent).
  void cut_begin();
  std::vector<torch::Tensor> cut_tensors();
  void cut_finish();
  bool cut_active() const { return cut_on_; }
  // Frees the leaves cut_begin() keeps between steps (a layer the cut no longer uses).
  void cut_release() {
    if (!cut_on_) cut_w_ = cut_b_ = torch::Tensor();
  }

 protected:
  // Forward helpers that honour an active cut: the weight and bias the batch computation uses.
  torch::Tensor batch_weight() { return cut_active() ? cut_w_ : weight(); }
  torch::Tensor batch_bias() { return cut_active() ? cut_b_ : bias(); }
  static torch::Tensor add_bias(const torch::Tensor& a, const torch::Tensor& b);

  WeightShape shape_;

 private:
  torch::Tensor cut_w_, cut_b_;  // leaves used by the forward while a cut is active (kept)
  bool cut_on_ = false;
  torch::Tensor cut_w_src_, cut_b_src_;  // their graphs back to the raw tensors
};

using ParamPtr = std::shared_ptr<Parameterization>;

// Builds the parameterization of one layer: its dotted name, weight shape and reference init.
using Factory = std::function<ParamPtr(const std::string& layer, const WeightShape&, const Init&)>;

// --- registry ------------------------------------------------------------------------
// A parameterization kind is one file (its class and its KindInfo) plus one line in the registry:
// the built-in kinds are listed in registry.cpp; a kind elsewhere (a test, a plug-in) registers
// itself with a static RegisterKind. Everything else derives from the entries: the schema's
// param.kind choices and its param.* / layers.*.* keys (`xpand keys`), which options each kind
// reads (an option set for a layer whose kind does not read it is a config error), and how a
// layer starts from a snapshot's dense weight (model.init_from).
struct Spec;
struct KindInfo {
  std::string name;
  std::string doc;
  // The options this kind defines (field names without "param."), with type, default, range, help.
  std::vector<config::KeyDef> options;
  // Options defined by the registry ("order") or by another kind that this kind reads too.
  std::vector<std::string> also_reads;
  // Options set once for the whole network (param.* only, never layers.*): the subspace's omega.
  bool network_wide = false;
  std::function<ParamPtr(const Spec& spec, const WeightShape&, const Init&)> make;
  // model.init_from (or the layer's init_from): starts a built layer from the dense weight W0 of a
  // snapshot (float64, the layer's shape; the trainer reads it). Empty: this kind cannot start from
  // a dense weight, and asking for it is a config error naming the layer's kind.
  std::function<void(Parameterization& layer, const Spec& spec, const torch::Tensor& w0)> init_from_weights;
  // Whether a layer's own init_from is read (lowrank: only with init: svd); empty: always. With
  // model.init_from the hook is always called (and may refuse).
  std::function<bool(const Spec& spec)> wants_weights;
  // Options this kind reads only for linear layers, or only for conv layers: set for a layer of the
  // other type they are a config error naming the layer (never silently ignored).
  std::vector<std::string> linear_only, conv_only;
  // What the layers of a network_wide kind share, for messages ("omega").
  std::string shared_what = "set of options";
};
// Every kind: the built-ins, then those registered with RegisterKind.
const std::vector<KindInfo>& kinds();
std::vector<std::string> kind_names();
// The entry of kind `name`, or null.
const KindInfo* find_kind(const std::string& name);
// The kinds reading option `field` (empty for "kind", which every layer reads).
std::vector<std::string> option_readers(const std::string& field);
struct RegisterKind {
  explicit RegisterKind(KindInfo kind);
};

// The factory for a run: each layer's kind and options from param.* and layers.* (spec.h).
// The returned factory refers to cfg, which must outlive it.
Factory factory_from_config(const config::Config& cfg);
// A factory of dense layers holding copies of the effective weight and bias of the layers of
// another network (collapse): of(layer) returns that layer's parameterization.
Factory factory_collapsed(const std::function<std::shared_ptr<Parameterization>(const std::string& layer)>& of);

// Every layers.<pattern> of the config must match a layer of the network, and every param.* or
// layers.*.* option set explicitly must be read by some layer's kind (a typo or a forgotten kind
// is an error, not a silent no-op). layers: the network's slot names; is_conv: whether each is a
// conv layer (a kind's linear_only / conv_only options then apply to the layers of that type only;
// empty: every layer is linear).
void check_layer_options(const config::Config& cfg, const std::vector<std::string>& layers,
                         const std::vector<bool>& is_conv = {});
// Whether a layer of kind `kind` (conv or linear) reads option `field`.
bool kind_reads(const std::string& kind, const std::string& field, bool conv);

}  // namespace xpand::param
