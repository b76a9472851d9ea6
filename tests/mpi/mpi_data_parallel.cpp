// Data-parallel training against the single-rank reference, on 1, 2 and 3 ranks (ctest runs this
// binary under mpirun with each count): the same global batch and seed give the same parameters
// for dense, expanded, low-rank and conv networks; the narrowest cut and the raw all-reduce agree,
// and the cut sends what a dense layer sends; the reducer sums every rank's gradients across
// bucket boundaries; a rank that never arrives makes the job abort with its rank named.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <thread>

#include "../test_util.h"
#include "config/config.h"
#include "dist/reducer.h"
#include "mpi_env.h"
#include "train/trainer.h"

using xpand::config::Config;
using namespace xpand;

namespace {

train::RunResult train_run(const std::string& yaml, const std::vector<std::string>& overrides, bool distributed) {
  train::RunOptions o;
  o.console = false;
  o.write_file = false;
  if (distributed) o.comm = test::world().comm;
  auto set = overrides;
  set.push_back("dist.timeout_s=120");  // a test bug ends in an abort naming the rank, not a long hang
  return train::run_train(Config::load_string(yaml, "dp.yaml", set), o);
}

// max over tensors of max|a - b| / max|a|.
double max_rel_diff(model::Network& a, model::Network& b) {
  auto pa = a.named_parameters(), pb = b.named_parameters();
  EXPECT_EQ(pa.size(), pb.size());
  double worst = 0;
  for (const auto& item : pa) {
    const auto& x = item.value();
    const auto& y = pb[item.key()];
    if (x.numel() == 0) continue;
    double scale = std::max(x.abs().max().item<double>(), 1e-300);
    worst = std::max(worst, (x - y).abs().max().item<double>() / scale);
  }
  return worst;
}

// Batch 31: uneven shards on 2 and 3 ranks (the loss weighting must make them exact anyway).
const char* kTeacher =
    "data: {name: teacher, batch_size: 31, train_size: 310, test_size: 62}\n"
    "train: {epochs: 0, max_steps: 6, lr: 0.003}\n"
    "threads: 1\n";

struct Net {
  const char* name;
  std::string yaml;
};

std::vector<Net> nets() {
  return {
      {"dense-mlp", std::string(kTeacher) + "model: {kind: mlp, widths: [32, 48, 48, 10]}\n"},
      {"expanded-mlp", std::string(kTeacher) + "model: {kind: mlp, widths: [32, 48, 48, 10]}\n"
                                               "param: {kind: expanded, factor: 4, depth: 3}\n"},
      {"lowrank-mlp", std::string(kTeacher) + "model: {kind: mlp, widths: [32, 48, 48, 10]}\n"
                                              "param: {kind: lowrank, rank: 6}\n"},
      {"subspace-mlp", std::string(kTeacher) + "model: {kind: mlp, widths: [32, 48, 48, 10]}\n"
                                               "param: {kind: subspace, omega_dim: 24, projection: fastfood}\n"},
      // fc2 alone in the subspace: omega's gradient and fc1's, fc3's travel in one message.
      {"subspace-fc2", std::string(kTeacher) + "model: {kind: mlp, widths: [32, 48, 48, 10]}\n"
                                               "param: {omega_dim: 24, projection: fastfood}\n"
                                               "layers: {fc2: {kind: subspace}}\n"},
      // The rotate schedule collapses and re-expands layers in place every 2 steps (tensors change
      // shape under the reducer's hooks).
      {"rotate-mlp", std::string(kTeacher) + "model: {kind: mlp, widths: [32, 48, 48, 10]}\n"
                                             "param: {kind: expanded, factor: 2, depth: 2}\n"
                                             "expand: {schedule: rotate, period: 2}\n"},
      // Batch norm normalises each rank's shard on its own (as DDP without SyncBatchNorm), which is
      // not the single-rank function; the conv network is compared without it.
      {"cnn",
       "data: {name: fashion-mnist, batch_size: 24, eval_max_samples: 96}\n"
       "model: {kind: cnn, channels: [4, 8], fc: [16], batch_norm: false}\n"
       "param: {kind: expanded, factor: 2}\n"
       "train: {epochs: 0, max_steps: 4, lr: 0.003}\nthreads: 1\n"},
  };
}

}  // namespace

