// Shared network machinery: slots, the model registry, collapse and per-layer accounting.
#include "model/network.h"

#include <fmt/format.h>

#include "core/error.h"
#include "model/nets.h"

namespace xpand::model {

param::ParamPtr Network::add_slot(torch::nn::Module& owner, const std::string& local_name,
                                  const std::string& full_name, const param::WeightShape& shape,
                                  const param::Init& init, const param::Factory& make, int64_t rows_per_sample,
                                  bool input_grad) {
  param::ParamPtr p = make(full_name, shape, init);
  owner.register_module(local_name, p);
  slot_info_.push_back({full_name, p, rows_per_sample, input_grad});
  return p;
}

std::vector<Slot> Network::slots() {
  std::vector<Slot> out;
  for (const auto& s : slot_info_) {
    auto p = s.param.lock();
    XPAND_CHECK(p != nullptr, "slot {} outlived its network", s.name);
    out.push_back({s.name, p, s.rows_per_sample, s.input_grad});
  }
  return out;
}

NetworkPtr network_build(const config::Config& cfg, const data::Dataset& ds, const param::Factory& make) {
  const std::string& kind = cfg.get_string("model.kind");
  if (kind == "mlp") return mlp_build(cfg, ds, make);
  if (kind == "cnn") return cnn_build(cfg, ds, make);
  if (kind == "gpt") return gpt_build(cfg, ds, make);
  cfg.fail("model.kind", fmt::format("no network named '{}'", kind));
}

NetworkPtr network_collapse(const config::Config& cfg, const data::Dataset& ds, Network& net) {
  torch::NoGradGuard ng;
  std::map<std::string, param::ParamPtr> by_name;
  for (auto& s : net.slots()) by_name[s.name] = s.param;
  auto dense = network_build(cfg, ds, param::factory_collapsed([&](const std::string& layer) {
    auto it = by_name.find(layer);
    XPAND_CHECK(it != by_name.end(), "collapse: layer {} missing from the source network", layer);
    return it->second->weight();
  }));
  // Every tensor outside the slots (biases, norms, embeddings, buffers) is copied by name.
  std::vector<std::string> slot_prefixes;
  for (auto& s : dense->slots()) slot_prefixes.push_back(s.name + ".");
  auto in_slot = [&](const std::string& n) {
    for (const auto& p : slot_prefixes)
      if (n.compare(0, p.size(), p) == 0) return true;
    return false;
  };
  auto any = net.parameters().front();
  dense->to(any.device(), any.scalar_type());  // before copying, so nothing is rounded to another dtype
  auto src_params = net.named_parameters(), src_buffers = net.named_buffers();
  for (auto& kv : dense->named_parameters())
    if (!in_slot(kv.key())) kv.value().copy_(src_params[kv.key()]);
  for (auto& kv : dense->named_buffers())
    if (!in_slot(kv.key())) kv.value().copy_(src_buffers[kv.key()]);
  dense->train(net.is_training());
  return dense;
}

NetworkReport network_report(Network& net, int64_t batch) {
  NetworkReport r;
  std::vector<std::string> slot_prefixes;
  for (auto& s : net.slots()) {
    LayerReport l;
    l.name = s.name;
    l.kind = s.param->kind();
    l.shape = s.param->shape().str();
    l.order = s.param->order();
    l.trainable = s.param->trainable_count();
    l.collapsed = s.param->collapsed_count();
    l.flops = s.param->flops(batch * s.rows_per_sample, s.input_grad);
    r.layers.push_back(l);
    slot_prefixes.push_back(s.name + ".");
  }
  LayerReport other{"(other)", "-", "biases, norms, embeddings", "-", 0, 0, 0};
  for (auto& kv : net.named_parameters()) {
    bool in_slot = false;
    for (const auto& p : slot_prefixes) in_slot |= kv.key().compare(0, p.size(), p) == 0;
    if (in_slot) continue;
    other.collapsed += kv.value().numel();
    if (kv.value().requires_grad()) other.trainable += kv.value().numel();
  }
  if (other.collapsed > 0) r.layers.push_back(other);
  for (const auto& e : net.extra_costs())
    r.layers.push_back({e.name, "-", "-", "-", 0, 0, e.flops_per_sample * double(batch)});
  for (const auto& l : r.layers) r.trainable += l.trainable, r.collapsed += l.collapsed, r.flops += l.flops;
  return r;
}

}  // namespace xpand::model
