// main() of the Google Benchmark programs: the OpenBLAS kernels xpand trains with (core/blas.h),
// then the usual benchmark::Initialize / RunSpecifiedBenchmarks.
#pragma once
#include <benchmark/benchmark.h>

#include "core/blas.h"

#define XPAND_BENCHMARK_MAIN()                                            \
  int main(int argc, char** argv) {                                      \
    xpand::blas::select_kernels(argc, argv);                             \
    benchmark::Initialize(&argc, argv);                                  \
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;    \
    benchmark::RunSpecifiedBenchmarks();                                 \
    benchmark::Shutdown();                                               \
    return 0;                                                            \
  }
