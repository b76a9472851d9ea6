// Expanded (and low-rank) linear layers against dense ones, in each contraction order, so the
// planner's choices can be checked against measured time (docs/PLANNER.md):
//   build-bench/bench/bench_expanded --benchmark_counters_tabular=true \
//       --benchmark_out=/tmp/bench_expanded.json --benchmark_out_format=json
//
// Every row times forward+backward of one layer (or of the nanoGPT MLP pair) on random data:
//   y = p.linear(x, {}); y.backward(g)
// with x NOT requiring grad (the layer is a first layer: no input gradient), so the FLOP counts
// are plan(rows, /*input_grad=*/false). In BM_nanogpt_mlp the second layer (c_proj) always needs
// its input gradient, and the first (c_fc) needs it when input_grad:1 (inside a transformer block,
// where the MLP input is ln_2's output). Parameter gradients are reset to undefined every iteration (zero_grad with
// set_to_none). Untimed warm-up iterations run first (--benchmark_min_warmup_time, default 0.1 s,
// at least one iteration), and main() pins glibc malloc's thresholds (see there).
//
// Rows (ArgNames make the names self-describing):
//   BM_dense/dim:D/batch:B            dense D×D layer
//   BM_expanded/factor:F/depth:d/batch:B/order:o
//       expanded D×D layer, inner width h = F·D, d factors. D = 128 for F in {1, 4, 16} and
//       D = 16 for F = 100 (h = 1600), so the weight-first products of the deepest, widest
//       layers stay affordable (finite run time) on this 2-core machine.
//       order: 0 = activation (x through every factor, the seeds' way), 1 = weight (multiply the
//       factors first, then one dense matmul), 2 = planned (spec.order = "auto", the planner's
//       choice; the label says which order it picked: activation, weight or mixed).
//   BM_collapse/factor:F/depth:d      p.weight() (W_eff, the factor product) under NoGradGuard
//   BM_lowrank/rank:r/batch:B         1024×1024 low-rank layer, planned order (compare BM_dense/dim:1024)
//   BM_nanogpt_mlp/order:o/input_grad:i
//                                     nanoGPT MLP c_fc 384→1536, GELU, c_proj 1536→384, both
//                                     expanded at depth 2 with inner width 2000, 2048 tokens;
//                                     order coded as above; input_grad:1 = the MLP input requires
//                                     grad (as in a block), 0 = it does not (a first layer)
//   BM_nanogpt_mlp_dense/input_grad:i the same pair with two dense layers
//   BM_independent_products/mode:m/dim:D
//                                     19 independent D×D×D products, one after another on all
//                                     threads (0) or one per thread via at::parallel_for (1)
//
// Counters: FLOP/s from plan(rows, input_grad).flops of the order the row uses (forward+backward,
// multiply-add = 2) as an iteration-invariant rate; GFLOP is the same count per iteration.
// Intra-op threads: torch::set_num_threads(2) in main() (this machine has 2 cores; OpenBLAS is
// the OpenMP build, so the same setting governs the GEMMs).
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <malloc.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "core/blas.h"
#include "param/dense.h"
#include "param/expanded.h"
#include "param/lowrank.h"
#include "param/param.h"
#include "param/spec.h"

