// Per-layer option resolution and the check that every option set is used (see spec.h, param.h).
#include "param/spec.h"

#include <fmt/format.h>
#include <fnmatch.h>

#include <algorithm>
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

}  // namespace

std::string Spec::key_of(const std::string& field) const {
  for (const auto& [f, k] : sources)
    if (f == field) return k;
  return "param." + field;
}

const config::Config& Spec::config() const {
  XPAND_CHECK(cfg != nullptr, "layer {}: option read from a Spec not resolved from a config (spec_for)", layer);
  return *cfg;
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
  s.cfg = &cfg;
  for (const auto& f : config::param_fields()) source(f.key);  // every option resolves to one key
  s.kind = s.get_string("kind");
  s.factor = s.get_float("factor");
  s.depth = s.get_int("depth");
  s.residual = s.get_string("residual");
  s.residual_every = s.get_int("residual_every");
  s.learnable_residual = s.get_bool("learnable_residual");
  s.batch_norm = s.get_bool("batch_norm");
  s.factor_bias = s.get_bool("factor_bias");
  s.first_bias = s.get_bool("first_bias");
  s.nonlinear = s.get_bool("nonlinear");
  s.expand_input = s.get_bool("expand_input");
  s.residual_intervals = s.get_ints("residual_intervals");
  s.batch_norm_at = s.get_string("batch_norm_at");
  s.negative_slope = s.get_float("negative_slope");
  s.width_of = s.get_string("width_of");
  s.conv = s.get_string("conv");
  s.kernels = s.get_ints("kernels");
  s.rank = s.get_int("rank");
  s.init = s.get_string("init");
  s.init_from = s.get_string("init_from");
  s.init_step = s.get_int("init_step");
  s.lora_alpha = s.get_float("lora_alpha");
  s.order = s.get_string("order");
  // A network-wide kind's options (the subspace's shared omega) are read once, from param.*.
  for (const auto& k : kinds()) {
    if (!k.network_wide) continue;
    for (const auto& d : k.options) {
      const std::string key = s.key_of(d.key);
      if (key != "param." + d.key)
        cfg.fail(key, fmt::format("every {} layer shares one {}: set param.{}", k.name, k.shared_what, d.key));
    }
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

bool Spec::non_default(const std::string& field) const { return cfg && !cfg->at_default(key_of(field)); }

std::string Spec::init_for(const std::vector<std::string>& accepted) const {
  if (std::find(accepted.begin(), accepted.end(), init) != accepted.end()) return init;
  if (key_of("init").rfind("param.", 0) == 0) return "default";
  fail("init", fmt::format("a {} layer takes init {}, not {}", kind, fmt::join(accepted, ", "), init));
}

void check_layer_options(const config::Config& cfg, const std::vector<std::string>& layers,
                         const std::vector<bool>& is_conv) {
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
  std::map<std::string, bool> read;          // config key -> read by some layer
  std::map<std::string, std::string> wrong;  // config key -> a layer of its kind but the other type
  for (size_t i = 0; i < layers.size(); ++i) {
    const bool conv = i < is_conv.size() && is_conv[i];
    Spec s = spec_for(cfg, layers[i]);
    for (const auto& [field, key] : s.sources) {
      const bool reads = kind_reads(s.kind, field, conv);
      read[key] = read[key] || reads;
      if (!reads && kind_reads(s.kind, field, !conv) && !wrong.count(key))
        wrong[key] = fmt::format("layer {} is a {} {} layer, which does not take {} (only {} {} layers do)", layers[i],
                                 conv ? "conv" : "linear", s.kind, field, conv ? "linear" : "conv", s.kind);
    }
  }
  for (const auto& [key, was_read] : read) {
    if (was_read || cfg.location(key).source == "<default>" || cfg.location(key).source == "<unset>") continue;
    if (wrong.count(key)) cfg.fail(key, wrong.at(key));
    std::string field = key.substr(key.rfind('.') + 1);
    std::string kinds;
    auto readers = option_readers(field);
    std::sort(readers.begin(), readers.end());
    for (const auto& k : readers) kinds += (kinds.empty() ? "" : " or ") + k;
    cfg.fail(key, fmt::format("is set but no layer it applies to has kind {}", kinds));
  }
}

}  // namespace xpand::param
