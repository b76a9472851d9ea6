// Low-rank inference, the low-rank notebook's question ("now try doing inference, how much
// improvement do you see?"): its network 784-1024-1024-512-256-10 (no biases) with the first four
// layers as B·C at ranks [k, k, k, k/2] ([150, 150, 150, 80] at k = 150, the notebook's), evaluated
//   factored   each low-rank layer as x·Cᵀ then ·Bᵀ (param::ExpandedFormScope: never through B·C)
//   collapsed  the same network collapsed (model::network_collapse): one dense B·C per layer
//   dense      the dense network of the same widths (the notebook's baseline; its arithmetic is the
//              collapsed network's, measured separately)
// at batch 1, 32 and 1024, in evaluation mode without gradients. Every form is timed alternately in
// one loop (this machine's GEMM rate drifts by ±20% over seconds; alternating cancels the drift):
//   build/bench/bench_lowrank_inference --benchmark_counters_tabular=true
// Counters per (k, batch): the median milliseconds of a forward in each form, samples per second,
// and factored_vs_collapsed = factored / collapsed time (below 1: keeping the factors wins). The
// multiply-adds per sample, r(m + n) factored against mn collapsed, say where the crossover should
// be: Σ over the four layers is equal near k = 430.
// BM_train_step/<k>: one Adam training step at batch 128 (the notebook compares training times too:
// low-rank 4m00s against dense 5m17s), low-rank (planner's order) and dense alternating.
#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <vector>

#include "bench_main.h"
#include "config/config.h"
#include "core/timer.h"
#include "data/dataset.h"
#include "model/network.h"
#include "param/form.h"
#include "train/optim.h"

namespace {

using xpand::config::Config;

const char* kNet =
    "data: {name: teacher, teacher_inputs: 784, batch_size: 128}\n"
    "model: {kind: mlp, widths: [784, 1024, 1024, 512, 256, 10], bias: false}\n";

// fc4's rank for fc1..fc3 at k: the notebook's [150, 150, 150, 80], else k / 2.
int64_t last_rank(int64_t k) { return k == 150 ? 80 : k / 2; }

Config lowrank_cfg(int64_t k) {
  return Config::load_string(
      fmt::format("{}layers: {{fc1: {{kind: lowrank, rank: {}}}, fc2: {{kind: lowrank, rank: {}}}, "
                  "fc3: {{kind: lowrank, rank: {}}}, fc4: {{kind: lowrank, rank: {}}}}}\n",
                  kNet, k, k, k, last_rank(k)),
      "<bench>");
}
Config dense_cfg() { return Config::load_string(kNet, "<bench>"); }

xpand::data::Dataset shapes() {
  xpand::data::Dataset ds;
  ds.name = "teacher";
  ds.sample_shape = {784};
  ds.num_classes = 10;
  return ds;
}

xpand::model::NetworkPtr build(const Config& cfg) {
  torch::manual_seed(0);
  auto net = xpand::model::network_build(cfg, shapes(), xpand::param::factory_from_config(cfg));
  net->eval();
  return net;
}

double median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}

// Multiply-adds per sample of the four low-rank layers, factored and collapsed.
std::pair<double, double> macs(int64_t k) {
  const int64_t dims[5] = {784, 1024, 1024, 512, 256};
  double f = 0, c = 0;
  for (int i = 0; i < 4; ++i) {
    const double r = i == 3 ? double(last_rank(k)) : double(k);
    f += r * double(dims[i] + dims[i + 1]);
    c += double(dims[i]) * double(dims[i + 1]);
  }
  return {f, c};
}

void BM_inference(benchmark::State& state) {
  const int64_t k = state.range(0), batch = state.range(1);
  auto lowrank = build(lowrank_cfg(k));
  const auto ds = shapes();
  auto collapsed = xpand::model::network_collapse(lowrank_cfg(k), ds, *lowrank);
  collapsed->eval();
  auto dense = build(dense_cfg());
  torch::NoGradGuard ng;
  auto x = torch::randn({batch, 784});
  std::vector<double> tf, tc, td;
  for (auto _ : state) {
    xpand::Timer a;
    {
      xpand::param::ExpandedFormScope factored;
      benchmark::DoNotOptimize(lowrank->forward(x).data_ptr());
    }
    tf.push_back(a.seconds());
    xpand::Timer b;
    benchmark::DoNotOptimize(collapsed->forward(x).data_ptr());
    tc.push_back(b.seconds());
    xpand::Timer c;
    benchmark::DoNotOptimize(dense->forward(x).data_ptr());
    td.push_back(c.seconds());
  }
  const auto [mf, mc] = macs(k);
  state.SetLabel(fmt::format("ranks [{0},{0},{0},{1}] batch {2}", k, last_rank(k), batch));
  state.counters["factored_ms"] = 1e3 * median(tf);
  state.counters["collapsed_ms"] = 1e3 * median(tc);
  state.counters["dense_ms"] = 1e3 * median(td);
  state.counters["factored_per_s"] = double(batch) / median(tf);
  state.counters["collapsed_per_s"] = double(batch) / median(tc);
  state.counters["factored_vs_collapsed"] = median(tf) / median(tc);
  state.counters["macs_ratio"] = mf / mc;
}
void rank_batch_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"k", "batch"});
  for (int64_t batch : {1, 32, 1024})
    for (int64_t k : {40, 80, 150, 200, 300, 400, 500}) b->Args({k, batch});
}
BENCHMARK(BM_inference)->Apply(rank_batch_args)->Unit(benchmark::kMillisecond)->MinTime(1.0);

// One Adam step at batch 128, the low-rank network (the planner's order) and the dense one alternating.
void BM_train_step(benchmark::State& state) {
  const int64_t k = state.range(0);
  auto lowrank = build(lowrank_cfg(k));
  auto dense = build(dense_cfg());
  lowrank->train();
  dense->train();
  auto cfg = lowrank_cfg(k);
  auto ol = xpand::train::optimizer_build(cfg, lowrank->parameters());
  auto od = xpand::train::optimizer_build(dense_cfg(), dense->parameters());
  auto ds = xpand::data::dataset_load(dense_cfg(), torch::kCPU);
  int64_t step = 0;
  auto one = [&](xpand::model::Network& net, torch::optim::Optimizer& opt) {
    auto b = ds.train_batch(0, step, 128);
    for (auto& t : net.parameters()) t.mutable_grad() = torch::Tensor();
    auto loss = torch::cross_entropy_loss(net.forward(b.x), b.y);
    loss.backward();
    opt.step();
  };
  std::vector<double> tl, td;
  for (auto _ : state) {
    xpand::Timer a;
    one(*lowrank, *ol);
    tl.push_back(a.seconds());
    xpand::Timer b;
    one(*dense, *od);
    td.push_back(b.seconds());
    ++step;
  }
  state.SetLabel(fmt::format("ranks [{0},{0},{0},{1}] batch 128", k, last_rank(k)));
  state.counters["lowrank_ms"] = 1e3 * median(tl);
  state.counters["dense_ms"] = 1e3 * median(td);
  state.counters["lowrank_vs_dense"] = median(tl) / median(td);
}
BENCHMARK(BM_train_step)->ArgName("k")->Arg(150)->Arg(40)->Unit(benchmark::kMillisecond)->MinTime(2.0);

}  // namespace

XPAND_BENCHMARK_MAIN()
