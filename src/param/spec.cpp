// Per-layer option resolution and the check that every option set is used (see spec.h, param.h).
#include "param/spec.h"

#include <fmt/format.h>
#include <fnmatch.h>

#include <map>
#include <set>

#include "core/error.h"
#include "param/param.h"

namespace xpand::param {

namespace {

// layers.<pattern>.<field> keys present in the config: (pattern, field, key).
struct LayerKey {
  std::string pattern, field, key;
};
std::vector<LayerKey> layer_keys(const config::Config& cfg) {
  std::vector<LayerKey> out;
  const std::string prefix = "layers.";
  for (const auto& k : cfg.keys()) {
    if (k.compare(0, prefix.size(), prefix) != 0) continue;
    size_t last = k.rfind('.');
    out.push_back({k.substr(prefix.size(), last - prefix.size()), k.substr(last + 1), k});
  }
  return out;
}

bool glob(const std::string& pattern, const std::string& name) {
  return fnmatch(pattern.c_str(), name.c_str(), 0) == 0;
}

// The kinds that read each option; "kind" itself is read by every layer.
const std::map<std::string, std::set<std::string>>& readers() {
  static const std::map<std::string, std::set<std::string>> r = {
      {"factor", {"expanded"}},
      {"depth", {"expanded"}},
      {"residual", {"expanded"}},
      {"residual_every", {"expanded"}},
      {"learnable_residual", {"expanded"}},
      {"batch_norm", {"expanded"}},
      {"factor_bias", {"expanded"}},
      {"conv", {"expanded"}},
      {"kernels", {"expanded"}},
      {"rank", {"lowrank", "lora"}},
      {"init", {"lowrank"}},
      {"init_from", {"lowrank", "lora"}},
      {"init_step", {"lowrank", "lora"}},
      {"lora_alpha", {"lora"}},
      {"order", {"expanded", "lowrank", "lora"}},
      {"omega_dim", {"subspace"}},
      {"projection", {"subspace"}},
      {"max_projection_bytes", {"subspace"}},
      {"anchor", {"subspace"}},
  };
  return r;
}

}  // namespace

std::string Spec::key_of(const std::string& field) const {
  for (const auto& [f, k] : sources)
    if (f == field) return k;
  return "param." + field;
}

void Spec::fail(const std::string& field, const std::string& msg) const {
  throw ConfigError(fmt::format("{} (layer {}): {}", key_of(field), layer, msg));
}

Spec spec_for(const config::Config& cfg, const std::string& layer) {
  Spec s;
  s.layer = layer;
  auto keys = layer_keys(cfg);
  // The key that provides `field` for this layer: at most one matching layers.* pattern, else param.*.
  auto source = [&](const std::string& field) {
    std::string found;
    for (const auto& lk : keys)
      if (lk.field == field && glob(lk.pattern, layer)) {
        if (!found.empty())
          cfg.fail(lk.key, fmt::format("layer {} is matched by both {} and {}; keep one", layer, found, lk.key));
        found = lk.key;
      }
    if (found.empty()) found = "param." + field;
    s.sources.emplace_back(field, found);
    return found;
  };
  s.kind = cfg.get_string(source("kind"));
  s.factor = cfg.get_float(source("factor"));
  s.depth = cfg.get_int(source("depth"));
  s.residual = cfg.get_string(source("residual"));
  s.residual_every = cfg.get_int(source("residual_every"));
  s.learnable_residual = cfg.get_bool(source("learnable_residual"));
  s.batch_norm = cfg.get_bool(source("batch_norm"));
  s.factor_bias = cfg.get_bool(source("factor_bias"));
  s.conv = cfg.get_string(source("conv"));
  s.kernels = cfg.get_ints(source("kernels"));
  s.rank = cfg.get_int(source("rank"));
  s.init = cfg.get_string(source("init"));
  s.init_from = cfg.get_string(source("init_from"));
  s.init_step = cfg.get_int(source("init_step"));
  s.lora_alpha = cfg.get_float(source("lora_alpha"));
  s.order = cfg.get_string(source("order"));
  // Subspace options are the whole network's: read once from param.* (train/subspace.h).
  // Subspace layers share one omega: its options are read once from param.* (train/subspace.h).
  for (const char* field : {"omega_dim", "projection", "max_projection_bytes", "anchor"}) {
    const std::string key = source(field);
    if (key != std::string("param.") + field)
      cfg.fail(key, fmt::format("every subspace layer shares one omega: set param.{}", field));
  }
  if (s.init_from.empty() && cfg.has("model.init_from")) {  // the network-wide source, with its step
    s.init_from = cfg.get_string("model.init_from");
    s.init_step = cfg.get_int("model.init_step");
  }
  if (cfg.get_string("param.kind") == "subspace" && s.kind != "subspace")
    cfg.fail(s.key_of("kind"), fmt::format("with param.kind: subspace every layer trains in the subspace; layer {} "
                                           "cannot be {}",
                                           layer, s.kind));
  return s;
}

void check_layer_options(const config::Config& cfg, const std::vector<std::string>& layers) {
  for (const auto& lk : layer_keys(cfg)) {
    bool any = false;
    for (const auto& l : layers) any |= glob(lk.pattern, l);
    if (!any) {
      std::string names;
      for (const auto& l : layers) names += (names.empty() ? "" : ", ") + l;
      cfg.fail(lk.key, fmt::format("'{}' matches no layer of this network (layers: {})", lk.pattern, names));
    }
  }
  // Which options are read, by the kinds the layers resolved to.
  std::map<std::string, bool> read;  // config key -> read by some layer
  for (const auto& l : layers) {
    Spec s = spec_for(cfg, l);
    for (const auto& [field, key] : s.sources) {
      auto it = readers().find(field);
      bool reads = it == readers().end() || it->second.count(s.kind) > 0;
      read[key] = read[key] || reads;
    }
  }
  for (const auto& [key, was_read] : read) {
    if (was_read || cfg.location(key).source == "<default>" || cfg.location(key).source == "<unset>") continue;
    std::string field = key.substr(key.rfind('.') + 1);
    std::string kinds;
    for (const auto& k : readers().at(field)) kinds += (kinds.empty() ? "" : " or ") + k;
    cfg.fail(key, fmt::format("is set but no layer it applies to has kind {}", kinds));
  }
}

}  // namespace xpand::param
