// dist.cut auto's chooser (train/cut_chooser.h) on synthetic costs, its FLOP prices on a real
// expanded network against the chain sizes worked out by hand, and its calibration: both options
// timed at the layer's shapes without touching the training's random streams or gradients, and
// cached so that the next run of a sweep measures nothing.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "../test_util.h"
#include "config/config.h"
#include "data/dataset.h"
#include "model/network.h"
#include "param/spec.h"
#include "train/cut_chooser.h"

using namespace xpand;
using train::CutOption;
using train::LayerCosts;
using train::LinkModel;

namespace {

LayerCosts layer(const std::string& name, double raw_s, int64_t raw_bytes, double cut_s, int64_t cut_bytes) {
  LayerCosts l;
  l.name = name;
  l.has_choice = true;
  l.raw = CutOption{raw_s, raw_bytes};
  l.cut = CutOption{cut_s, cut_bytes};
  l.compute_source = "synthetic";
  return l;
}

LinkModel link(double bytes_per_s, double overlap = 0, double latency_s = 0) {
  LinkModel l;
  l.bytes_per_s = bytes_per_s, l.overlap = overlap, l.latency_s = latency_s;
  return l;
}

std::vector<std::string> choices(const std::vector<train::CutDecision>& d) {
  std::vector<std::string> c;
  for (const auto& x : d) c.push_back(x.choice);
  return c;
}

// Two expanded layers: "big" costs 10 ms more compute at its cut and saves 100 MB; "small" costs
// 0.1 ms more and saves 10 MB; "none" has no cut (low-rank: its factors are the cut).
std::vector<LayerCosts> synthetic() {
  LayerCosts none;
  none.name = "lowrank";
  none.raw = none.cut = CutOption{0.002, 1000};
  return {layer("big", 0.010, 100'000'000 + 4000, 0.020, 4000), layer("small", 0.001, 10'000'000 + 400, 0.0011, 400),
          none};
}

// An MLP on `in` inputs and 10 classes from a config text.
model::NetworkPtr mlp(const std::string& yaml, int64_t in) {
  auto cfg = config::Config::load_string(yaml, "m.yaml");
  data::Dataset ds;
  ds.name = "teacher";
  ds.sample_shape = {in};
  ds.num_classes = 10;
  return model::network_build(cfg, ds, param::factory_from_config(cfg));
}

}  // namespace

