// Knowledge distillation (train/distill.h): the KL term against a float64 transcription of Hinton et
// al.'s formula written out here (softmaxes by hand) and its gradient against the closed form
// T·(softmax(s/T) − softmax(t/T)) / rows; the teacher a run file or model file holds, fed the
// student's inputs in its own normalisation; alpha 0 trains exactly as without a teacher, alpha > 0
// differently; and a teacher that does not fit the data is a config error naming train.distill.from.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "../test_util.h"
#include "config/config.h"
#include "core/error.h"
#include "data/dataset.h"
#include "store/index.h"
#include "store/run_file.h"
#include "train/distill.h"
#include "train/model_file.h"
#include "train/trainer.h"

using namespace xpand;

namespace {

constexpr uint64_t kSeed = 4242;

const char* kTask =
    "data: {name: teacher, batch_size: 32, train_size: 256, test_size: 64, teacher_inputs: 12, teacher_classes: 5}\n"
    "train: {epochs: 0, max_steps: 8, lr: 0.01}\nthreads: 1\n";

train::RunResult train_it(const std::string& yaml, const std::vector<std::string>& set, const std::string& out = "") {
  train::RunOptions o;
  o.console = false;
  o.write_file = !out.empty();
  auto overrides = set;
  if (!out.empty()) overrides.push_back("output.dir=" + out);
  return train::run_train(config::Config::load_string(yaml, "kd.yaml", overrides), o);
}

}  // namespace

TEST(Distill, KlTermIsHintonsFormula) {
  std::printf("seed %llu\n", static_cast<unsigned long long>(kSeed));
  torch::manual_seed(kSeed);
  const int64_t rows = 6, classes = 7;
  auto s = torch::randn({rows, classes}, torch::kFloat64).mul_(3).requires_grad_();
  auto t = torch::randn({rows, classes}, torch::kFloat64).mul_(3);
  for (double T : {1.0, 4.0}) {
    auto got = train::distill_kl(s, t, T);
    // By hand: p = softmax(t/T), q = softmax(s/T), T² · mean over rows of Σ p log(p/q).
    auto sd = s.detach();
    auto sa = sd.accessor<double, 2>();
    auto ta = t.accessor<double, 2>();
    double want = 0;
    std::vector<std::vector<double>> grad(rows, std::vector<double>(classes));
    for (int64_t r = 0; r < rows; ++r) {
      double zs = 0, zt = 0;
      for (int64_t c = 0; c < classes; ++c) zs += std::exp(sa[r][c] / T), zt += std::exp(ta[r][c] / T);
      for (int64_t c = 0; c < classes; ++c) {
        const double p = std::exp(ta[r][c] / T) / zt, q = std::exp(sa[r][c] / T) / zs;
        want += p * std::log(p / q);
        grad[r][c] = T * (q - p) / double(rows);  // d/ds of T² KL / rows
      }
    }
    want *= T * T / double(rows);
    EXPECT_NEAR(got.item<double>(), want, 1e-12 * std::max(1.0, std::abs(want))) << "T " << T;
    s.mutable_grad() = torch::Tensor();
    got.backward();
    auto g = s.grad().accessor<double, 2>();
    double worst = 0;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < classes; ++c) worst = std::max(worst, std::abs(g[r][c] - grad[r][c]));
    EXPECT_LE(worst, 1e-13) << "T " << T;
  }
  // The same distribution on both sides: nothing to learn.
  EXPECT_NEAR(train::distill_kl(s.detach(), s.detach(), 2.0).item<double>(), 0.0, 1e-14);
}

TEST(Distill, TeacherFromRunAndModelFiles) {
  test::TempDir dir;
  const std::string mlp = std::string(kTask) + "model: {kind: mlp, widths: [12, 24, 5]}\n";
  auto teacher = train_it(mlp, {"train.max_steps=30"}, dir.file("t"));
  ASSERT_EQ(teacher.status, "completed");
  // The teacher, read back from its run file's last snapshot, computes what the trained network does.
  auto cfg = config::Config::load_string(mlp, "kd.yaml", {"train.distill.from=" + teacher.path});
  auto ds = data::dataset_load(cfg, torch::kCPU);
  auto t = train::Teacher::from_config(cfg, ds, torch::kCPU);
  ASSERT_TRUE(t);
  EXPECT_NE(t->describe().find(teacher.run_id), std::string::npos) << t->describe();
  EXPECT_EQ(t->temperature(), 4.0);
  EXPECT_EQ(t->alpha(), 0.9);
  auto x = ds.test_x.slice(0, 0, 16);
  teacher.network->eval();
  torch::NoGradGuard ng;
  auto want = teacher.network->forward(x);
  EXPECT_LE((t->logits(x) - want).abs().max().item<double>(), 1e-5);
  // Written as a model file (what `xpand collapse` writes), the same teacher.
  const auto snap = store::snapshot_list(store::RunReader(teacher.path)).back();
  train::model_write(train::model_from_run(teacher.path, snap.group, snap.step), dir.file("teacher.h5"));
  auto cfg2 = config::Config::load_string(mlp, "kd.yaml", {"train.distill.from=" + dir.file("teacher.h5")});
  auto t2 = train::Teacher::from_config(cfg2, ds, torch::kCPU);
  EXPECT_TRUE(torch::equal(t2->logits(x), t->logits(x)));
}