TEST(DataParallel, SameParametersAsOneRank) {
  const int world = test::world().comm->size();
  for (const auto& net : nets()) {
    for (const char* dtype : {"float64", "float32"}) {
      // float64 with Adam. float32 with SGD + momentum: Adam's first steps move every weight by
      // about lr·sign(g), so a gradient entry that is zero up to float32 rounding (~1e-7 of the
      // summed terms) becomes a full ±lr step on one side and not the other; SGD keeps the
      // difference proportional to the rounding, which is what this test measures. For the same
      // reason float32 uses tanh: a ReLU input within rounding of 0 switches a unit on in one run
      // and off in the other (seen with Intel's OpenBLAS kernels: 3e-3 apart after 6 steps).
      const bool f64 = std::string(dtype) == "float64";
      const double tol = f64 ? 1e-12 : 1e-6;
      std::vector<std::string> set = {std::string("dtype=") + dtype};
      if (!f64)
        set.insert(set.end(), {"train.optimizer=sgd", "train.momentum=0.9", "train.lr=0.05", "model.activation=tanh"});
      auto ref = train_run(net.yaml, set, /*distributed=*/false);
      // float64 with tiny buckets (0.5 KiB first, then 1 KiB): many buckets launch during backward.
      if (f64) set.insert(set.end(), {"dist.bucket_mb=0.001", "dist.first_bucket_mb=0.0005"});
      auto dp = train_run(net.yaml, set, /*distributed=*/true);
      ASSERT_EQ(dp.status, "completed") << net.name;
      double d = max_rel_diff(*ref.network, *dp.network);
      EXPECT_LE(d, tol) << net.name << " " << dtype << " on " << world << " rank(s)";
      if (world > 1) EXPECT_GT(dp.comm_bytes, 0) << net.name;
      // The global-batch loss is what every rank reports.
      ASSERT_EQ(ref.losses.size(), dp.losses.size());
      EXPECT_NEAR(ref.losses.back(), dp.losses.back(), 1e-5 * std::abs(ref.losses.back())) << net.name;
    }
  }
}

TEST(DataParallel, SubspaceAllReducesOnlyOmega) {
  if (test::world().comm->size() < 2) GTEST_SKIP() << "needs 2 ranks";
  for (const char* dtype : {"float32", "float64"}) {
    auto r = train_run(std::string(kTeacher) +
                           "model: {kind: mlp, widths: [32, 48, 48, 10]}\n"
                           "param: {kind: subspace, omega_dim: 24, projection: sparse}\n",
                       {std::string("dtype=") + dtype}, /*distributed=*/true);
    ASSERT_EQ(r.status, "completed");
    EXPECT_EQ(r.comm_bytes, 24 * (std::string(dtype) == "float64" ? 8 : 4)) << dtype;
    // One layer in the subspace: omega plus the other layers' weights and biases.
    auto one = train_run(std::string(kTeacher) +
                             "model: {kind: mlp, widths: [32, 48, 48, 10]}\n"
                             "param: {omega_dim: 24, projection: sparse}\n"
                             "layers: {fc2: {kind: subspace}}\n",
                         {std::string("dtype=") + dtype}, /*distributed=*/true);
    ASSERT_EQ(one.status, "completed");
    EXPECT_EQ(one.comm_bytes, (24 + 32 * 48 + 48 + 48 * 10 + 10) * (std::string(dtype) == "float64" ? 8 : 4)) << dtype;
  }
}

TEST(DataParallel, GradientAccumulationMatchesOneBigBatch) {
  for (const auto& net : nets()) {
    if (std::string(net.name) == "cnn") continue;  // covered above; keeps the test short
    auto ref = train_run(net.yaml, {"dtype=float64"}, false);
    auto acc = train_run(net.yaml, {"dtype=float64", "train.grad_accum=3"}, true);
    EXPECT_LE(max_rel_diff(*ref.network, *acc.network), 1e-12) << net.name;
  }
}