TEST(CutChooser, FastLinkRawSlowLinkCutMixedInBetween) {
  auto layers = synthetic();
  // 1 TB/s: big's 100 MB take 0.1 ms (against 10 ms more compute at its cut), small's 10 MB 0.01 ms
  // (against 0.1 ms): raw for both.
  EXPECT_EQ(choices(train::choose_cuts(layers, link(1e12))), (std::vector<std::string>{"raw", "raw", "none"}));
  // 1 GB/s: 100 ms and 10 ms of communication saved: the cut for both.
  EXPECT_EQ(choices(train::choose_cuts(layers, link(1e9))), (std::vector<std::string>{"weight", "weight", "none"}));
  // 20 GB/s: big saves 5 ms of communication for 10 ms of compute (raw); small saves 0.5 ms for 0.1 ms (cut).
  auto mixed = train::choose_cuts(layers, link(20e9));
  EXPECT_EQ(choices(mixed), (std::vector<std::string>{"raw", "weight", "none"}));
  EXPECT_NEAR(mixed[0].raw_cost_s, 0.010 + 100'004'000 / 20e9, 1e-15);
  EXPECT_NEAR(mixed[0].cut_cost_s, 0.020 + 4000 / 20e9, 1e-15);
  EXPECT_EQ(mixed[0].bytes, 100'004'000);
  EXPECT_EQ(mixed[1].bytes, 400);
  // Overlap hides communication behind backward (2/3 of the compute): at 20 GB/s and overlap 0.9
  // the 5.5 ms of sending small's factors too hide behind 0.9 * 2/3 * 13 ms = 7.8 ms of backward,
  // so its 0.1 ms of extra compute no longer pays.
  EXPECT_EQ(choices(train::choose_cuts(layers, link(20e9, 0.9))), (std::vector<std::string>{"raw", "raw", "none"}));
  // ... but never more than the backward lasts: at 1 GB/s and full overlap big's 100 ms cannot hide
  // behind the ~15 ms of backward, so its cut stays, while small's 10 ms can, and small goes raw
  // (a model that hid all communication would pick raw everywhere for its cheaper compute).
  EXPECT_EQ(choices(train::choose_cuts(layers, link(1e9, 1.0))), (std::vector<std::string>{"weight", "raw", "none"}));
  // Each bucket costs its latency: 2 MiB of raw factors need two buckets, the cut's 1000 bytes one.
  // At 1 TB/s the raw option is 0.1 ms cheaper layer by layer, but its second bucket costs 1 ms.
  std::vector<LayerCosts> latency_bound = {layer("a", 0.001, 2 << 20, 0.0011, 1000)};
  EXPECT_EQ(choices(train::choose_cuts(latency_bound, link(1e12, 0, 1e-3))), (std::vector<std::string>{"weight"}));
  EXPECT_EQ(choices(train::choose_cuts(latency_bound, link(1e12, 0, 0))), (std::vector<std::string>{"raw"}));
  // A tie goes to the cut (fewer bytes).
  std::vector<LayerCosts> tie = {layer("t", 0.001, 2000, 0.001, 2000)};
  EXPECT_EQ(choices(train::choose_cuts(tie, link(1e9))), (std::vector<std::string>{"weight"}));
  // The fixed modes.
  EXPECT_EQ(choices(train::fixed_cuts(layers, link(1e12), "narrowest")),
            (std::vector<std::string>{"weight", "weight", "none"}));
  EXPECT_EQ(choices(train::fixed_cuts(layers, link(1e12), "raw")), (std::vector<std::string>{"raw", "raw", "none"}));
  layers[1].compute_source = "planned";
  EXPECT_EQ(choices(train::fixed_cuts(layers, link(1e12), "planned")),
            (std::vector<std::string>{"raw", "weight", "none"}));
}

TEST(CutChooser, StepPredictionAndBuckets) {
  const double MiB = 1048576.0;
  EXPECT_EQ(train::bucket_count(0, 1, 25), 0);
  EXPECT_EQ(train::bucket_count(MiB, 1, 25), 1);
  EXPECT_EQ(train::bucket_count(MiB + 1, 1, 25), 2);
  EXPECT_EQ(train::bucket_count(26 * MiB, 1, 25), 2);
  EXPECT_EQ(train::bucket_count(26 * MiB + 1, 1, 25), 3);
  auto d = train::choose_cuts(synthetic(), link(20e9, 0.5, 1e-4));
  EXPECT_EQ(choices(d), (std::vector<std::string>{"raw", "weight", "none"}));
  // raw (big) 100,004,000 + cut (small) 400 + none 1000 + other 96 bytes = 100,005,496: 5 buckets.
  auto p = train::predict_step(d, 0.003, 96, link(20e9, 0.5, 1e-4), 1, 25);
  EXPECT_EQ(p.bytes, 100'005'496);
  EXPECT_EQ(p.buckets, 5);
  const double compute = 0.003 + 0.010 + 0.0011 + 0.002;
  EXPECT_NEAR(p.compute_s, compute, 1e-15);
  // 5 ms of bandwidth, of which 0.5 * 2/3 * 16.1 ms = 5.37 ms could hide: only the latencies show.
  EXPECT_NEAR(p.exposed_s, 5 * 1e-4 + std::max(0.0, 100'005'496 / 20e9 - 0.5 * (2.0 / 3.0) * compute), 1e-15);
  EXPECT_NEAR(p.exposed_s, 5e-4, 1e-15);
  EXPECT_NEAR(p.comm_s, 5 * 1e-4 + 100'005'496 / 20e9, 1e-15);
  EXPECT_NEAR(p.step_s, p.compute_s + p.exposed_s, 1e-15);
  // Without overlap all of it shows.
  auto q = train::predict_step(d, 0.003, 96, link(20e9, 0, 1e-4), 1, 25);
  EXPECT_NEAR(q.exposed_s, 5 * 1e-4 + 100'005'496 / 20e9, 1e-15);
}