namespace {

using xpand::param::Dense;
using xpand::param::Expanded;
using xpand::param::Init;
using xpand::param::LowRank;
using xpand::param::Parameterization;
using xpand::param::Spec;
using xpand::param::WeightShape;

// Default flags: --benchmark_min_time (seconds per row; rows slower than that run one timed
// iteration) and --benchmark_min_warmup_time (untimed iterations first). Passed as default flags
// rather than ->MinTime() so the row names carry no /min_time suffix; the same flags on the
// command line override them.
const char* const kDefaultFlags[] = {"--benchmark_min_time=0.3", "--benchmark_min_warmup_time=0.1"};

const char* order_name(int64_t code) {
  switch (code) {
    case 0:
      return "activation";
    case 1:
      return "weight";
    default:
      return "auto";
  }
}

WeightShape linear_shape(int64_t out, int64_t in) { return WeightShape{{out, in}}; }

std::shared_ptr<Expanded> make_expanded(double factor, int64_t depth, int64_t out, int64_t in, int64_t order) {
  Spec s;
  s.layer = "bench";
  s.kind = "expanded";
  s.factor = factor;
  s.depth = depth;
  s.order = order_name(order);
  auto shape = linear_shape(out, in);
  return std::make_shared<Expanded>(s, shape, Init::torch_default(shape));
}

std::shared_ptr<Dense> make_dense(int64_t out, int64_t in) {
  auto shape = linear_shape(out, in);
  return std::make_shared<Dense>(shape, Init::torch_default(shape));
}

int64_t layer_dim(int64_t factor) { return factor == 100 ? 16 : 128; }

void clear_grads(Parameterization& p) {
  for (auto& t : p.parameters()) t.mutable_grad() = torch::Tensor();
}

// One forward+backward of a single layer.
void step(Parameterization& p, const torch::Tensor& x, const torch::Tensor& g) {
  clear_grads(p);
  auto y = p.linear(x, {});
  y.backward(g);
}

void set_flops(benchmark::State& state, double flops) {
  state.counters["FLOP/s"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP"] = flops * 1e-9;
}

void run_layer(benchmark::State& state, Parameterization& p, int64_t batch) {
  const int64_t in = p.shape().dims[1], out = p.shape().dims[0];
  auto x = torch::randn({batch, in});
  auto g = torch::randn({batch, out});
  for (auto _ : state) {
    step(p, x, g);
    benchmark::ClobberMemory();
  }
  auto plan = p.plan(batch, /*input_grad=*/false);
  set_flops(state, plan.flops);
  state.SetLabel(plan.order);
}

// --- dense --------------------------------------------------------------------------------

void BM_dense(benchmark::State& state) {
  torch::manual_seed(0);
  auto p = make_dense(state.range(0), state.range(0));
  run_layer(state, *p, state.range(1));
}
BENCHMARK(BM_dense)
    ->ArgNames({"dim", "batch"})
    ->ArgsProduct({{16, 128}, {1, 64, 4096}})
    ->Args({1024, 64})
    ->Args({1024, 4096})
    ->Unit(benchmark::kMillisecond);

// --- expanded, each order -----------------------------------------------------------------

void BM_expanded(benchmark::State& state) {
  const int64_t factor = state.range(0), depth = state.range(1), batch = state.range(2), order = state.range(3);
  const int64_t d = layer_dim(factor);
  torch::manual_seed(0);
  auto p = make_expanded(double(factor), depth, d, d, order);
  run_layer(state, *p, batch);
}
// Rows in the order factor, depth, batch, order (order innermost), so the three orders of one
// shape run back to back (ArgsProduct would vary the first argument fastest).
void expanded_rows(benchmark::internal::Benchmark* b) {
  for (int64_t factor : {1, 4, 16, 100})
    for (int64_t depth : {2, 3, 5})
      for (int64_t batch : {1, 64, 4096})
        for (int64_t order : {0, 1, 2}) b->Args({factor, depth, batch, order});
}
BENCHMARK(BM_expanded)
    ->ArgNames({"factor", "depth", "batch", "order"})
    ->Apply(expanded_rows)
    ->Unit(benchmark::kMillisecond);

// --- independent small products: one after another on all threads, or one per thread -------

// The 19 independent products of dim×dim matrices that an expanded layer's backward could run side
// by side (its factor gradients S_k·P_{k−1}ᵀ): mode 0 = one after another, each GEMM on all
// intra-op threads (what autograd does); mode 1 = at::parallel_for over the products, each GEMM on
// its calling thread. Whether mode 1 beats mode 0 decides whether running a chain's products side
// by side can pay (docs/PERFORMANCE.md).
void BM_independent_products(benchmark::State& state) {
  const int64_t mode = state.range(0), dim = state.range(1), n = 19;
  torch::manual_seed(0);
  std::vector<torch::Tensor> a, out;
  for (int64_t i = 0; i <= n; ++i) a.push_back(torch::randn({dim, dim}));
  for (int64_t i = 0; i < n; ++i) out.push_back(torch::empty({dim, dim}));
  auto one = [&](int64_t i) { at::mm_out(out[i], a[i], a[i + 1]); };
  for (auto _ : state) {
    if (mode == 0) {
      for (int64_t i = 0; i < n; ++i) one(i);
    } else {
      at::parallel_for(0, n, 1, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) one(i);
      });
    }
    benchmark::ClobberMemory();
  }
  set_flops(state, 2.0 * double(n) * double(dim) * double(dim) * double(dim));
  state.SetLabel(mode == 0 ? "serial, all threads per product" : "one product per thread");
}
BENCHMARK(BM_independent_products)
    ->ArgNames({"mode", "dim"})
    ->ArgsProduct({{0, 1}, {128, 512}})
    ->Unit(benchmark::kMillisecond);

// --- collapse: W_eff = W_d ⋯ W_1 ----------------------------------------------------------

void BM_collapse(benchmark::State& state) {
  const int64_t factor = state.range(0), depth = state.range(1);
  const int64_t d = layer_dim(factor);
  torch::manual_seed(0);
  auto p = make_expanded(double(factor), depth, d, d, /*order=*/2);
  torch::NoGradGuard no_grad;
  for (auto _ : state) {
    auto w = p->weight();
    benchmark::DoNotOptimize(w.data_ptr());
  }
  // product(): p = W_1 (h×d), then p = W_i · p for i = 2..depth: 2·rows(W_i)·cols(W_i)·d each.
  const double h = double(p->inner_width());
  double flops = 0;
  for (int64_t i = 2; i <= depth; ++i) flops += 2.0 * (i == depth ? double(d) : h) * h * double(d);
  set_flops(state, flops);
}
BENCHMARK(BM_collapse)
    ->ArgNames({"factor", "depth"})
    ->ArgsProduct({{1, 4, 16, 100}, {2, 3, 5}})
    ->Unit(benchmark::kMillisecond);