// A teacher trained on standardised images, a student reading them unit-scaled: the teacher gets
// (x·255/255 − mean)/std of the student's x, the inputs it was trained on.
TEST(Distill, TeacherGetsItsOwnNormalisation) {
  if (!std::filesystem::exists("/usr/share/datasets/fashion-mnist"))
    GTEST_SKIP() << "needs /usr/share/datasets/fashion-mnist (scripts/setup.sh installs it)";
  test::TempDir dir;
  const std::string img =
      "data: {name: fashion-mnist, batch_size: 16, eval_max_samples: 64}\nmodel: {kind: mlp, widths: [784, 10]}\n"
      "train: {epochs: 0, max_steps: 2}\nthreads: 1\n";
  auto teacher = train_it(img, {"data.normalize=standard"}, dir.file("t"));
  ASSERT_EQ(teacher.status, "completed");
  auto cfg = config::Config::load_string(img, "kd.yaml", {"data.normalize=unit", "train.distill.from=" + teacher.path});
  auto ds = data::dataset_load(cfg, torch::kCPU);
  auto standard = data::dataset_load(config::Config::load_string(img, "s.yaml"), torch::kCPU);
  ASSERT_GT(standard.input_std, 0.0);
  ASSERT_NE(standard.input_mean, 0.0);
  auto t = train::Teacher::from_config(cfg, ds, torch::kCPU);
  auto x_unit = ds.test_x.slice(0, 0, 8);
  auto x_std = standard.test_x.slice(0, 0, 8);
  teacher.network->eval();
  torch::NoGradGuard ng;
  EXPECT_LE((t->logits(x_unit) - teacher.network->forward(x_std)).abs().max().item<double>(), 1e-4);
  EXPECT_GT((teacher.network->forward(x_unit) - teacher.network->forward(x_std)).abs().max().item<double>(), 1e-2);
}

TEST(Distill, AlphaZeroIsPlainTrainingAndAlphaChangesIt) {
  test::TempDir dir;
  const std::string mlp = std::string(kTask) + "model: {kind: mlp, widths: [12, 24, 5]}\n";
  auto teacher = train_it(mlp, {"train.max_steps=20", "model.widths=[12,64,5]"}, dir.file("t"));
  ASSERT_EQ(teacher.status, "completed");
  auto plain = train_it(mlp, {"dtype=float64"});
  auto zero = train_it(mlp, {"dtype=float64", "train.distill.from=" + teacher.path, "train.distill.alpha=0"});
  auto kd = train_it(mlp, {"dtype=float64", "train.distill.from=" + teacher.path, "train.distill.alpha=0.5"});
  ASSERT_EQ(plain.losses.size(), 8u);
  EXPECT_EQ(zero.losses, plain.losses);  // the teacher's term weighs nothing
  EXPECT_NE(kd.losses.front(), plain.losses.front());
  EXPECT_NE(kd.losses.back(), plain.losses.back());
}

TEST(Distill, TeacherThatDoesNotFitIsAConfigError) {
  test::TempDir dir;
  auto teacher = train_it(std::string(kTask) + "model: {kind: mlp, widths: [12, 8, 5]}\n", {}, dir.file("t"));
  ASSERT_EQ(teacher.status, "completed");
  // Another number of classes.
  const std::string other =
      "data: {name: teacher, train_size: 64, test_size: 32, teacher_inputs: 12, "
      "teacher_classes: 3}\nmodel: {kind: mlp, widths: [12, 8, 3]}\n";
  auto cfg = config::Config::load_string(other, "kd.yaml", {"train.distill.from=" + teacher.path});
  auto ds = data::dataset_load(cfg, torch::kCPU);
  try {
    train::Teacher::from_config(cfg, ds, torch::kCPU);
    ADD_FAILURE() << "a 5-class teacher for 3-class data was accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("train.distill.from"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("5 classes"), std::string::npos) << e.what();
  }
  // A missing file, and a file that is neither a model nor a run file.
  auto missing = config::Config::load_string(other, "kd.yaml", {"train.distill.from=" + dir.file("none.h5")});
  EXPECT_THROW(train::Teacher::from_config(missing, ds, torch::kCPU), ConfigError);
  std::ofstream(dir.file("junk.h5")) << "not hdf5";
  auto junk = config::Config::load_string(other, "kd.yaml", {"train.distill.from=" + dir.file("junk.h5")});
  EXPECT_THROW(train::Teacher::from_config(junk, ds, torch::kCPU), DataError);
}