TEST(CutChooser, RingLinkForAHypotheticalJob) {
  auto two = train::link_for_ranks(2, 8, 0, 0);  // 8 Gbit/s = 1 GB/s, a ring moves 2(n-1)/n = 1 of it
  EXPECT_DOUBLE_EQ(two.bytes_per_s, 1e9);
  EXPECT_DOUBLE_EQ(two.latency_s, 0);
  auto big = train::link_for_ranks(64, 50, 5, 0.25);
  EXPECT_DOUBLE_EQ(big.bytes_per_s, 50e9 / 8 / (2.0 * 63 / 64));
  EXPECT_DOUBLE_EQ(big.latency_s, 2 * 6 * 5e-6);  // 2 ceil(log2 64) tree steps
  EXPECT_DOUBLE_EQ(big.overlap, 0.25);
  EXPECT_EQ(train::link_for_ranks(1, 50, 5, 0).exposed(1e9, 0), 0);  // one rank sends nothing
}

// The FLOP prices of both options of an expanded MLP (32 -> 6400 -> 64 -> 6400 -> 10 as two layers of
// factor 100, depth 2) at 8 rows, against the chain products counted by hand: forward 2 MACs per
// product, backward 2 MACs per operand that needs a gradient (fc1's input needs none).
TEST(CutChooser, FlopPricesOfARealNetworkAgainstHandCounts) {
  auto net = mlp("model: {kind: mlp, widths: [32, 64, 10]}\nparam: {kind: expanded, factor: 100, depth: 2}", 32);
  const double G = 10e9, r = 8;
  auto costs = train::layer_costs_from_flops(*net, 8, G, 1, 4);
  ASSERT_EQ(costs.size(), 2u);
  // fc1, activation-first: x(8x32)·A1(32x6400): 2 MACs·(fwd + A1's grad); then ·A2(6400x64): 3 of them.
  const double fc1_raw = 2 * r * 32 * 6400 * 2 + 2 * r * 6400 * 64 * 3;
  // fc1 at W_eff: A1·A2 (32x6400x64) forward and both gradients, then x·W (no input gradient).
  const double fc1_cut = 2.0 * 32 * 6400 * 64 * 3 + 2 * r * 32 * 64 * 2;
  const double fc2_raw = 2 * r * 64 * 6400 * 3 + 2 * r * 6400 * 10 * 3;
  const double fc2_cut = 2.0 * 64 * 6400 * 10 * 3 + 2 * r * 64 * 10 * 3;
  EXPECT_NEAR(costs[0].raw.compute_s, fc1_raw / G, 1e-12);
  EXPECT_NEAR(costs[0].cut.compute_s, fc1_cut / G, 1e-12);
  EXPECT_NEAR(costs[1].raw.compute_s, fc2_raw / G, 1e-12);
  EXPECT_NEAR(costs[1].cut.compute_s, fc2_cut / G, 1e-12);
  EXPECT_EQ(costs[0].raw.bytes, 4 * (6400 * 32 + 64 * 6400));
  EXPECT_EQ(costs[0].cut.bytes, 4 * 64 * 32);
  EXPECT_TRUE(costs[0].has_choice && costs[1].has_choice);
  // At 1 GB/s: fc1's factors (2.45 MB, 2.45 ms) are cheaper than forming W_eff (+5.25 ms); fc2's
  // W_eff (+0.19 ms) is cheaper than sending its factors (1.89 MB).
  EXPECT_EQ(choices(train::choose_cuts(costs, link(1e9))), (std::vector<std::string>{"raw", "weight"}));
}

