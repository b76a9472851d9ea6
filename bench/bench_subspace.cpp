// Subspace training against θ-space training on the ω-space notebook's network (784-200-200-10 with
// biases, D = 199,210, batch 256, Adam), every projection side by side in one run:
//   build/bench/bench_subspace --benchmark_counters_tabular=true
// BM_theta_step: one ordinary step. BM_omega_step/<projection>/<d>: the same forward and backward,
// then ω's gradient Pᵀ∂L/∂θ, Adam on ω and θ = θ0 + Pω (what the trainer does). The counter
// vs_theta is the step time over BM_theta_step's, measured earlier in the same process.
// BM_setup/<projection>/<d>: building P (for dense-qr the QR factorisation).
#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include "config/config.h"
#include "core/timer.h"
#include "data/dataset.h"
#include "model/network.h"
#include "train/optim.h"
#include "train/subspace.h"
#include "bench_main.h"

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

void BM_theta_step(benchmark::State& state) {
  auto cfg = Config::load_string(
      "data: {name: teacher, teacher_inputs: 784, batch_size: 256}\n"
      "model: {kind: mlp, widths: [784, 200, 200, 10], bias: true}\n",
      "<bench>");
  auto p = make_problem(cfg);
  auto opt = xpand::train::optimizer_build(cfg, p.net->parameters());
  xpand::Timer t;
  for (auto _ : state) {
    auto b = p.next();
    for (auto& t : p.net->parameters()) t.mutable_grad() = torch::Tensor();  // as the trainer does
    auto loss = torch::cross_entropy_loss(p.net->forward(b.x), b.y);
    loss.backward();
    opt->step();
    benchmark::DoNotOptimize(loss.data_ptr());
  }
  g_theta_seconds = t.seconds() / double(state.iterations());
}
BENCHMARK(BM_theta_step)->Unit(benchmark::kMillisecond);

void BM_omega_step(benchmark::State& state) {
  const std::string kind = kProjections[state.range(0)];
  const int64_t d = state.range(1);
  auto cfg = omega_cfg(kind, d);
  auto p = make_problem(cfg);
  std::vector<torch::Tensor> theta;
  for (auto& t : p.net->parameters()) theta.push_back(t);
  xpand::train::Subspace sub(cfg, theta, 0);
  auto opt = xpand::train::optimizer_build(cfg, {sub.omega()});
  xpand::Timer t;
  for (auto _ : state) {
    auto b = p.next();
    sub.omega().mutable_grad() = torch::Tensor();
    p.net->zero_grad(/*set_to_none=*/true);
    auto loss = torch::cross_entropy_loss(p.net->forward(b.x), b.y);
    loss.backward();
    sub.pull_grad();
    opt->step();
    sub.push();
    benchmark::DoNotOptimize(loss.data_ptr());
  }
  const double step = t.seconds() / double(state.iterations());
  state.SetLabel(fmt::format("{} d={}", kind, d));
  if (g_theta_seconds > 0) state.counters["vs_theta"] = step / g_theta_seconds;
  state.counters["P_MB"] = sub.projection_bytes() / 1e6;
}

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
  state.counters["GB/s_per_pass"] = benchmark::Counter(double(x.nbytes()) * 9 * 2, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_hadamard)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_setup)->Apply(projection_args)->Unit(benchmark::kMillisecond)->Iterations(1);

}  // namespace

XPAND_BENCHMARK_MAIN()
