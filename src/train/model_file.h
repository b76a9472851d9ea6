// Exported models: the collapsed network of one snapshot as a PyTorch-style state dict with what it
// takes to rebuild and feed it (architecture, input normalisation, vocabulary). Written by
// `xpand collapse` as HDF5 (-o MODEL.h5) or as libtorch's pickle (-o MODEL.pt, read by Python's
// torch.load); read by `xpand eval` and by model.init_from. Layout: docs/FORMAT.md ("Model files").
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "config/config.h"
#include "data/dataset.h"
#include "model/network.h"

namespace xpand::train {

inline constexpr const char* kModelFileKind = "xpand collapsed model";
inline constexpr int64_t kModelFormatVersion = 2;

struct ModelTensor {
  std::string name;  // state_dict name: "fc1.weight", "bn1.running_mean", "h0.ln_1.weight"
  std::vector<int64_t> shape;
  std::vector<double> data;  // row-major; float32 weights are exact in float64
  bool integer = false;      // int64 in PyTorch (num_batches_tracked)
};

struct ModelFile {
  std::string path;  // where it was read from, for messages
  std::string run_id, source, config_yaml;
  int64_t step = 0;
  std::string kind;                      // model.kind: mlp, cnn, gpt
  std::string dtype;                     // the run's dtype: float32 or float64
  std::vector<ModelTensor> tensors;      // in the order of layer_order
  std::vector<std::string> layer_order;  // modules in forward order
  // Input: x = (raw / input_div - input_mean) / input_std (images); token ids for gpt.
  std::vector<int64_t> input_shape;
  int64_t num_classes = 0, block_size = 0;
  std::vector<int64_t> vocab;  // gpt: byte value of each token id
  double input_div = 1, input_mean = 0, input_std = 1;

  const ModelTensor* find(const std::string& name) const;
};

// Whether `path` is an HDF5 model file (root attribute kind = kModelFileKind).
bool is_model_file(const std::string& path);
// The collapsed network of a run file's snapshot (group "/snapshots/<step>"). DataError when the
// snapshot cannot make a whole model (a nonlinear layer, a run file that predates whole-network
// snapshots).
ModelFile model_from_run(const std::string& run_path, const std::string& group, int64_t step);
// Reads an HDF5 model file; DataError naming what is wrong.
ModelFile model_read(const std::string& path);
// Writes it as HDF5 (state_dict group, attributes) or, for a path ending in .pt, as libtorch's
// pickle of {"state_dict": {...}, "architecture": {...}}. Written whole or not at all.
void model_write(const ModelFile& m, const std::string& path);

// The configuration the model was trained with, with `overrides` (key=value) applied.
config::Config model_config(const ModelFile& m, const std::vector<std::string>& overrides = {});
// A dataset holding only the shapes the network is built from (no samples).
data::Dataset model_dataset_shapes(const ModelFile& m, const config::Config& cfg);
// The dense network holding the model's tensors, in the model's dtype on `device`.
model::NetworkPtr model_network(const ModelFile& m, const config::Config& cfg, const data::Dataset& ds,
                                torch::Device device);
// The state_dict name of a network tensor outside the layers ("conv1_bn.running_mean" →
// "bn1.running_mean", "h0.ln1" → "h0.ln_1.weight", "wte" → "wte.weight").
std::string exported_name(const std::string& module_name);

}  // namespace xpand::train
