// Shared by the hand-written element loops (the single-pass optimizers, fastfood's Walsh–Hadamard
// transform): one clone of a loop per x86 vector width (AVX-512, AVX2, baseline), the best picked
// when the program loads; elsewhere a plain function. No libtorch headers (fused_kernels.cpp is
// built without them).
#pragma once
#include <cstdint>

#if defined(__x86_64__) && defined(__GNUC__)
#define XPAND_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define XPAND_VECTOR_CLONES
#endif

namespace xpand {
// Elements per at::parallel_for task of an element loop: well above the task's dispatch cost.
constexpr int64_t kElementGrain = 1 << 14;
}  // namespace xpand