// Knowledge distillation: every rank runs the teacher on its own rows (the shard it trains on), and
// the distilled student's parameters are those of one rank's run. Rank 0 trains the teacher; every
// rank reads it from the same path (the path is part of the run's identity). A float64 teacher: a
// float32 one rounds its logits differently at 15 rows than at 31 (2.6e-8 in the student's weights).
TEST(DataParallel, DistillationShardsTheTeacherWithTheData) {
  auto& comm = *test::world().comm;
  test::TempDir dir;
  const std::string mlp = std::string(kTeacher) + "model: {kind: mlp, widths: [32, 48, 48, 10]}\n";
  std::string path;
  if (comm.rank() == 0) {
    train::RunOptions o;
    o.console = false;
    auto teacher = train::run_train(Config::load_string(mlp, "t.yaml",
                                                        {"train.max_steps=10", "model.widths=[32,64,10]",
                                                         "dtype=float64", "output.dir=" + dir.path().string()}),
                                    o);
    EXPECT_EQ(teacher.status, "completed");
    path = teacher.path;
  }
  path = comm.broadcast_string(path, 0, "teacher path");  // also: the file is written
  for (const char* dtype : {"float64", "float32"}) {
    const bool f64 = std::string(dtype) == "float64";
    std::vector<std::string> set = {std::string("dtype=") + dtype, "train.distill.from=" + path,
                                    "train.distill.alpha=0.7", "train.distill.temperature=3"};
    if (!f64)
      set.insert(set.end(), {"train.optimizer=sgd", "train.momentum=0.9", "train.lr=0.05", "model.activation=tanh"});
    auto ref = train_run(mlp, set, /*distributed=*/false);
    auto dp = train_run(mlp, set, /*distributed=*/true);
    ASSERT_EQ(dp.status, "completed");
    EXPECT_LE(max_rel_diff(*ref.network, *dp.network), f64 ? 1e-12 : 1e-6) << dtype;
    std::vector<std::string> no_teacher(set.begin(), set.begin() + 1);  // the same run without train.distill.*
    no_teacher.insert(no_teacher.end(), set.begin() + 4, set.end());
    auto plain = train_run(mlp, no_teacher, /*distributed=*/true);
    EXPECT_NE(plain.losses.front(), dp.losses.front()) << "the teacher's term changed nothing";
  }
  comm.broadcast_string("done", 0, "teacher no longer read");  // rank 0's directory outlives every read
}

TEST(DataParallel, CutAutoAndRawGiveTheSameParameters) {
  for (const auto& net : nets()) {
    auto cut = train_run(net.yaml, {"dtype=float64", "dist.cut=narrowest"}, true);
    auto raw = train_run(net.yaml, {"dtype=float64", "dist.cut=raw"}, true);
    auto planned = train_run(net.yaml, {"dtype=float64", "dist.cut=planned"}, true);
    auto chosen = train_run(net.yaml, {"dtype=float64", "dist.cut=auto"}, true);
    EXPECT_LE(max_rel_diff(*cut.network, *raw.network), 1e-12) << net.name;
    EXPECT_LE(max_rel_diff(*planned.network, *raw.network), 1e-12) << net.name;
    EXPECT_LE(max_rel_diff(*chosen.network, *raw.network), 1e-12) << net.name;
  }
}

// dist.cut auto with the link and the GEMM rate given (dist.link_gbps, dist.gemm_gflops) chooses from
// the planner's FLOPs alone, so the choice is the same on every machine: at 8 rows per rank and
// 1 GB/s, fc1 (32 -> 6400 -> 64) sends its factors (forming W_eff costs 5 ms more than the 2.5 ms
// its factors take to send) and fc2 (64 -> 6400 -> 10) its W_eff (0.2 ms more compute, 1.9 ms less
// communication): a mixed cut, whose parameters are raw's (float32 to 1e-6, float64 to 1e-12: the
// two sides differ in summation order only). SGD with momentum, as the float32 runs above: Adam's
// first steps are lr·sign(g) and turn rounding noise in a near-zero gradient into a full step.
TEST(DataParallel, AutoMixesCutsPerLayerAndMatchesRaw) {
  // The prices below are for 2 ranks (8 rows each; a ring of 2 moves each byte once).
  if (test::world().comm->size() != 2) GTEST_SKIP() << "priced for exactly 2 ranks";
  const std::string yaml =
      "data: {name: teacher, batch_size: 16, train_size: 160, test_size: 32}\n"
      "model: {kind: mlp, widths: [32, 64, 10]}\nparam: {kind: expanded, factor: 100, depth: 2}\n"
      "train: {epochs: 0, max_steps: 4, optimizer: sgd, momentum: 0.9, lr: 0.05}\nthreads: 1\n"
      "dist: {link_gbps: 8, gemm_gflops: 10}\n";
  const int64_t fc1_raw = 6400 * 32 + 64 * 6400, fc2_raw = 6400 * 64 + 10 * 6400;
  const int64_t fc2_cut = 10 * 64, biases = 64 + 10;
  for (const char* dtype : {"float32", "float64"}) {
    const int64_t b = std::string(dtype) == "float64" ? 8 : 4;
    auto chosen = train_run(yaml, {std::string("dtype=") + dtype, "dist.cut=auto"}, true);
    auto raw = train_run(yaml, {std::string("dtype=") + dtype, "dist.cut=raw"}, true);
    EXPECT_EQ(raw.comm_bytes, b * (fc1_raw + fc2_raw + biases));
    EXPECT_EQ(chosen.comm_bytes, b * (fc1_raw + fc2_cut + biases)) << "fc1 raw, fc2 at W_eff";
    EXPECT_LE(max_rel_diff(*chosen.network, *raw.network), b == 8 ? 1e-12 : 1e-6) << dtype;
  }
}

