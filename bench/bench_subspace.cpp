// Subspace training against θ-space training on the ω-space notebook's network (784-200-200-10 with
// biases, D = 199,210, batch 256, Adam), every projection side by side in one run:
//   build/bench/bench_subspace --benchmark_counters_tabular=true
// BM_theta_step: one ordinary step. BM_omega_step/<projection>/<d>: the same forward and backward,
// then ω's gradient Pᵀ∂L/∂θ, Adam on ω and θ = θ0 + Pω (what the trainer does). The counter
// vs_theta is the step time over BM_theta_step's, measured earlier in the same process.
// BM_alternating/<projection>/<d>: θ and ω steps alternating in one loop, the ratio of their
// medians (the number to quote: it is immune to the machine's drift between rows).
// BM_setup/<projection>/<d>: building P (for dense-qr the QR factorisation).
#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "bench_main.h"
#include "config/config.h"
#include "core/timer.h"
#include "data/dataset.h"
#include "model/network.h"
#include "train/optim.h"
#include "train/subspace.h"

namespace {

using xpand::config::Config;

const char* kProjections[] = {"dense", "dense-qr", "sparse", "fastfood"};
double g_theta_seconds = 0;  // BM_theta_step's time per step

Config omega_cfg(const std::string& projection, int64_t d) {
  return Config::load_string(
      fmt::format("data: {{name: teacher, teacher_inputs: 784, batch_size: 256}}\n"
                  "model: {{kind: mlp, widths: [784, 200, 200, 10], bias: true}}\n"
                  "param: {{kind: subspace, omega_dim: {}, projection: {}, max_projection_bytes: 4e9}}\n",
                  d, projection),
      "<bench>");
}

// A fresh batch of the synthetic teacher's data (in memory) every step, as in training: one batch
// repeated is memorised within a few dozen steps, and the gradients then fall into the denormal
// range, where the θ-space step ran 2x slower than in training.
struct Problem {
  xpand::model::NetworkPtr net;
  xpand::data::Dataset ds;
  int64_t step = 0;
  xpand::data::Batch next() { return ds.train_batch(0, step++, 256); }
};

Problem make_problem(const Config& cfg) {
  torch::manual_seed(0);
  Problem p;
  p.ds = xpand::data::dataset_load(cfg, torch::kCPU);
  p.net = xpand::model::network_build(cfg, p.ds, xpand::param::factory_from_config(cfg));
  return p;
}

// One θ-space training step (fresh batch, Adam over every tensor).
struct ThetaStep {
  Config cfg = Config::load_string(
      "data: {name: teacher, teacher_inputs: 784, batch_size: 256}\n"
      "model: {kind: mlp, widths: [784, 200, 200, 10], bias: true}\n",
      "<bench>");
  Problem p = make_problem(cfg);
  std::unique_ptr<torch::optim::Optimizer> opt = xpand::train::optimizer_build(cfg, p.net->parameters());
  void operator()() {
    auto b = p.next();
    for (auto& t : p.net->parameters()) t.mutable_grad() = torch::Tensor();  // as the trainer does
    auto loss = torch::cross_entropy_loss(p.net->forward(b.x), b.y);
    loss.backward();
    opt->step();
    benchmark::DoNotOptimize(loss.data_ptr());
  }
};

// One ω-space step: the same forward and backward, ω's gradient Pᵀ∂L/∂θ, Adam on ω, θ = θ0 + Pω.
struct OmegaStep {
  OmegaStep(const std::string& kind, int64_t d) : cfg(omega_cfg(kind, d)), p(make_problem(cfg)) {
    std::vector<torch::Tensor> theta;
    for (auto& t : p.net->parameters()) theta.push_back(t);
    sub = std::make_unique<xpand::train::Subspace>(cfg, theta, 0);
    opt = xpand::train::optimizer_build(cfg, {sub->omega()});
  }
  void operator()() {
    auto b = p.next();
    sub->omega().mutable_grad() = torch::Tensor();
    p.net->zero_grad(/*set_to_none=*/true);
    auto loss = torch::cross_entropy_loss(p.net->forward(b.x), b.y);
    loss.backward();
    sub->pull_grad();
    opt->step();
    sub->push();
    benchmark::DoNotOptimize(loss.data_ptr());
  }
  Config cfg;
  Problem p;
  std::unique_ptr<xpand::train::Subspace> sub;
  std::unique_ptr<torch::optim::Optimizer> opt;
};

void BM_theta_step(benchmark::State& state) {
  ThetaStep step;
  xpand::Timer t;
  for (auto _ : state) step();
  g_theta_seconds = t.seconds() / double(state.iterations());
}
BENCHMARK(BM_theta_step)->Unit(benchmark::kMillisecond);

void BM_omega_step(benchmark::State& state) {
  const std::string kind = kProjections[state.range(0)];
  const int64_t d = state.range(1);
  OmegaStep step(kind, d);
  xpand::Timer t;
  for (auto _ : state) step();
  const double seconds = t.seconds() / double(state.iterations());
  state.SetLabel(fmt::format("{} d={}", kind, d));
  if (g_theta_seconds > 0) state.counters["vs_theta"] = seconds / g_theta_seconds;
  state.counters["P_MB"] = step.sub->projection_bytes() / 1e6;
}

// A θ-space step and an ω-space step alternating in one loop, each timed: the ratio of their
// medians. The vs_theta counters above compare steps measured seconds apart, and this machine's
// speed drifts by ±20% over seconds; alternating cancels the drift. The time reported is the pair's.
void BM_alternating(benchmark::State& state) {
  const std::string kind = kProjections[state.range(0)];
  const int64_t d = state.range(1);
  ThetaStep theta;
  OmegaStep omega(kind, d);
  std::vector<double> tt, to;
  for (auto _ : state) {
    xpand::Timer a;
    theta();
    tt.push_back(a.seconds());
    xpand::Timer b;
    omega();
    to.push_back(b.seconds());
  }
  auto median = [](std::vector<double> v) {
    std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
    return v[v.size() / 2];
  };
  state.SetLabel(fmt::format("{} d={}", kind, d));
  state.counters["theta_ms"] = 1e3 * median(tt);
  state.counters["omega_ms"] = 1e3 * median(to);
  state.counters["ratio"] = median(to) / median(tt);
}
BENCHMARK(BM_alternating)
    ->ArgNames({"projection", "d"})
    ->Args({3, 1000})
    ->Args({3, 100})
    ->Args({1, 100})
    ->Unit(benchmark::kMillisecond)
    ->MinTime(2.0);

void BM_setup(benchmark::State& state) {
  const std::string kind = kProjections[state.range(0)];
  const int64_t d = state.range(1);
  auto cfg = omega_cfg(kind, d);
  for (auto _ : state) {
    auto proj = xpand::train::projection_make(cfg, kind, 199210, d, 1, torch::kFloat32, torch::kCPU);
    benchmark::DoNotOptimize(proj.get());
  }
  state.SetLabel(fmt::format("{} d={}", kind, d));
}

void projection_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"projection", "d"});
  for (int64_t kind = 0; kind < 4; ++kind)
    for (int64_t d : {10, 100, 1000}) {
      if (kind == 1 && d == 1000) continue;  // dense-qr at d = 1000: ~1 min of QR per set-up (see docs)
      b->Args({kind, d});
    }
}
BENCHMARK(BM_omega_step)->Apply(projection_args)->Unit(benchmark::kMillisecond);

// One in-place Hadamard transform of L = 2^18 floats (fastfood's length for this network; a step
// runs four), against a copy of the same buffer (memory traffic of one pass).
void BM_hadamard(benchmark::State& state) {
  auto x = torch::randn({int64_t(1) << 18});
  for (auto _ : state) benchmark::DoNotOptimize(xpand::train::hadamard_transform(x).data_ptr());
  state.counters["GB/s_per_pass"] =
      benchmark::Counter(double(x.nbytes()) * 9 * 2, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_hadamard)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_setup)->Apply(projection_args)->Unit(benchmark::kMillisecond)->Iterations(1);

}  // namespace

XPAND_BENCHMARK_MAIN()
