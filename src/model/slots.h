// Which of a network's tensors lie outside its layers (slots): batch norm, embeddings, layer norms.
#pragma once
#include <string>
#include <vector>

#include "model/network.h"

namespace xpand::model {

// A name from named_parameters() / named_buffers() is outside the slots unless it is a slot's own
// tensor ("fc1.w1") or a slot's network bias ("fc1_bias", which the collapsed layer folds in).
class OutsideSlots {
 public:
  explicit OutsideSlots(Network& net) {
    for (auto& s : net.slots()) prefixes_.insert(prefixes_.end(), {s.name + ".", s.name + "_bias"});
  }
  bool operator()(const std::string& name) const {
    for (const auto& p : prefixes_)
      if (name.compare(0, p.size(), p) == 0) return false;
    return true;
  }

 private:
  std::vector<std::string> prefixes_;
};

}  // namespace xpand::model
