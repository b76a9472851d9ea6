// A parameterization kind added in one file: this file is the whole of kind "scaled" (W = g·V, a
// trainable gain g times a dense matrix V, with its option `scaled_gain`), registered with one
// RegisterKind line and known to nothing else in xpand. The tests check that everything the
// registry claims to derive follows from that: the schema's param.kind choices and its param.* and
// layers.*.* keys, the option checks (set for a layer of another kind: a config error), training
// through the whole trainer (one rank, cut, evaluation on the collapsed network), and starting from
// a snapshot's dense weight through the kind's init_from hook.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "../test_util.h"
#include "config/config.h"
#include "core/error.h"
#include "data/dataset.h"
#include "model/network.h"
#include "param/dense.h"
#include "param/param.h"
#include "param/spec.h"
#include "store/run_file.h"
#include "train/trainer.h"

namespace xpand::param {
namespace {

// W = g·V: g a trainable scalar starting at param.scaled_gain, V (out × in) with the dense init
// divided by g (W starts with the dense layer's distribution).
class Scaled : public Parameterization {
 public:
  Scaled(const Spec& spec, WeightShape shape, const Init& init) : Parameterization(std::move(shape)) {
    const double g0 = spec.get_float("scaled_gain");  // its own option, read by name
    auto v = torch::empty(shape_.dims, alloc_options());
    init_fill(v, init);
    if (!shape_only()) v.div_(g0);
    v_ = register_parameter("v", v);
    g_ = register_parameter("g", torch::full({}, g0, alloc_options()));
  }
  std::string kind() const override { return "scaled"; }
  torch::Tensor weight() override { return g_ * v_; }
  bool cut_at_weight() override { return false; }  // V and g are not fewer than W
  void set_weight(const torch::Tensor& w) {
    torch::NoGradGuard ng;
    v_.copy_(w / g_.item<double>());
  }

 private:
  torch::Tensor v_, g_;
};

KindInfo scaled_kind() {
  KindInfo k;
  k.name = "scaled";
  k.doc = "W = g V with a trainable gain g (a test-only kind)";
  k.options = {config::key_range(config::key_def("scaled_gain", config::Type::Float, "1", "scaled: initial gain g"), 0,
                                 std::numeric_limits<double>::infinity(), true)};
  k.make = [](const Spec& s, const WeightShape& shape, const Init& init) -> ParamPtr {
    return std::make_shared<Scaled>(s, shape, init);
  };
  k.init_from_weights = [](Parameterization& layer, const Spec&, const torch::Tensor& w0) {
    dynamic_cast<Scaled&>(layer).set_weight(w0);
  };
  return k;
}

const RegisterKind kRegisterScaled{scaled_kind()};  // the one registry line

const char* kTeacher =
    "data: {name: teacher, batch_size: 32, train_size: 512, test_size: 128, teacher_inputs: 8, teacher_classes: 3}\n"
    "model: {kind: mlp, widths: [8, 16, 3]}\n"
    "dtype: float64\n"
    "train: {epochs: 0, max_steps: 20, lr: 0.01, eval_every: 10}\n";

}  // namespace

TEST(KindOneFile, TheSchemaKnowsTheKindAndItsOption) {
  const auto names = kind_names();
  EXPECT_NE(std::find(names.begin(), names.end(), "scaled"), names.end());
  bool global = false, per_layer = false, choice = false;
  for (const auto& d : config::schema()) {
    global |= d.key == "param.scaled_gain";
    per_layer |= d.key == "layers.*.scaled_gain";
    if (d.key == "param.kind") choice = std::count(d.choices.begin(), d.choices.end(), "scaled") == 1;
  }
  EXPECT_TRUE(global);
  EXPECT_TRUE(per_layer);
  EXPECT_TRUE(choice);
  EXPECT_EQ(option_readers("scaled_gain"), std::vector<std::string>{"scaled"});
  // Its option is validated like any built-in one.
  EXPECT_THROW(config::Config::load_string(kTeacher, "bad.yaml", {"param.scaled_gain=-1"}), ConfigError);
}

TEST(KindOneFile, ItsOptionOnAnotherKindIsAConfigError) {
  auto cfg = config::Config::load_string(kTeacher, "x.yaml", {"layers.fc1.scaled_gain=2"});
  try {
    check_layer_options(cfg, {"fc1", "fc2"});
    ADD_FAILURE() << "scaled_gain on a dense layer was accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("layers.fc1.scaled_gain: is set but no layer it applies to has kind scaled"),
              std::string::npos)
        << e.what();
  }
  check_layer_options(
      config::Config::load_string(kTeacher, "x.yaml", {"layers.fc1.kind=scaled", "layers.fc1.scaled_gain=2"}),
      {"fc1", "fc2"});
}

TEST(KindOneFile, TrainsAndStartsFromASnapshot) {
  test::TempDir dir;
  train::RunOptions o;
  o.console = false;
  o.update_index = false;
  auto cfg = config::Config::load_string(
      kTeacher, "scaled.yaml",
      {"layers.fc1.kind=scaled", "layers.fc1.scaled_gain=0.5", "output.dir=" + dir.path().string()});
  auto run = train::run_train(cfg, o);
  ASSERT_EQ(run.status, "completed");
  EXPECT_LT(run.losses.back(), run.losses.front());
  EXPECT_LE(run.final_eval.collapse_error, 1e-12);
  int64_t scaled = 0;
  for (auto& slot : run.network->slots())
    if (slot.param->kind() == "scaled") {
      ++scaled;
      EXPECT_EQ(slot.param->trainable_count(), 16 * 8 + 1);
      auto g = slot.param->named_parameters()["g"].item<double>();
      EXPECT_NE(g, 0.5);  // the gain trained
    }
  EXPECT_EQ(scaled, 1);
  EXPECT_EQ(store::RunReader(run.path).attr_int("trainable_params"), 16 * 8 + 1 + 16 + 3 * 16 + 3);

  // The dense run's snapshot through the kind's init_from hook: W = g V equals the snapshot's weight.
  auto dense =
      train::run_train(config::Config::load_string(kTeacher, "dense.yaml", {"output.dir=" + dir.path().string()}), o);
  ASSERT_EQ(dense.status, "completed");
  auto from = config::Config::load_string(
      kTeacher, "from.yaml",
      {"layers.fc1.kind=scaled", "layers.fc1.scaled_gain=4", "model.init_from=" + dense.path, "train.max_steps=1",
       "train.lr=1e-300", "output.dir=" + dir.path().string()});
  data::Dataset ds = data::dataset_load(from, torch::kCPU);
  auto net = model::network_build(from, ds, factory_from_config(from));
  net->to(torch::kCPU, torch::kFloat64);
  train::init_from_run(from, *net);
  for (auto& slot : net->slots()) {
    auto want = train::snapshot_array(dense.path, 0, slot.name, "weight", slot.param->shape().dims);
    EXPECT_LE((slot.param->weight().detach() - want).abs().max().item<double>(),
              1e-15 * want.abs().max().item<double>())
        << slot.name;
  }
}

}  // namespace xpand::param
