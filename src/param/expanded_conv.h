// Expanded convolutions (ExpandNets): a k×k conv (out, in/groups, k, k) trained as a chain of
// convolutions without nonlinearities, collapsed exactly into one kernel.
//   cl:      1×1 in→r·in, k×k r·in→r·out, 1×1 r·out→out
//   ck:      (k-1)/2 3×3 convs in→r·in→r·out→…→r·out→out, for odd k ≥ 5 (k = 5: in→r·in→out;
//            k = 7: ExpandNets' in→r·in→r·out→out; larger k: xpand's continuation of the rule)
//   kernels: an explicit list [k1, …, kd] with Σk − d + 1 = k, widths in→h→…→h→out, h = r·max(in, out)
// expand_input: false keeps the first inner width at in (ExpandNets' first layer, 3 → 3 → 8r → 8).
// cl and ck are ExpandNets' (GUOShuxuan/expandnets, exp_cifar/models/cifar_tiny_3.py and
// cifar_tiny_7.py); init: torch-default draws every conv as nn.Conv2d's default, as upstream does.
// nonlinear: ReLU between the convs (upstream's Nonlinear models): no weight(), not collapsible.
// Exactness: all padding is applied by the first conv and the stride by the last spatial conv
// (later 1×1 convs commute with subsampling), so every later conv is a "valid" correlation and
// the chain equals one correlation with the composed kernel K = W_d ∗ ⋯ ∗ W_1 (full convolution
// of the kernels, summed over the inner channels). Groups apply to every conv of the chain, so
// depthwise layers stay depthwise. Factor biases (param.factor_bias) fold as b·(spatial sums of
// the later kernels). Widths are per group: a depthwise layer with rate r has r channels per group.
#pragma once
#include "param/param.h"
#include "param/planner.h"
#include "param/spec.h"

namespace xpand::param {

class ExpandedConv : public Parameterization {
 public:
  ExpandedConv(const Spec& spec, WeightShape shape, const Init& init);
  std::string kind() const override { return "expanded"; }
  torch::Tensor weight() override;
  torch::Tensor bias() override;
  bool has_bias() override { return factor_bias_; }
  bool collapsible() const override { return !nonlinear_; }
  torch::Tensor conv2d(const torch::Tensor& x, const torch::Tensor& bias, int64_t stride, int64_t padding,
                       int64_t groups) override;
  Plan plan(int64_t rows, bool input_grad) const override;
  bool cut_at_weight() override {
    return !nonlinear_ && shape_.numel() + (factor_bias_ ? shape_.out() : 0) < trainable_count();
  }

  const std::vector<int64_t>& kernels() const { return k_; }
  const std::vector<int64_t>& channels() const { return c_; }

 private:
  // Whether the composed kernel is cheaper than the chain at this many output positions.
  bool weight_first(int64_t rows) const;
  int64_t groups_;
  bool factor_bias_, nonlinear_;
  OrderPolicy policy_;
  std::vector<int64_t> k_;            // kernel size of each conv of the chain
  std::vector<int64_t> c_;            // channels: c_[0] = in, …, c_[d] = out
  int stride_stage_;                  // the conv that applies the stride
  std::vector<torch::Tensor> w_, b_;  // (c_[i+1], c_[i]/groups, k_i, k_i), (c_[i+1])
};

// The full convolution of two grouped kernels: the kernel of "w1 then w2" as one correlation.
// w1: (c, in/g, k1, k1), w2: (out, c/g, k2, k2) → (out, in/g, k1+k2-1, k1+k2-1).
torch::Tensor compose_kernels(const torch::Tensor& w1, const torch::Tensor& w2, int64_t groups);

}  // namespace xpand::param
