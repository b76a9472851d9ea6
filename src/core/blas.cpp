// BLAS kernel selection (see blas.h).
#include "core/blas.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace xpand::blas {

const char* core_name() {
  using Fn = char* (*)();
  auto fn = reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  return fn ? fn() : "";
}

void select_kernels(int argc, char** argv) {
  (void)argc;
  (void)argv;
  if (std::getenv("OPENBLAS_CORETYPE")) return;  // the user's choice (or our own re-execution)
  const char* keep = std::getenv("XPAND_BLAS_KERNELS");
  if (keep && std::strcmp(keep, "keep") == 0) return;
  const std::string core = core_name();
  // The generic fallbacks of OpenBLAS's x86-64 dynamic builds.
  if (core != "Prescott" && core != "Core2" && core != "Nehalem" && core != "Sandybridge") return;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  const char* better = nullptr;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
    better = "SkylakeX";
  else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    better = "Haswell";
  if (!better) return;
  if (core == better) return;
  setenv("OPENBLAS_CORETYPE", better, 1);
  execv("/proc/self/exe", argv);
  std::fprintf(stderr,
               "xpand: warning: OpenBLAS runs its %s kernels on a CPU with %s's instructions and "
               "re-executing with OPENBLAS_CORETYPE=%s failed (%s); set it in the environment\n",
               core.c_str(), better, better, std::strerror(errno));
#else
  (void)argv;  // OpenBLAS's x86 fallbacks only
#endif
}

}  // namespace xpand::blas
