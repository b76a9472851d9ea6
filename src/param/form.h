// The expanded form: how the collapse check (train/collapse_check.h) evaluates a network so that
// it is a different computation from the collapsed one. While an ExpandedFormScope lives on this
// thread, every parameterization evaluates its layer as the structure it trains and never through
// W_eff: expanded layers factor by factor in activation-first order (each factor, factor bias, skip
// and batch norm as its own operation, batch norm with running statistics in evaluation mode),
// expanded convs conv by conv, low-rank layers x·Cᵀ then ·Bᵀ, LoRA W0·x + s·B(A·x). Dense layers
// (and subspace layers, dense at forward) are their own expanded form. Outside the scope the
// planner picks the order (at evaluation batch sizes often weight-first, i.e. through W_eff).
#pragma once

namespace xpand::param {

class ExpandedFormScope {
 public:
  ExpandedFormScope();
  ~ExpandedFormScope();
  ExpandedFormScope(const ExpandedFormScope&) = delete;
  ExpandedFormScope& operator=(const ExpandedFormScope&) = delete;

 private:
  bool previous_;
};
bool expanded_form();

}  // namespace xpand::param
