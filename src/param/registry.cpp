// The table of parameterization kinds: adding a kind is one new file and one line here (or a
// static RegisterKind in its file). The schema's param.* keys come from these entries.
#include <fmt/format.h>

#include <algorithm>
#include <set>

#include "core/error.h"
#include "param/dense.h"
#include "param/expanded.h"
#include "param/lowrank.h"
#include "param/param.h"
#include "param/spec.h"

namespace xpand::param {

namespace {

struct Table {
  std::vector<KindInfo> kinds;
  size_t builtin = 0;  // kinds[0, builtin) are the built-ins
};

Table& table() {
  static Table t = [] {
    Table x;
    x.kinds = {
        dense_kind(),     // dense.cpp
        expanded_kind(),  // expanded.cpp (conv: expanded_conv.cpp)
        lowrank_kind(),   // lowrank.cpp
        lora_kind(),      // lowrank.cpp
        subspace_kind(),  // dense.cpp (the optimizer side: train/subspace.cpp)
    };
    x.builtin = x.kinds.size();
    return x;
  }();
  return t;
}

// Options every kind may read, defined by the registry rather than by a kind.
config::KeyDef order_option() {
  return config::key_choices(config::key_def("order", config::Type::String, "auto",
                                             "contraction order: auto (planner: cheapest exact order), activation (x "
                                             "through each factor) or weight (factors multiplied first)"),
                             {"auto", "activation", "weight"});
}

// "kind", the built-in kinds' options, "order", then the registered kinds' options: the order of
// the resolved config (and so of run ids) for the built-in kinds does not depend on what else
// registers. An option two kinds define must be defined identically.
bool& schema_built() {
  static bool built = false;
  return built;
}

std::vector<config::KeyDef> param_field_defs() {
  schema_built() = true;
  const Table& t = table();
  std::vector<config::KeyDef> out = {config::key_choices(
      config::key_def("kind", config::Type::String, "dense", "parameterization of linear and conv weights"),
      kind_names())};
  auto add = [&](const config::KeyDef& d, const std::string& kind) {
    auto same = std::find_if(out.begin(), out.end(), [&](const config::KeyDef& o) { return o.key == d.key; });
    if (same == out.end()) return out.push_back(d);
    XPAND_CHECK(same->type == d.type && same->default_yaml == d.default_yaml && same->choices == d.choices,
                "parameterization {} defines option {} differently from an earlier kind", kind, d.key);
  };
  for (size_t i = 0; i < t.builtin; ++i)
    for (const auto& d : t.kinds[i].options) add(d, t.kinds[i].name);
  add(order_option(), "(registry)");
  for (size_t i = t.builtin; i < t.kinds.size(); ++i)
    for (const auto& d : t.kinds[i].options) add(d, t.kinds[i].name);
  return out;
}

// The schema learns the kinds' options before main(); nothing reads a config earlier.
const bool kFieldsProvided = (config::set_param_fields(param_field_defs), true);

}  // namespace

RegisterKind::RegisterKind(KindInfo kind) {
  XPAND_CHECK(find_kind(kind.name) == nullptr, "parameterization kind {} registered twice", kind.name);
  XPAND_CHECK(!schema_built(),
              "parameterization kind {} registered after the config schema was built (register "
              "with a static RegisterKind, before main)",
              kind.name);
  table().kinds.push_back(std::move(kind));
}

const std::vector<KindInfo>& kinds() {
  (void)kFieldsProvided;
  return table().kinds;
}

std::vector<std::string> kind_names() {
  std::vector<std::string> names;
  for (const auto& k : kinds()) names.push_back(k.name);
  return names;
}

const KindInfo* find_kind(const std::string& name) {
  for (const auto& k : table().kinds)
    if (k.name == name) return &k;
  return nullptr;
}

std::vector<std::string> option_readers(const std::string& field) {
  std::vector<std::string> out;
  for (const auto& k : kinds()) {
    bool reads = std::find(k.also_reads.begin(), k.also_reads.end(), field) != k.also_reads.end();
    for (const auto& d : k.options) reads |= d.key == field;
    if (reads) out.push_back(k.name);
  }
  return out;
}

bool kind_reads(const std::string& kind, const std::string& field, bool conv) {
  if (field == "kind") return true;
  const auto readers = option_readers(field);
  if (std::find(readers.begin(), readers.end(), kind) == readers.end()) return false;
  const KindInfo* k = find_kind(kind);
  const auto& other = conv ? k->linear_only : k->conv_only;
  return std::find(other.begin(), other.end(), field) == other.end();
}

Factory factory_from_config(const config::Config& cfg) {
  return [&cfg](const std::string& layer, const WeightShape& shape, const Init& init) -> ParamPtr {
    Spec spec = spec_for(cfg, layer);
    if (const KindInfo* k = find_kind(spec.kind)) return k->make(spec, shape, init);
    cfg.fail(spec.key_of("kind"), fmt::format("no parameterization named '{}'", spec.kind));
  };
}

Factory factory_collapsed(const std::function<ParamPtr(const std::string& layer)>& of) {
  return [of](const std::string& layer, const WeightShape& s, const Init&) -> ParamPtr {
    torch::NoGradGuard ng;
    ParamPtr src = of(layer);
    if (!src->collapsible()) return src;  // not one linear map: the collapsed network evaluates it as it is
    torch::Tensor w = src->weight();
    XPAND_CHECK(w.sizes().vec() == s.dims, "collapse of layer {}: weight shape mismatch", layer);
    return std::make_shared<Dense>(s, w, src->bias());
  };
}

}  // namespace xpand::param
