// Expansion schedule (see expand_schedule.h).
#include "train/expand_schedule.h"

#include <fmt/format.h>

#include "core/error.h"
#include "core/log.h"
#include "train/optim.h"

namespace xpand::train {

ExpandSchedule::ExpandSchedule(const config::Config& cfg, model::Network& net, uint64_t seed)
    : rotate_(cfg.get_string("expand.schedule") == "rotate"), period_(cfg.get_int("expand.period")), seed_(seed) {
  if (!rotate_) return;
  for (auto& s : net.slots()) {
    auto e = std::dynamic_pointer_cast<param::Expanded>(s.param);
    if (!e) continue;
    std::string why;
    if (!e->can_rotate(&why)) cfg.fail("expand.schedule", fmt::format("rotate: layer {} {}", s.name, why));
    layers_.emplace_back(s.name, e);
  }
  if (layers_.empty()) cfg.fail("expand.schedule", "rotate needs at least one expanded linear layer");
  for (size_t i = 1; i < layers_.size(); ++i) layers_[i].second->collapse_in_place();
}

const std::string& ExpandSchedule::current() const {
  static const std::string none;
  return layers_.empty() ? none : layers_[cur_].first;
}

void ExpandSchedule::restore(int64_t index) {
  if (!rotate_) return;
  if (index < 0 || size_t(index) >= layers_.size())
    throw Error(
        fmt::format("checkpoint names expanded layer {} of a rotate schedule over {} layers", index, layers_.size()));
  if (size_t(index) == cur_) return;
  layers_[cur_].second->collapse_in_place();
  layers_[size_t(index)].second->expand_in_place(seed_);
  cur_ = size_t(index);
}

bool ExpandSchedule::before_step(int64_t step, torch::optim::Optimizer& opt) {
  if (!rotate_ || layers_.size() < 2 || step == 0 || step % period_ != 0) return false;
  size_t next = (cur_ + 1) % layers_.size();
  auto& from = *layers_[cur_].second;
  auto& to = *layers_[next].second;
  from.collapse_in_place();
  to.expand_in_place(seed_ * 1000003ull + uint64_t(step));
  // The optimizer holds the same tensor objects (their data was replaced): drop their state and
  // their gradients, which have the old shapes.
  for (auto* m : {&from, &to})
    for (auto& p : m->parameters()) {
      opt.state().erase(optimizer_state_key(p));
      p.mutable_grad() = torch::Tensor();
    }
  log::debug("step {}: expanded layer {} -> {}", step, layers_[cur_].first, layers_[next].first);
  cur_ = next;
  return true;
}

}  // namespace xpand::train