TEST(CutChooser, CalibrationTimesBothOptionsLeavesTrainingAloneAndCaches) {
  torch::manual_seed(7);
  auto net = mlp("model: {kind: mlp, widths: [16, 48, 10]}\nparam: {kind: expanded, factor: 8, depth: 3}", 16);
  std::vector<torch::Tensor> before;
  for (auto& p : net->parameters()) before.push_back(p.detach().clone());
  test::TempDir dir;
  train::CalibrationOptions o;
  o.cache_dir = dir.path().string();
  o.micro_rows = 4;
  torch::manual_seed(11);
  auto c = train::calibrate_cuts(*net, dist::comm_local(), o);
  const auto after_draw = torch::rand({4});
  torch::manual_seed(11);
  EXPECT_TRUE(torch::equal(after_draw, torch::rand({4}))) << "the calibration drew random numbers";
  size_t i = 0;
  for (auto& p : net->parameters()) {
    EXPECT_TRUE(torch::equal(p, before[i++])) << "the calibration changed a parameter";
    EXPECT_FALSE(p.grad().defined()) << "the calibration left a gradient behind";
  }
  ASSERT_EQ(c.layers.size(), 2u);
  for (const auto& l : c.layers) {
    EXPECT_EQ(l.compute_source, "timed") << l.name;
    EXPECT_GT(l.raw.compute_s, 0) << l.name;
    EXPECT_GT(l.cut.compute_s, 0) << l.name;
  }
  // The timing left no cut active behind.
  for (auto& s : net->slots()) EXPECT_FALSE(s.param->cut_active()) << s.name;
  EXPECT_EQ(c.link.source, "measured");
  // The cache: one file, and the second calibration measures nothing.
  std::vector<std::filesystem::path> files;
  for (auto& e : std::filesystem::directory_iterator(dir.path() / "calibration")) files.push_back(e.path());
  ASSERT_EQ(files.size(), 1u);
  auto again = train::calibrate_cuts(*net, dist::comm_local(), o);
  EXPECT_EQ(again.link.source, "cached " + files[0].string());
  for (size_t j = 0; j < again.layers.size(); ++j) {
    EXPECT_EQ(again.layers[j].compute_source, "timed (cached)");
    EXPECT_DOUBLE_EQ(again.layers[j].raw.compute_s, c.layers[j].raw.compute_s);
    EXPECT_DOUBLE_EQ(again.layers[j].cut.compute_s, c.layers[j].cut.compute_s);
  }
  // With micro-batches the cut forms W_eff once per step: the cached per-micro-batch times, scaled.
  o.grad_accum = 3;
  auto accum = train::calibrate_cuts(*net, dist::comm_local(), o);
  EXPECT_EQ(accum.layers[0].compute_source, "timed (cached)");
  EXPECT_DOUBLE_EQ(accum.layers[0].raw.compute_s, 3 * c.layers[0].raw.compute_s);
  EXPECT_LT(accum.layers[0].cut.compute_s, 3 * c.layers[0].cut.compute_s);
  EXPECT_GT(accum.layers[0].cut.compute_s, c.layers[0].cut.compute_s);
  o.grad_accum = 1;
  // A damaged cache is measured again (and rewritten), never trusted or fatal: YAML that does not
  // parse, YAML of the wrong shape, and values that cannot be times.
  for (const char* bad :
       {"link: [unclosed\n", "link: 5\nlayers: [1, 2]\n", "link: {latency_s: 0, bytes_per_s: -1, overlap: 0}\n"}) {
    std::ofstream(files[0]) << bad;
    auto fresh = train::calibrate_cuts(*net, dist::comm_local(), o);
    EXPECT_EQ(fresh.link.source, "measured") << bad;
    EXPECT_EQ(fresh.layers[0].compute_source, "timed") << bad;
  }
  // The GEMM rate given: the planner's FLOPs, no timing.
  o.gemm_gflops = 10;
  o.cache_dir.clear();
  auto flops = train::calibrate_cuts(*net, dist::comm_local(), o);
  EXPECT_EQ(flops.layers[0].compute_source, "flops");
}
