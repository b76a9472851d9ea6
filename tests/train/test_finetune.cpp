// Fine-tuning pieces of the LoRA study (configs/lora/), against independent computations:
// - data.train_classes keeps exactly the training samples of those classes, the test split whole;
// - data.focus_classes: the run file's test_focus_acc / test_rest_acc equal accuracies computed here
//   from the returned network on the test split;
// - snapshots hold each layer's bias; model.init_from starts a dense network at the snapshot (weights
//   and biases), and a lora network with W0 = the snapshot's weight;
// - train.freeze keeps matching tensors bit for bit, and trainable_params counts what the optimizer
//   moves (lora: r (in + out) per layer).
#include <gtest/gtest.h>

#include "../test_util.h"
#include "config/config.h"
#include "core/error.h"
#include "data/dataset.h"
#include "model/network.h"
#include "param/lowrank.h"
#include "param/spec.h"
#include "store/run_file.h"
#include "train/trainer.h"

using xpand::config::Config;
using namespace xpand::train;

namespace {

const char* kBase =
    "data: {name: teacher, batch_size: 32, train_size: 600, test_size: 300, teacher_inputs: 8, teacher_classes: 3}\n"
    "model: {kind: mlp, widths: [8, 24, 24, 3]}\n"
    "dtype: float64\n"
    "train: {epochs: 0, max_steps: 40, lr: 0.01}\n";

torch::Tensor accuracy_on(xpand::model::Network& net, const torch::Tensor& x, const torch::Tensor& y,
                          const torch::Tensor& rows) {
  torch::NoGradGuard ng;
  auto pred = net.forward(x.index_select(0, rows).to(torch::kFloat64)).argmax(-1);  // the run trained in float64
  return pred.eq(y.index_select(0, rows)).to(torch::kFloat64).mean();
}

}  // namespace

TEST(Finetune, TrainClassesFilterTheTrainingSplitOnly) {
  auto all = xpand::data::dataset_load(Config::load_string(kBase, "f.yaml"), torch::kCPU);
  auto some =
      xpand::data::dataset_load(Config::load_string(kBase, "f.yaml", {"data.train_classes=[0, 2]"}), torch::kCPU);
  auto keep = all.train_y.ne(1);
  EXPECT_EQ(some.train_size(), keep.sum().item<int64_t>());
  EXPECT_TRUE(torch::equal(some.train_y, all.train_y.masked_select(keep)));
  EXPECT_TRUE(torch::equal(some.train_x, all.train_x.index_select(0, keep.nonzero().reshape(-1))));
  EXPECT_TRUE(torch::equal(some.test_y, all.test_y));
  try {
    xpand::data::dataset_load(Config::load_string(kBase, "f.yaml", {"data.train_classes=[5]"}), torch::kCPU);
    ADD_FAILURE() << "class 5 of 3 was accepted";
  } catch (const xpand::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("data.train_classes"), std::string::npos) << e.what();
  }
}

