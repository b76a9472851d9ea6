// Training-step throughput of the base networks next to the GEMM rate of the same shapes, so the
// fraction of the machine's matmul speed a step achieves is read off one run (BM_mlp_step's FLOP/s
// over BM_mlp_gemms' at the same width and batch), with the step split into forward+backward and
// optimizer (BM_mlp_part):
//   build/bench/bench_step --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include "bench_main.h"
#include "config/config.h"
#include "data/dataset.h"
#include "model/network.h"
#include "train/optim.h"

namespace {

using xpand::config::Config;

// A 784-W-W-10 MLP with Adam on the synthetic teacher's data (in memory), trained the way `xpand
// train` does it: a fresh batch each step, gradients reset to none. Repeating one batch would let
// the network memorise it within a few dozen steps; its gradients then fall into the denormal range,
// where the GEMMs run several times slower than in real training.
struct Mlp {
  static xpand::data::Dataset seeded(const Config& cfg) {  // the seed set before data and init
    torch::manual_seed(0);
    return xpand::data::dataset_load(cfg, torch::kCPU);
  }
  Mlp(int64_t width, int64_t batch)
      : batch(batch),
        cfg(Config::load_string(fmt::format("data: {{name: teacher, teacher_inputs: 784, batch_size: {}}}\n"
                                            "model: {{kind: mlp, widths: [784, {}, {}, 10]}}\n",
                                            batch, width, width),
                                "<bench>")),
        ds(seeded(cfg)),
        net(xpand::model::network_build(cfg, ds, xpand::param::factory_from_config(cfg))),
        opt(xpand::train::optimizer_build(cfg, net->parameters())) {}
  torch::Tensor forward_backward() {
    auto b = ds.train_batch(0, step++, batch);
    for (auto& p : net->parameters()) p.mutable_grad() = torch::Tensor();  // as the trainer does
    auto loss = torch::cross_entropy_loss(net->forward(b.x), b.y);
    loss.backward();
    return loss;
  }
  int64_t batch, step = 0;
  Config cfg;
  xpand::data::Dataset ds;
  xpand::model::NetworkPtr net;
  std::unique_ptr<torch::optim::Optimizer> opt;
};

// One training step.
void BM_mlp_step(benchmark::State& state) {
  Mlp m(state.range(0), state.range(1));
  for (auto _ : state) {
    auto loss = m.forward_backward();
    m.opt->step();
    benchmark::DoNotOptimize(loss.data_ptr());
  }
  auto rep = xpand::model::network_report(*m.net, m.batch);
  state.counters["FLOP/s"] = benchmark::Counter(rep.flops, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_mlp_step)
    ->ArgNames({"width", "batch"})
    ->Args({512, 128})
    ->Args({1024, 128})
    ->Args({512, 1024})
    ->Unit(benchmark::kMillisecond);

// Where a step's time goes: forward+backward alone (part 0), the optimizer alone (part 1: xpand's
// single-pass Adam), and libtorch's own Adam on the same tensors and gradients (part 2).
void BM_mlp_part(benchmark::State& state) {
  Mlp m(state.range(0), state.range(1));
  const int64_t part = state.range(2);
  m.forward_backward();
  torch::optim::Adam libtorch_adam(m.net->parameters(), torch::optim::AdamOptions(1e-3));
  for (auto _ : state) {
    if (part == 0)
      benchmark::DoNotOptimize(m.forward_backward().data_ptr());
    else if (part == 1)
      m.opt->step();
    else
      libtorch_adam.step();
  }
}
BENCHMARK(BM_mlp_part)
    ->ArgNames({"width", "batch", "part"})
    ->Args({512, 128, 0})
    ->Args({512, 128, 1})
    ->Args({512, 128, 2})
    ->Unit(benchmark::kMillisecond);

// The GEMMs a step of the 784-W-W-10 MLP performs, alone, with libtorch's own calls and layouts:
// forward addmm(b, x, Wᵀ) per layer, backward dX = dY·W (not for the input layer) and dW = dYᵀ·X.
// Its FLOP/s is the rate this machine reaches on the step's matrix shapes: the denominator of the
// step's efficiency (BM_mlp_step's FLOP/s over this one's, same width and batch).
void BM_mlp_gemms(benchmark::State& state) {
  int64_t width = state.range(0), batch = state.range(1);
  std::vector<int64_t> dims = {784, width, width, 10};
  std::vector<torch::Tensor> w, bias, x, dy;
  double flops = 0;
  for (size_t l = 0; l + 1 < dims.size(); ++l) {
    w.push_back(torch::randn({dims[l + 1], dims[l]}));
    bias.push_back(torch::randn({dims[l + 1]}));
    x.push_back(torch::randn({batch, dims[l]}));
    dy.push_back(torch::randn({batch, dims[l + 1]}));
    flops += 2.0 * batch * dims[l] * dims[l + 1] * (l == 0 ? 2 : 3);
  }
  for (auto _ : state)
    for (size_t l = 0; l < w.size(); ++l) {
      benchmark::DoNotOptimize(torch::addmm(bias[l], x[l], w[l].t()));
      if (l > 0) benchmark::DoNotOptimize(torch::mm(dy[l], w[l]));
      benchmark::DoNotOptimize(torch::mm(dy[l].t(), x[l]));
    }
  state.counters["FLOP/s"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_mlp_gemms)
    ->ArgNames({"width", "batch"})
    ->Args({512, 128})
    ->Args({1024, 128})
    ->Args({512, 1024})
    ->Unit(benchmark::kMillisecond);

// torch::mm at the step's largest shape: (B x K) · (K x N).
void BM_gemm(benchmark::State& state) {
  int64_t m = state.range(0), k = state.range(1), n = state.range(2);
  auto a = torch::randn({m, k}), b = torch::randn({k, n});
  for (auto _ : state) benchmark::DoNotOptimize(torch::mm(a, b));
  state.counters["FLOP/s"] = benchmark::Counter(2.0 * m * k * n, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_gemm)
    ->ArgNames({"m", "k", "n"})
    ->Args({128, 784, 512})
    ->Args({128, 512, 512})
    ->Args({1024, 784, 512})
    ->Unit(benchmark::kMillisecond);

}  // namespace

XPAND_BENCHMARK_MAIN()
