// The table of parameterization kinds: adding a kind is one new file and one line here.
#include <fmt/format.h>

#include "core/error.h"
#include "param/dense.h"
#include "param/expanded.h"
#include "param/expanded_conv.h"
#include "param/lowrank.h"
#include "param/param.h"
#include "param/spec.h"

namespace xpand::param {

namespace {
template <typename T>
ParamPtr make_linear_only(const Spec& s, const WeightShape& shape, const Init& init) {
  if (shape.is_conv())
    s.fail("kind", fmt::format("kind {} is for linear layers; this layer is a {} convolution", s.kind, shape.str()));
  return std::make_shared<T>(s, shape, init);
}
}  // namespace

const std::vector<KindInfo>& kinds() {
  static const std::vector<KindInfo> table = {
      {"dense", "one trainable matrix per layer (the baseline and the collapsed form)",
       [](const Spec&, const WeightShape& s, const Init& init) { return std::make_shared<Dense>(s, init); }},
      {"expanded", "product of depth factors through width factor x max(in, out); conv: cl, ck or a kernel list",
       [](const Spec& s, const WeightShape& shape, const Init& init) -> ParamPtr {
         if (shape.is_conv()) return std::make_shared<ExpandedConv>(s, shape, init);
         return std::make_shared<Expanded>(s, shape, init);
       }},
      {"lowrank", "W = B C with rank r", make_linear_only<LowRank>},
      {"lora", "frozen W0 + (alpha/r) B A adapters", make_linear_only<Lora>},
      {"subspace", "dense layers whose parameters move together in theta0 + P omega (train/subspace.h)",
       [](const Spec&, const WeightShape& s, const Init& init) { return std::make_shared<Dense>(s, init); }},
  };
  return table;
}

std::vector<std::string> kind_names() {
  std::vector<std::string> names;
  for (const auto& k : kinds()) names.push_back(k.name);
  return names;
}

Factory factory_from_config(const config::Config& cfg) {
  return [&cfg](const std::string& layer, const WeightShape& shape, const Init& init) -> ParamPtr {
    Spec spec = spec_for(cfg, layer);
    for (const auto& k : kinds())
      if (k.name == spec.kind) return k.make(spec, shape, init);
    cfg.fail(spec.key_of("kind"), fmt::format("no parameterization named '{}'", spec.kind));
  };
}

Factory factory_collapsed(const std::function<ParamPtr(const std::string& layer)>& of) {
  return [of](const std::string& layer, const WeightShape& s, const Init&) -> ParamPtr {
    torch::NoGradGuard ng;
    ParamPtr src = of(layer);
    torch::Tensor w = src->weight();
    XPAND_CHECK(w.sizes().vec() == s.dims, "collapse of layer {}: weight shape mismatch", layer);
    return std::make_shared<Dense>(s, w, src->bias());
  };
}

}  // namespace xpand::param