TEST(Finetune, PretrainThenFullAndLoraFineTuning) {
  xpand::test::TempDir dir;
  RunOptions o;
  o.console = false;
  o.update_index = false;
  // Pretrain without class 2, reporting accuracy on it and on the rest.
  auto pre_cfg = Config::load_string(
      kBase, "pre.yaml",
      {"data.train_classes=[0, 1]", "data.focus_classes=[2]", "name=pre", "output.dir=" + dir.file("pre")});
  auto pre = run_train(pre_cfg, o);
  ASSERT_EQ(pre.status, "completed");
  auto ds = xpand::data::dataset_load(pre_cfg, torch::kCPU);
  auto focus_rows = ds.test_y.eq(2).nonzero().reshape(-1), rest_rows = ds.test_y.ne(2).nonzero().reshape(-1);
  pre.network->eval();
  const double focus = accuracy_on(*pre.network, ds.test_x, ds.test_y, focus_rows).item<double>();
  const double rest = accuracy_on(*pre.network, ds.test_x, ds.test_y, rest_rows).item<double>();
  {
    xpand::store::RunReader r(pre.path);
    EXPECT_NEAR(r.column("eval", "test_focus_acc").back(), focus, 1e-12);
    EXPECT_NEAR(r.column("eval", "test_rest_acc").back(), rest, 1e-12);
    EXPECT_EQ(r.attr_int("trainable_params"), 8 * 24 + 24 + 24 * 24 + 24 + 24 * 3 + 3);
  }
  EXPECT_LT(focus, 0.05);  // never saw class 2

  // Full fine-tuning from the snapshot: with a negligible learning rate the network is the snapshot.
  auto full = run_train(Config::load_string(kBase, "full.yaml",
                                            {"model.init_from=" + pre.path, "train.lr=1e-15", "train.max_steps=1",
                                             "name=full", "output.dir=" + dir.file("full")}),
                        o);
  ASSERT_EQ(full.status, "completed");
  {
    auto a = pre.network->named_parameters(), b = full.network->named_parameters();
    for (const auto& name : {"fc1.weight", "fc1_bias", "fc2.weight", "fc2_bias", "fc3.weight", "fc3_bias"})
      EXPECT_LT((a[name] - b[name]).abs().max().item<double>(), 1e-9) << name;
  }

  // LoRA on class 2 only, biases frozen: W0 and biases stay the snapshot's exactly, the adapters
  // learn, and class 2 is learnt.
  auto lora =
      run_train(Config::load_string(kBase, "lora.yaml",
                                    {"model.init_from=" + pre.path, "param.kind=lora", "param.rank=2",
                                     "train.freeze=['*_bias']", "data.train_classes=[2]", "data.focus_classes=[2]",
                                     "train.lr=0.01", "name=lora", "output.dir=" + dir.file("lora")}),
                o);
  ASSERT_EQ(lora.status, "completed");
  auto pl = pre.network->named_parameters();
  auto nl = lora.network->named_parameters();
  auto bl = lora.network->named_buffers();
  for (int i = 1; i <= 3; ++i) {
    const std::string l = "fc" + std::to_string(i);
    EXPECT_TRUE(torch::equal(bl[l + ".w0"], pl[l + ".weight"])) << l;
    EXPECT_TRUE(torch::equal(nl[l + "_bias"], pl[l + "_bias"])) << l;
    EXPECT_GT(nl[l + ".b"].abs().max().item<double>(), 0) << l;
  }
  xpand::store::RunReader r(lora.path);
  EXPECT_EQ(r.attr_int("trainable_params"), 2 * (8 + 24) + 2 * (24 + 24) + 2 * (24 + 3));
  EXPECT_GT(r.column("eval", "test_focus_acc").back(), 0.5);

  // An expanded layer cannot start from a dense snapshot; a missing file names model.init_from.
  for (const auto& bad : std::vector<std::vector<std::string>>{{"model.init_from=" + pre.path, "param.kind=expanded"},
                                                               {"model.init_from=" + dir.file("missing.h5")}}) {
    auto args = bad;
    args.push_back("output.dir=" + dir.file("bad"));
    try {
      run_train(Config::load_string(kBase, "bad.yaml", args), o);
      ADD_FAILURE() << bad[1 % bad.size()] << " was accepted";
    } catch (const xpand::ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(bad.size() > 1 ? "param.kind" : "model.init_from"), std::string::npos)
          << e.what();
    }
  }
}

TEST(Finetune, FreezePatternThatMatchesNothingIsRefused) {
  RunOptions o;
  o.console = false;
  o.write_file = false;
  try {
    run_train(Config::load_string(kBase, "f.yaml", {"train.freeze=['nope*']"}), o);
    ADD_FAILURE() << "accepted";
  } catch (const xpand::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("fc1.weight"), std::string::npos) << e.what();
  }
}

// A layer with its own init_from keeps its own step; the others take model.init_from with model.init_step.
TEST(Finetune, LayerInitFromKeepsItsOwnStep) {
  auto cfg = Config::load_string(
      kBase, "f.yaml",
      {"model.init_from=/b.h5", "model.init_step=200", "layers.fc1.kind=lora", "layers.fc1.init_from=/a.h5"});
  auto own = xpand::param::spec_for(cfg, "fc1"), shared = xpand::param::spec_for(cfg, "fc2");
  EXPECT_EQ(own.init_from, "/a.h5");
  EXPECT_EQ(own.init_step, 0);
  EXPECT_EQ(shared.init_from, "/b.h5");
  EXPECT_EQ(shared.init_step, 200);
}