// At 300 rows per rank the planner runs every expanded layer weight-first, so `planned` cuts them
// (fewer bytes than raw) and must still give raw's parameters.
TEST(DataParallel, PlannedCutWhereThePlannerRunsWeightFirst) {
  XPAND_NEED_RANKS(2);
  const std::string yaml =
      "data: {name: teacher, batch_size: 600, train_size: 1800, test_size: 60}\n"
      "model: {kind: mlp, widths: [32, 48, 48, 10]}\nparam: {kind: expanded, factor: 4, depth: 3}\n"
      "train: {epochs: 0, max_steps: 3, lr: 0.003}\nthreads: 1\ndtype: float64\n";
  auto planned = train_run(yaml, {"dist.cut=planned"}, true);
  auto raw = train_run(yaml, {"dist.cut=raw"}, true);
  auto cut = train_run(yaml, {"dist.cut=auto"}, true);
  EXPECT_LT(planned.comm_bytes, raw.comm_bytes);
  EXPECT_EQ(planned.comm_bytes, cut.comm_bytes);  // every layer runs weight-first here
  EXPECT_LE(max_rel_diff(*planned.network, *raw.network), 1e-12);
}

TEST(DataParallel, CutSendsWhatTheDenseLayerSends) {
  XPAND_NEED_RANKS(2);
  const std::string base = std::string(kTeacher) + "model: {kind: mlp, widths: [32, 64, 10]}\n";
  auto dense = train_run(base, {"train.max_steps=2"}, true);
  std::vector<std::string> expanded = {"train.max_steps=2", "param.kind=expanded", "param.factor=100", "param.depth=2"};
  auto with = [&](std::string s) {
    auto v = expanded;
    v.push_back(std::move(s));
    return v;
  };
  auto cut = train_run(base, with("dist.cut=narrowest"), true);
  auto raw = train_run(base, with("dist.cut=raw"), true);
  // Dense: W and b of both layers, float32.
  const int64_t dense_bytes = 4 * (64 * 32 + 64 + 10 * 64 + 10);
  EXPECT_EQ(dense.comm_bytes, dense_bytes);
  EXPECT_EQ(cut.comm_bytes, dense_bytes);
  EXPECT_GE(raw.comm_bytes, 100 * dense_bytes);
  // Factors 6400x32 and 64x6400, 6400x64 and 10x6400, plus the biases.
  EXPECT_EQ(raw.comm_bytes, 4 * (6400 * 32 + 64 * 6400 + 6400 * 64 + 10 * 6400 + 64 + 10));
}

// --- the reducer on its own -----------------------------------------------------------------

