// The rotate schedule: exactly one expanded layer at any time, the network function unchanged
// across every switch (float64), optimizer state reset only for the switched layers, and layers
// that cannot be re-expanded exactly are refused.
#include <gtest/gtest.h>

#include "config/config.h"
#include "core/error.h"
#include "data/dataset.h"
#include "model/network.h"
#include "train/expand_schedule.h"
#include "train/optim.h"

using namespace xpand;

TEST(ExpandSchedule, RotateKeepsOneExpandedLayerAndTheFunction) {
  data::Dataset ds;
  ds.sample_shape = {12};
  ds.num_classes = 5;
  auto cfg = config::Config::load_string(
      "model: {widths: [12, 16, 16, 5]}\nparam: {kind: expanded, factor: 2, depth: 3}\n"
      "expand: {schedule: rotate, period: 2}\n",
      "rotate.yaml");
  torch::manual_seed(0);
  auto net = model::network_build(cfg, ds, param::factory_from_config(cfg));
  net->to(torch::kFloat64);
  train::ExpandSchedule sched(cfg, *net, 7);
  auto opt = train::optimizer_build(cfg, net->parameters());
  auto x = torch::randn({6, 12}, torch::kFloat64);
  auto expanded_layers = [&] {
    std::vector<std::string> names;
    for (auto& s : net->slots())
      if (!std::dynamic_pointer_cast<param::Expanded>(s.param)->is_collapsed()) names.push_back(s.name);
    return names;
  };
  EXPECT_EQ(expanded_layers(), std::vector<std::string>{"fc1"});
  std::vector<std::string> seen;
  for (int64_t step = 0; step < 12; ++step) {
    auto before = net->forward(x).detach();
    bool switched = sched.before_step(step, *opt);
    EXPECT_EQ(switched, step > 0 && step % 2 == 0) << step;
    auto after = net->forward(x).detach();
    EXPECT_LE((after - before).abs().max().item<double>() / before.abs().max().item<double>(), 1e-10) << step;
    auto now = expanded_layers();
    ASSERT_EQ(now.size(), 1u) << step;
    seen.push_back(now[0]);
    // One optimizer step so every live tensor has state.
    opt->zero_grad();
    net->forward(x).pow(2).sum().backward();
    opt->step();
    if (switched) {
      // The layers just switched have no state yet; the third layer kept its state.
      size_t with_state = 0;
      for (auto& p : net->parameters())
        if (opt->state().count(train::optimizer_state_key(p))) ++with_state;
      EXPECT_GT(with_state, 0u);
    }
  }
  EXPECT_EQ(seen[0], "fc1");
  EXPECT_EQ(seen[2], "fc2");
  EXPECT_EQ(seen[4], "fc3");
  EXPECT_EQ(seen[6], "fc1");
}

TEST(ExpandSchedule, RefusesLayersThatCannotBeReexpanded) {
  data::Dataset ds;
  ds.sample_shape = {12};
  ds.num_classes = 5;
  for (const char* param : {"{kind: expanded, factor: 2, depth: 3, residual: every}",
                            "{kind: expanded, factor: 0.2, depth: 3}", "{kind: dense}"}) {
    auto cfg = config::Config::load_string(
        std::string("model: {widths: [12, 16, 16, 5]}\nparam: ") + param + "\nexpand: {schedule: rotate}\n", "r.yaml");
    auto net = model::network_build(cfg, ds, param::factory_from_config(cfg));
    EXPECT_THROW(train::ExpandSchedule(cfg, *net, 1), ConfigError) << param;
  }
}