// --- low rank -------------------------------------------------------------------------------

void BM_lowrank(benchmark::State& state) {
  const int64_t rank = state.range(0), batch = state.range(1);
  torch::manual_seed(0);
  Spec s;
  s.layer = "bench";
  s.kind = "lowrank";
  s.rank = rank;
  s.order = "auto";
  auto shape = linear_shape(1024, 1024);
  LowRank p(s, shape, Init::torch_default(shape));
  run_layer(state, p, batch);
}
BENCHMARK(BM_lowrank)
    ->ArgNames({"rank", "batch"})
    ->ArgsProduct({{8, 64, 256}, {64, 4096}})
    ->Unit(benchmark::kMillisecond);

// --- nanoGPT MLP: c_fc 384→1536, GELU, c_proj 1536→384 at 2048 tokens ------------------------

constexpr int64_t kEmbd = 384, kHidden = 1536, kTokens = 2048, kInner = 2000;

void run_mlp(benchmark::State& state, Parameterization& fc, Parameterization& proj, bool input_grad) {
  auto x = torch::randn({kTokens, kEmbd}).requires_grad_(input_grad);
  auto g = torch::randn({kTokens, kEmbd});
  auto once = [&] {
    clear_grads(fc);
    clear_grads(proj);
    x.mutable_grad() = torch::Tensor();
    auto y = proj.linear(torch::gelu(fc.linear(x, {})), {});
    y.backward(g);
  };
  for (auto _ : state) {
    once();
    benchmark::ClobberMemory();
  }
  auto pf = fc.plan(kTokens, input_grad), pp = proj.plan(kTokens, /*input_grad=*/true);
  set_flops(state, pf.flops + pp.flops);
  state.SetLabel(fmt::format("c_fc:{},c_proj:{}", pf.order, pp.order));
}

void BM_nanogpt_mlp(benchmark::State& state) {
  torch::manual_seed(0);
  // h = round(factor · max(in, out)) = 2000 for both layers (max(in, out) = 1536).
  const double factor = double(kInner) / double(kHidden);
  auto fc = make_expanded(factor, 2, kHidden, kEmbd, state.range(0));
  auto proj = make_expanded(factor, 2, kEmbd, kHidden, state.range(0));
  const bool input_grad = state.range(1) != 0;
  if (fc->inner_width() != kInner || proj->inner_width() != kInner)
    state.SkipWithError(
        fmt::format("inner widths {} and {}, expected {}", fc->inner_width(), proj->inner_width(), kInner).c_str());
  run_mlp(state, *fc, *proj, input_grad);
}
BENCHMARK(BM_nanogpt_mlp)
    ->ArgNames({"order", "input_grad"})
    ->ArgsProduct({{0, 1, 2}, {0, 1}})
    ->Unit(benchmark::kMillisecond);

void BM_nanogpt_mlp_dense(benchmark::State& state) {
  torch::manual_seed(0);
  auto fc = make_dense(kHidden, kEmbd);
  auto proj = make_dense(kEmbd, kHidden);
  run_mlp(state, *fc, *proj, state.range(0) != 0);
}
BENCHMARK(BM_nanogpt_mlp_dense)->ArgName("input_grad")->DenseRange(0, 1)->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  xpand::blas::select_kernels(argc, argv);  // the OpenBLAS kernels xpand trains with (core/blas.h)
  torch::set_num_threads(2);
  benchmark::AddCustomContext("torch_num_threads", std::to_string(torch::get_num_threads()));
  // glibc malloc: serve every block from the heap (no mmap) and never give freed memory back to
  // the kernel, so a training-loop iteration reuses the memory of the previous one. With glibc's
  // defaults, blocks of more than 128 KiB to 32 MiB (the threshold moves with what was freed
  // before) are fresh mmaps, page-faulted and zeroed on every iteration. Identical rows then
  // differed by up to 8x depending on which rows ran before: factor 16, depth 5, batch 1 took
  // 23 ms or 190 ms, and factor 16, depth 2, batch 4096 (33.5 MB activations) took 68 ms to 283 ms.
  // compare_torch.py runs PyTorch under the same settings (GLIBC_TUNABLES); XPAND_BENCH_MALLOC=default
  // leaves glibc's defaults.
  const char* malloc_mode = std::getenv("XPAND_BENCH_MALLOC");
  const bool pin_malloc = !(malloc_mode && std::string(malloc_mode) == "default");
  if (pin_malloc) {
    mallopt(M_MMAP_MAX, 0);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    mallopt(M_TOP_PAD, 64 << 20);
  }
  benchmark::AddCustomContext("malloc", pin_malloc ? "mmap_max=0,trim_threshold=1GiB,top_pad=64MiB" : "glibc default");
  std::vector<char*> args(argv, argv + argc);
  for (const char* flag : kDefaultFlags) args.insert(args.begin() + 1, const_cast<char*>(flag));
  int n = int(args.size());
  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
