// main() of the Google Benchmark programs: the OpenBLAS kernels xpand trains with (core/blas.h),
// the intra-op threads xpand trains with, then the usual benchmark::Initialize /
// RunSpecifiedBenchmarks.
#pragma once
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <thread>

#include "core/blas.h"
#include "core/log.h"

namespace xpand::bench {

// Intra-op threads: XPAND_BENCH_THREADS, else every core, as `xpand train` on one rank uses them
// (libtorch's own default on this machine is 1 thread).
inline void use_threads() {
  const char* env = std::getenv("XPAND_BENCH_THREADS");
  int n = env && *env ? std::atoi(env) : int(std::thread::hardware_concurrency());
  torch::set_num_threads(std::max(1, n));
  benchmark::AddCustomContext("torch_num_threads", std::to_string(torch::get_num_threads()));
}

}  // namespace xpand::bench

#define XPAND_BENCHMARK_MAIN()                                          \
  int main(int argc, char** argv) {                                     \
    xpand::blas::select_kernels(argc, argv);                            \
    xpand::bench::use_threads();                                        \
    xpand::log::set_level("warn"); /* no set-up lines among the rows */ \
    benchmark::Initialize(&argc, argv);                                 \
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;   \
    benchmark::RunSpecifiedBenchmarks();                                \
    benchmark::Shutdown();                                              \
    return 0;                                                           \
  }
