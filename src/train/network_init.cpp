// Frozen tensors and weights from a snapshot (see network_init.h).
#include "train/network_init.h"

#include <fmt/format.h>
#include <fnmatch.h>

#include <algorithm>
#include <map>

#include "core/error.h"
#include "core/log.h"
#include "param/param.h"
#include "param/spec.h"
#include "store/index.h"
#include "store/run_file.h"
#include "train/model_file.h"

namespace xpand::train {

void freeze_parameters(const config::Config& cfg, model::Network& net) {
  for (const auto& pattern : cfg.get_strings("train.freeze")) {
    bool any = false;
    std::string names;
    for (auto& np : net.named_parameters()) {
      names += (names.empty() ? "" : ", ") + np.key();
      if (fnmatch(pattern.c_str(), np.key().c_str(), 0) == 0) {
        np.value().set_requires_grad(false);
        any = true;
      }
    }
    if (!any) cfg.fail("train.freeze", fmt::format("'{}' matches no parameter (parameters: {})", pattern, names));
  }
}

namespace {

// Whether `kind` reads its own init_from option (lowrank, lora: the layer's init_from, falling back
// to model.init_from); the other kinds start from model.init_from alone.
bool reads_own_init_from(const std::string& kind) {
  const auto r = param::option_readers("init_from");
  return std::find(r.begin(), r.end(), kind) != r.end();
}

}  // namespace

namespace {

// A model file read once per process (init_from reads it per layer).
const ModelFile& model_file_cached(const std::string& path) {
  static std::map<std::string, ModelFile> cache;
  auto it = cache.find(path);
  if (it == cache.end()) it = cache.emplace(path, model_read(path)).first;
  return it->second;
}

// The tensor `state_name` of a model file, checked against the shape the network needs.
torch::Tensor model_array(const std::string& path, int64_t step, const std::string& state_name,
                          const std::vector<int64_t>& dims_expected, bool check_only) {
  if (step > 0)
    throw Error(fmt::format("{}: a model file holds one snapshot (step {}); init_step does not apply to it", path,
                            model_file_cached(path).step));
  const ModelTensor* t = model_file_cached(path).find(state_name);
  if (!t) throw Error(fmt::format("{}: the model has no {}", path, state_name));
  if (t->shape != dims_expected)
    throw Error(fmt::format("{}: the model's {} is {}, this network needs {}", path, state_name,
                            fmt::join(t->shape, "x"), fmt::join(dims_expected, "x")));
  if (check_only) return torch::empty(t->shape, torch::TensorOptions().dtype(torch::kFloat64).device(torch::kMeta));
  return torch::tensor(t->data, torch::kFloat64).reshape(t->shape);
}

}  // namespace

torch::Tensor snapshot_array(const std::string& path, int64_t step, const std::string& layer, const std::string& name,
                             const std::vector<int64_t>& dims_expected, bool check_only) {
  if (is_model_file(path)) return model_array(path, step, layer + "." + name, dims_expected, check_only);
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
    if (name == "weight" && r.has_attr_at(at->group + "/" + layer, "nonlinear"))
      throw Error(
          fmt::format("{}: layer {} is a nonlinear expansion (ReLU between its factors): it has no weight to "
                      "start from",
                      path, layer));
    if (!r.has_object(obj))
      throw Error(fmt::format("{}: snapshot {} has no {} of layer {}{}", path, s, name, layer,
                              name == "bias" ? " (the run file predates biases in snapshots; retrain it)" : ""));
    // check_only (xpand plan, sweep costs): the file and the shape are checked, the values are not read.
    std::vector<int64_t> dims = check_only ? r.extent(obj) : std::vector<int64_t>{};
    std::vector<double> data;
    if (!check_only) data = r.read_array(obj, &dims);
    if (dims != dims_expected)
      throw Error(fmt::format("{}: snapshot {} of layer {} has {} {}, this network needs {}", path, s, layer, name,
                              fmt::join(dims, "x"), fmt::join(dims_expected, "x")));
    if (check_only) return torch::empty(dims, torch::TensorOptions().dtype(torch::kFloat64).device(torch::kMeta));
    return torch::tensor(data, torch::kFloat64).reshape(dims);  // the network is moved to its dtype after
  } catch (const store::StoreError& e) {
    throw Error(fmt::format("init_from: {}", e.what()));
  }
}

void init_from_run(const config::Config& cfg, model::Network& net, bool check_only) {
  const std::string model_from = cfg.has("model.init_from") ? cfg.get_string("model.init_from") : "";
  const int64_t model_step = cfg.has("model.init_step") ? cfg.get_int("model.init_step") : 0;
  torch::NoGradGuard ng;
  auto named = net.named_parameters();
  for (auto& slot : net.slots()) {
    const param::Spec spec = param::spec_for(cfg, slot.name);
    const bool own = reads_own_init_from(spec.kind);
    const std::string from = own ? spec.init_from : model_from;
    const int64_t step = own ? spec.init_step : model_step;
    const bool own_key = own && !cfg.get_string(spec.key_of("init_from")).empty();
    const std::string key = own_key ? spec.key_of("init_from") : "model.init_from";  // for messages
    try {
      const param::KindInfo* kind = param::find_kind(spec.kind);
      // A layer's own init_from that its kind does not read in this configuration (lowrank without
      // init: svd) is left alone; the plan checks only the sources kinds read themselves.
      const bool skip = from.empty() || (own_key && kind && kind->wants_weights && !kind->wants_weights(spec)) ||
                        (check_only && !own);
      if (!skip) {
        if (!kind || !kind->init_from_weights)
          spec.fail("kind", fmt::format("{} cannot start {} {} layer (a dense snapshot does not fix its factors); "
                                        "make the layer dense, lowrank (init: svd) or lora",
                                        key, std::string("aeiou").find(spec.kind[0]) != std::string::npos ? "an" : "a",
                                        spec.kind));
        if (!own_key && kind->wants_weights && !kind->wants_weights(spec))
          kind->init_from_weights(*slot.param, spec, torch::Tensor());  // refuses: nothing is read first
        auto w0 = snapshot_array(from, step, slot.name, "weight", slot.param->shape().dims, check_only);
        if (!check_only) kind->init_from_weights(*slot.param, spec, w0);
      }
      if (auto* b = named.find(slot.name + "_bias"); b && !model_from.empty() && !check_only) {
        auto v = snapshot_array(model_from, model_step, slot.name, "bias", b->sizes().vec(), check_only);
        if (!check_only) b->copy_(v);
      }
    } catch (const ConfigError&) {
      throw;
    } catch (const Error& e) {
      cfg.fail(key, e.what());
    }
  }
  if (!model_from.empty() && !check_only)
    log::info("model: every layer and bias from {} ({})", model_from,
              is_model_file(model_from) ? "a model file"
              : model_step > 0          ? fmt::format("step {}", model_step)
                                        : "its last snapshot");
}

model::NetworkPtr network_shapes(const config::Config& cfg, const data::Dataset& ds) {
  model::NetworkPtr net;
  {
    param::ShapeOnlyScope shapes_only;
    net = model::network_build(cfg, ds, param::factory_from_config(cfg));
  }
  init_from_run(cfg, *net, /*check_only=*/true);
  return net;
}

}  // namespace xpand::train
