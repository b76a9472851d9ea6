// Training-step throughput of the base networks next to the GEMM rate of the same shapes, so the
// fraction of the machine's matmul speed a step achieves is read off one run:
//   build/bench/bench_step --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include "config/config.h"
#include "data/dataset.h"
#include "model/network.h"
#include "train/optim.h"
#include "bench_main.h"

namespace {

using xpand::config::Config;

// One Adam step of a 784-W-W-10 MLP at batch B on random data already in memory.
void BM_mlp_step(benchmark::State& state) {
  int64_t width = state.range(0), batch = state.range(1);
  auto cfg = Config::load_string(
      fmt::format("data: {{name: teacher, teacher_inputs: 784, batch_size: {}}}\n"
                  "model: {{kind: mlp, widths: [784, {}, {}, 10]}}\n", batch, width, width),
      "<bench>");
  torch::manual_seed(0);
  xpand::data::Dataset ds;
  ds.sample_shape = {784};
  ds.num_classes = 10;
  auto net = xpand::model::network_build(cfg, ds, xpand::param::factory_from_config(cfg));
  auto opt = xpand::train::optimizer_build(cfg, net->parameters());
  auto x = torch::randn({batch, 784});
  auto y = torch::randint(0, 10, {batch}, torch::kInt64);
  for (auto _ : state) {
    opt->zero_grad();
    auto loss = torch::cross_entropy_loss(net->forward(x), y);
    loss.backward();
    opt->step();
    benchmark::DoNotOptimize(loss.data_ptr());
  }
  auto rep = xpand::model::network_report(*net, batch);
  state.counters["FLOP/s"] = benchmark::Counter(rep.flops, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_mlp_step)->ArgNames({"width", "batch"})->Args({512, 128})->Args({1024, 128})->Args({512, 1024})
    ->Unit(benchmark::kMillisecond);

// torch::mm at the step's largest shape: (B x K) · (K x N).
void BM_gemm(benchmark::State& state) {
  int64_t m = state.range(0), k = state.range(1), n = state.range(2);
  auto a = torch::randn({m, k}), b = torch::randn({k, n});
  for (auto _ : state) benchmark::DoNotOptimize(torch::mm(a, b));
  state.counters["FLOP/s"] = benchmark::Counter(2.0 * m * k * n, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_gemm)->ArgNames({"m", "k", "n"})->Args({128, 784, 512})->Args({128, 512, 512})->Args({1024, 784, 512})
    ->Unit(benchmark::kMillisecond);

}  // namespace

XPAND_BENCHMARK_MAIN()
