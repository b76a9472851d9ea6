// Base networks written once over effective weights: every weight matrix or kernel is a
// param::Parameterization submodule (a "slot"); biases, norms and embeddings are plain tensors.
// Networks: mlp, cnn, gpt (network_build picks from model.kind). Collapse rebuilds the same
// network with dense slots holding each W_eff, and copies every other tensor by name.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "data/dataset.h"
#include "param/param.h"

namespace xpand::model {

// One parameterized weight of a network and how often it is applied per sample.
struct Slot {
  std::string name;  // dotted module path, e.g. "fc1" or "blocks.0.mlp.c_fc"
  param::ParamPtr param;
  int64_t rows_per_sample;  // 1 for an MLP layer, H_out·W_out for a conv, block_size for a gpt linear
  bool input_grad;          // whether backward needs the gradient w.r.t. this layer's input
};

// FLOPs of the network's work outside its slots (attention score matmuls), per sample.
struct ExtraCost {
  std::string name;
  double flops_per_sample;
};

class Network : public torch::nn::Module {
 public:
  // Logits: (B, classes) for classification, (B, T, vocab) for language modelling.
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;
  virtual std::string kind() const = 0;
  // The slots, in forward order.
  std::vector<Slot> slots();
  virtual std::vector<ExtraCost> extra_costs() const { return {}; }

 protected:
  // Called by subclasses for each weight: registers the parameterization as a submodule `name`
  // of `owner` (this network or one of its submodules) and records its per-sample use.
  param::ParamPtr add_slot(torch::nn::Module& owner, const std::string& local_name, const std::string& full_name,
                           const param::WeightShape& shape, const param::Init& init, const param::Factory& make,
                           int64_t rows_per_sample, bool input_grad);

 private:
  struct SlotInfo {
    std::string name;
    std::weak_ptr<param::Parameterization> param;
    int64_t rows_per_sample;
    bool input_grad;
  };
  std::vector<SlotInfo> slot_info_;
};

using NetworkPtr = std::shared_ptr<Network>;

// Builds model.kind for the dataset's input shape and classes, with weights from `make`.
NetworkPtr network_build(const config::Config& cfg, const data::Dataset& ds, const param::Factory& make);
// Checks a configuration's network from shapes alone, before any weight is allocated: every layer's
// options (param::check_layer_options: a key that does not apply is a ConfigError), and that its
// weights fit in this machine's memory (at least `copies` times the weights' bytes: 1 for the
// network alone, more for training's gradients and optimizer state); a ConfigError names the sizes.
// The global random generator is left as it was.
void network_check(const config::Config& cfg, const data::Dataset& ds, double copies);
// The collapsed (all-dense) network computing the same function as `net`, on the same device/dtype.
NetworkPtr network_collapse(const config::Config& cfg, const data::Dataset& ds, Network& net);

// Per-layer accounting for `xpand plan`.
struct LayerReport {
  std::string name, kind, shape, order;
  int64_t trainable = 0, collapsed = 0;
  double flops = 0;            // forward+backward per step at the given batch, in the planned order
  double act_first_flops = 0;  // the same in activation-first order
  double memory_bytes = 0;     // intermediate results kept for backward
  int64_t cut = 0;             // elements all-reduced per step in data-parallel training
};
struct NetworkReport {
  std::vector<LayerReport> layers;  // slots, then "other" tensors and extra costs
  int64_t trainable = 0, collapsed = 0, cut = 0;
  double flops = 0, act_first_flops = 0;
};
NetworkReport network_report(Network& net, int64_t batch);

}  // namespace xpand::model