TEST(Reducer, BucketsSumEveryRanksGradients) {
  auto comm = test::world().comm;
  const int rank = comm->rank(), world = comm->size();
  // A tensor larger than a bucket (5000 floats > 1048), empty tensors, one tensor that gets no
  // gradient, and a last bucket smaller than the others.
  const std::vector<int64_t> sizes = {300, 0, 5000, 7, 0, 1, 900, 1000, 50};
  const size_t unused = 3;
  dist::Reducer reducer(comm, {/*bucket_mb=*/4096.0 / 1048576.0 + 1e-9, /*first_bucket_mb=*/1024.0 / 1048576.0});
  std::vector<torch::Tensor> params;
  for (int64_t n : sizes) params.push_back(torch::zeros({n}, torch::requires_grad()));
  auto contribution = [&](size_t i, int r) {
    return (torch::arange(double(sizes[i]), torch::kFloat32) + 1.0) * float(r + 1) * float(i + 1);
  };
  for (int micro : {1, 2}) {  // one backward, then two accumulated backwards
    for (auto& p : params) p.mutable_grad() = torch::Tensor();
    for (int m = 0; m < micro; ++m) {
      if (m == micro - 1) reducer.arm(params);
      torch::Tensor loss = torch::zeros({});
      for (size_t i = 0; i < params.size(); ++i)
        if (i != unused) loss = loss + (params[i] * contribution(i, rank)).sum();
      loss.backward();
    }
    auto stats = reducer.finish();
    // The hooks went on once, at the first arm; the second step (same tensors) added none, and its
    // unarmed first micro-batch left no trace in the sums below.
    EXPECT_EQ(reducer.hook_registrations(), int64_t(sizes.size())) << "micro " << micro;
    ASSERT_GE(reducer.layout().size(), 5u);
    int64_t nonempty = 0, total = 0;
    for (const auto& b : reducer.layout()) nonempty += b.numel > 0, total += b.numel;
    if (world > 1) {
      EXPECT_EQ(stats.collectives, nonempty);
      EXPECT_EQ(stats.bytes, 4 * total);
    }
    for (size_t i = 0; i < params.size(); ++i) {
      torch::Tensor want = torch::zeros({sizes[i]});
      if (i != unused)
        for (int r = 0; r < world; ++r) want += float(micro) * contribution(i, r);
      ASSERT_TRUE(params[i].grad().defined()) << i;
      EXPECT_TRUE(torch::allclose(params[i].grad(), want, 1e-6, 0)) << "tensor " << i << " micro " << micro;
    }
  }
}

// Another list of tensors (an expansion schedule switching layers) moves the hooks to it.
TEST(Reducer, NewTensorsMoveTheHooks) {
  auto comm = test::world().comm;
  dist::Reducer reducer(comm, {25, 1});
  auto a = torch::zeros({3}, torch::requires_grad()), b = torch::zeros({4}, torch::requires_grad());
  for (int step = 0; step < 2; ++step) {
    reducer.arm({a});
    (a * 2.0).sum().backward();
    reducer.finish();
  }
  EXPECT_EQ(reducer.hook_registrations(), 1);
  a.mutable_grad() = torch::Tensor();
  reducer.arm({b});
  (a.sum() + (b * 3.0).sum()).backward();  // a's old hook must not fire into b's step
  reducer.finish();
  EXPECT_EQ(reducer.hook_registrations(), 2);
  EXPECT_TRUE(torch::allclose(b.grad(), torch::full({4}, 3.0 * comm->size())));
  EXPECT_TRUE(torch::allclose(a.grad(), torch::full({3}, 1.0)));  // not reduced: this rank's own
}

TEST(Reducer, LayoutRules) {
  // Pure function: first bucket 100 bytes, then 400 bytes, float32.
  auto l = dist::bucket_layout({10, 20, 0, 200, 50, 50, 1}, 4, 100, 400);
  ASSERT_EQ(l.size(), 5u);
  EXPECT_EQ(l[0].begin, 0u);  // 10 floats = 40 B; +20 would be 120 B > 100
  EXPECT_EQ(l[0].end, 1u);
  EXPECT_EQ(l[1].numel, 20);  // 20 and the empty tensor; 200 more would pass 400 B
  EXPECT_EQ(l[1].end, 3u);
  EXPECT_EQ(l[2].numel, 200);  // 800 B, larger than a bucket: alone
  EXPECT_EQ(l[3].numel, 100);  // 50 + 50 = exactly 400 B
  EXPECT_EQ(l[4].numel, 1);    // uneven last bucket
  EXPECT_EQ(l[4].end, 7u);
  EXPECT_TRUE(dist::bucket_layout({}, 4, 100, 400).empty());
  auto empty = dist::bucket_layout({0, 0}, 4, 100, 400);
  ASSERT_EQ(empty.size(), 1u);
  EXPECT_EQ(empty[0].numel, 0);
}

// Run by tests/cli/mpi_timeout.sh (XPAND_TEST_HANG=1): rank 1 never reaches the all-reduce, so the
// others must abort the job within the timeout and name rank 1.
TEST(Timeout, AbortNamesTheMissingRank) {
  if (!std::getenv("XPAND_TEST_HANG")) GTEST_SKIP() << "run by tests/cli/mpi_timeout.sh";
  XPAND_NEED_RANKS(2);
  auto comm = test::world().comm;
  comm->set_timeout(3);
  if (comm->rank() == 1) {
    std::this_thread::sleep_for(std::chrono::seconds(60));
    return;
  }
  auto t = torch::ones({16});
  comm->allreduce(t, dist::ReduceOp::Sum, "the test tensor");
  ADD_FAILURE() << "the all-reduce completed without rank 1";
}
