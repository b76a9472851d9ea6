// Shared network machinery: slots, the model registry, collapse and per-layer accounting.
#include "model/network.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>

#include "core/error.h"
#include "model/nets.h"
#include "param/spec.h"

namespace xpand::model {

param::ParamPtr Network::add_slot(torch::nn::Module& owner, const std::string& local_name, const std::string& full_name,
                                  const param::WeightShape& shape, const param::Init& init, const param::Factory& make,
                                  int64_t rows_per_sample, bool input_grad) {
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
  NetworkPtr net;
  if (kind == "mlp")
    net = mlp_build(cfg, ds, make);
  else if (kind == "cnn")
    net = cnn_build(cfg, ds, make);
  else if (kind == "gpt")
    net = gpt_build(cfg, ds, make);
  else
    cfg.fail("model.kind", fmt::format("no network named '{}'", kind));
  std::vector<std::string> names;
  std::vector<bool> conv;
  for (const auto& s : net->slots()) {
    names.push_back(s.name);
    conv.push_back(s.param->shape().is_conv());
  }
  param::check_layer_options(cfg, names, conv);
  return net;
}

namespace {

// The stand-in of a layer during network_check: its shape, no tensors.
class ShapeOnly : public param::Parameterization {
 public:
  using Parameterization::Parameterization;
  std::string kind() const override { return "shape-only"; }
  torch::Tensor weight() override {
    XPAND_CHECK(false, "network_check's stand-in layer has no weight");
    return {};
  }
};

// Bytes this process may hold: the machine's memory, or less under an address-space limit or a
// cgroup (v2) memory limit.
double memory_limit_bytes() {
  double limit = double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGESIZE));
  struct rlimit rl {};
  if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) limit = std::min(limit, double(rl.rlim_cur));
  std::ifstream cg("/sys/fs/cgroup/memory.max");
  std::string v;
  if (cg >> v && v != "max") {
    try {
      limit = std::min(limit, std::stod(v));
    } catch (const std::exception&) {
    }
  }
  return limit;
}

}  // namespace

void network_check(const config::Config& cfg, const data::Dataset& ds, double copies) {
  struct Layer {
    std::string name, shape, kind;
    double scalars;
  };
  std::vector<Layer> layers;
  auto probe = [&](const std::string& layer, const param::WeightShape& s, const param::Init&) -> param::ParamPtr {
    const param::Spec spec = param::spec_for(cfg, layer);
    // A lower bound of the layer's scalars: an expansion holds at least W's (its factors span it),
    // a low-rank product r (in + out), an adapter W0 and its two factors.
    double n = double(s.numel());
    if (spec.kind == "lowrank")
      n = double(spec.rank) * double(s.out() + s.fan_in());
    else if (spec.kind == "lora")
      n += double(spec.rank) * double(s.out() + s.fan_in());
    layers.push_back({layer, s.str(), spec.kind, n});
    return std::make_shared<ShapeOnly>(s);
  };
  // Building draws biases and embeddings from the global generator: the real build must not notice.
  auto gen = at::detail::getDefaultCPUGenerator();
  auto rng_state = gen.get_state();
  NetworkPtr net;
  try {
    net = network_build(cfg, ds, probe);  // also check_layer_options
  } catch (...) {
    gen.set_state(rng_state);
    throw;
  }
  gen.set_state(rng_state);
  double scalars = 0;
  for (const auto& l : layers) scalars += l.scalars;
  for (auto& t : net->parameters()) scalars += double(t.numel());  // biases, norms, embeddings
  const double elem = cfg.get_string("dtype") == "float64" ? 8 : 4;
  const double need = scalars * elem * copies, have = memory_limit_bytes();
  if (cfg.get_string("device") != "cuda" && need > have) {
    std::sort(layers.begin(), layers.end(), [](const Layer& a, const Layer& b) { return a.scalars > b.scalars; });
    std::string big;
    for (size_t i = 0; i < layers.size() && i < 3; ++i)
      big += fmt::format("{}{} {} {} ({:.3g} scalars)", i ? ", " : "", layers[i].name, layers[i].kind, layers[i].shape,
                         layers[i].scalars);
    cfg.fail(
        cfg.get_string("model.kind") == "mlp" ? "model.widths" : "model.kind",
        fmt::format("the network holds at least {:.4g} scalars ({:.1f} GiB of {}{}), more than "
                    "the {:.1f} GiB this process may use; largest layers: {}",
                    scalars, need / 1073741824.0, cfg.get_string("dtype"),
                    copies > 1 ? fmt::format(" with training's {:.0f} copies", copies) : "", have / 1073741824.0, big));
  }
}

NetworkPtr network_collapse(const config::Config& cfg, const data::Dataset& ds, Network& net) {
  torch::NoGradGuard ng;
  std::map<std::string, param::ParamPtr> by_name;
  for (auto& s : net.slots()) by_name[s.name] = s.param;
  // Building draws initial values from the global RNG; keep the training stream untouched.
  auto gen = at::detail::getDefaultCPUGenerator();
  auto rng_state = gen.get_state();
  auto dense =
      network_build(cfg, ds, param::factory_collapsed([&](const std::string& layer) {
                      auto it = by_name.find(layer);
                      XPAND_CHECK(it != by_name.end(), "collapse: layer {} missing from the source network", layer);
                      return it->second;
                    }));
  gen.set_state(rng_state);
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
    auto plan = s.param->plan(batch * s.rows_per_sample, s.input_grad);
    l.order = plan.order;
    l.trainable = s.param->trainable_count();
    l.collapsed = s.param->collapsible()
                      ? s.param->collapsed_count() + (s.param->has_bias() ? s.param->shape().out() : 0)
                      : [&] {  // a nonlinear expansion keeps all its tensors
                          int64_t n = 0;
                          for (const auto& t : s.param->parameters()) n += t.numel();
                          return n;
                        }();
    l.flops = plan.flops;
    l.act_first_flops = plan.act_first_flops;
    l.memory_bytes = plan.memory_bytes;
    l.cut = s.param->cut_numel();
    r.layers.push_back(l);
    slot_prefixes.push_back(s.name + ".");
  }
  LayerReport other;
  other.name = "(other)";
  other.kind = other.order = "-";
  other.shape = "biases, norms, embeddings";
  for (auto& kv : net.named_parameters()) {
    bool in_slot = false;
    for (const auto& p : slot_prefixes) in_slot |= kv.key().compare(0, p.size(), p) == 0;
    if (in_slot) continue;
    other.collapsed += kv.value().numel();
    if (kv.value().requires_grad()) other.trainable += kv.value().numel(), other.cut += kv.value().numel();
  }
  if (other.collapsed > 0) r.layers.push_back(other);
  for (const auto& e : net.extra_costs()) {
    LayerReport l;
    l.name = e.name;
    l.kind = l.shape = l.order = "-";
    l.flops = l.act_first_flops = e.flops_per_sample * double(batch);
    r.layers.push_back(l);
  }
  for (const auto& l : r.layers) {
    r.trainable += l.trainable, r.collapsed += l.collapsed, r.flops += l.flops;
    r.act_first_flops += l.act_first_flops, r.cut += l.cut;
  }
  return r;
}

}  // namespace xpand::model
