// The collapse check (train/collapse_check.h): collapse_error compares the network in its expanded
// form with the collapsed network, two different computations, so it can fail. Shown here by
// injecting wrong collapses: a factor changed after collapsing, and a layer whose W_eff is wrong
// (the case a comparison through W_eff on both sides, as evaluation once did, reads as 0).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "config/config.h"
#include "data/dataset.h"
#include "model/network.h"
#include "param/expanded.h"
#include "param/form.h"
#include "param/spec.h"
#include "train/collapse_check.h"

using namespace xpand;

namespace {

constexpr uint64_t kSeed = 20201207;

data::Dataset image_meta() {
  data::Dataset ds;
  ds.name = "images";
  ds.sample_shape = {1, 28, 28};
  ds.num_classes = 10;
  return ds;
}

const char* kExpandedMlp =
    "model: {widths: [784, 32, 32, 10]}\nparam: {kind: expanded, factor: 4, depth: 3, order: weight}";

// An expanded layer whose W_eff is off by delta · max|W| in one entry: its activation-first chain is
// right, its collapse is wrong. With order: weight its ordinary forward goes through the wrong W_eff.
class WrongWeight : public param::Expanded {
 public:
  using Expanded::Expanded;
  double delta = 1e-3;
  torch::Tensor weight() override {
    auto w = Expanded::weight();
    auto bump = torch::zeros_like(w);
    bump.index_put_({0, 0}, delta * w.detach().abs().max().item<double>());
    return w + bump;
  }
};

param::Spec wrong_spec(const std::string& layer) {
  param::Spec s;
  s.layer = layer;
  s.kind = "expanded";
  s.factor = 4;
  s.depth = 3;
  s.order = "weight";
  return s;
}

}  // namespace

// A factor of the trained network changed by 1e-3 after collapsing: the collapsed network no longer
// is the trained one, and the metric says so (while the untouched pair reads float32 rounding).
TEST(Collapse, InjectedWrongCollapseIsCaught) {
  std::printf("seed %llu\n", static_cast<unsigned long long>(kSeed));
  torch::manual_seed(kSeed);
  auto ds = image_meta();
  auto cfg = config::Config::load_string(kExpandedMlp, "m.yaml");
  auto net = model::network_build(cfg, ds, param::factory_from_config(cfg));
  net->eval();
  auto collapsed = model::network_collapse(cfg, ds, *net);
  collapsed->eval();
  auto x = torch::randn({64, 1, 28, 28});
  const double clean = train::collapse_error(*net, *collapsed, x);
  EXPECT_LE(clean, 1e-5) << "float32 rounding only";
  EXPECT_GT(clean, 0.0) << "two different computations: exactly 0 would mean the same arithmetic";
  {
    torch::NoGradGuard ng;
    auto& fc2 = dynamic_cast<param::Expanded&>(*net->slots()[1].param);
    fc2.factors()[1].mul_(1 + 1e-3);  // one factor of the middle layer, 1e-3 relative
  }
  const double wrong = train::collapse_error(*net, *collapsed, x);
  std::printf("collapse_error clean %.3g, one factor off by 1e-3: %.3g\n", clean, wrong);
  EXPECT_GT(wrong, 1e-4);
  EXPECT_GT(wrong, 100 * clean);
}

// A layer whose collapse itself is wrong (W_eff off by 1e-3 in one entry). The ordinary forward at
// this batch size is weight-first, through that same W_eff: comparing it with the collapsed network
// reads 0, the blind spot of the old check. The expanded form goes factor by factor and catches it.
TEST(Collapse, WrongWeightIsCaughtWhereAComparisonThroughWeffIsBlind) {
  torch::manual_seed(kSeed + 1);
  auto ds = image_meta();
  auto cfg = config::Config::load_string(kExpandedMlp, "m.yaml");
  auto base = param::factory_from_config(cfg);
  param::Factory make = [&](const std::string& layer, const param::WeightShape& shape, const param::Init& init) {
    if (layer == "fc1") return param::ParamPtr(std::make_shared<WrongWeight>(wrong_spec(layer), shape, init));
    return base(layer, shape, init);
  };
  auto net = model::network_build(cfg, ds, make);
  net->eval();
  ASSERT_EQ(net->slots()[0].param->plan(64, false).order, "weight");  // the ordinary forward uses weight()
  auto collapsed = model::network_collapse(cfg, ds, *net);
  collapsed->eval();
  auto x = torch::randn({64, 1, 28, 28});
  torch::NoGradGuard ng;
  auto a = net->forward(x), b = collapsed->forward(x);
  const double through_weff = (a - b).abs().max().item<double>() / a.abs().max().item<double>();
  const double expanded = train::collapse_error(*net, *collapsed, x);
  std::printf("wrong W_eff: forward through W_eff vs collapsed %.3g, expanded form vs collapsed %.3g\n", through_weff,
              expanded);
  EXPECT_LE(through_weff, 1e-6);  // blind: the same arithmetic on both sides
  EXPECT_GT(expanded, 1e-5);      // caught
}

// The expanded form evaluates every factor: under the scope the forward equals a hand-written
// factor-by-factor chain of the layer's own tensors; outside it (order: weight) it goes through W_eff.
TEST(Collapse, ExpandedFormIsTheFactorChain) {
  torch::manual_seed(kSeed + 2);
  auto spec = wrong_spec("t");
  param::Expanded p(spec, param::WeightShape{{5, 7}}, param::Init::torch_default({{5, 7}}));
  p.to(torch::kFloat64);
  p.eval();
  torch::NoGradGuard ng;
  auto x = torch::randn({9, 7}, torch::kFloat64);
  auto chain = x;
  for (const auto& w : p.factors()) chain = torch::mm(chain, w.t());
  torch::Tensor y;
  {
    param::ExpandedFormScope form;
    EXPECT_TRUE(param::expanded_form());
    y = p.linear(x, {});
  }
  EXPECT_FALSE(param::expanded_form());
  EXPECT_LE((y - chain).abs().max().item<double>(), 1e-13);
  auto ordinary = p.linear(x, {});
  EXPECT_LE((ordinary - torch::mm(x, p.weight().t())).abs().max().item<double>(), 1e-13);  // order: weight
}
