// The table of parameterization kinds: adding a kind is one new file and one line here.
#include <fmt/format.h>

#include "core/error.h"
#include "param/dense.h"
#include "param/param.h"

namespace xpand::param {

const std::vector<KindInfo>& kinds() {
  static const std::vector<KindInfo> table = {
      {"dense", "one trainable matrix per layer (the baseline and the collapsed form)",
       [](const std::string&, const WeightShape& s, const Init& init, const config::Config&) {
         return std::make_shared<Dense>(s, init);
       }},
  };
  return table;
}

std::vector<std::string> kind_names() {
  std::vector<std::string> names;
  for (const auto& k : kinds()) names.push_back(k.name);
  return names;
}

Factory factory_from_config(const config::Config& cfg) {
  const std::string& name = cfg.get_string("param.kind");
  for (const auto& k : kinds())
    if (k.name == name) {
      auto make = k.make;
      return [make, &cfg](const std::string& layer, const WeightShape& s, const Init& init) {
        return make(layer, s, init, cfg);
      };
    }
  cfg.fail("param.kind", fmt::format("no parameterization named '{}'", name));
}

Factory factory_collapsed(const std::function<torch::Tensor(const std::string& layer)>& weight_of) {
  return [weight_of](const std::string& layer, const WeightShape& s, const Init&) -> ParamPtr {
    torch::NoGradGuard ng;
    torch::Tensor w = weight_of(layer);
    XPAND_CHECK(w.sizes().vec() == s.dims, "collapse of layer {}: weight shape mismatch", layer);
    return std::make_shared<Dense>(s, w);
  };
}

}  // namespace xpand::param
