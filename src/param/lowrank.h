// Low-rank and LoRA layers.
//   lowrank: W = B·C (B: out×r, C: r×in), initialised so the product has the dense init's scale
//            (B, C ~ N(0, s²) with r·s⁴ = σ²), or from the truncated SVD of a dense snapshot
//            (B = U_r √S_r, C = √S_r V_rᵀ: the best rank-r approximation).
//   lora:    W = W0 + (α/r)·B·A with W0 frozen (dense init or a snapshot), B (out×r) zero,
//            A (r×in) Kaiming-uniform; only B and A train. merge()/unmerge() fold the adapter
//            into W0 for evaluation and take it out again to continue training.
#pragma once
#include <map>

#include "param/param.h"
#include "param/planner.h"
#include "param/spec.h"

namespace xpand::param {

class LowRank : public Parameterization {
 public:
  LowRank(const Spec& spec, WeightShape shape, const Init& init);
  std::string kind() const override { return "lowrank"; }
  torch::Tensor weight() override { return torch::mm(b_, c_); }
  torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& bias) override;
  Plan plan(int64_t rows, bool input_grad) const override;
  bool cut_at_weight() override { return shape_.numel() < trainable_count(); }
  // init: svd: B and C from the truncated SVD of a dense weight (the snapshot's, float64).
  void init_from_weights(const torch::Tensor& w0);

 private:
  const ChainPlan& chain_plan_for(int64_t rows) const;
  int64_t rank_;
  OrderPolicy policy_;
  torch::Tensor b_, c_;  // (out × r), (r × in)
  mutable std::map<int64_t, ChainPlan> plans_;
};

class Lora : public Parameterization {
 public:
  Lora(const Spec& spec, WeightShape shape, const Init& init);
  std::string kind() const override { return "lora"; }
  torch::Tensor weight() override;
  torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& bias) override;
  Plan plan(int64_t rows, bool input_grad) const override;
  bool cut_at_weight() override { return false; }  // the adapters are always the smaller set
  // W0 from a dense weight (the snapshot's), in the layer's dtype.
  void init_from_weights(const torch::Tensor& w0);

  void merge();
  void unmerge();
  bool merged() const { return merged_; }
  double scale() const { return scale_; }

 private:
  int64_t rank_;
  double scale_;
  bool merged_ = false;
  torch::Tensor w0_;     // (out × in) frozen buffer
  torch::Tensor a_, b_;  // (r × in), (out × r)
};

// The registry entries of kinds lowrank and lora.
KindInfo lowrank_kind();
KindInfo lora_kind();

}  // namespace xpand::param
