// BLAS kernel selection. OpenBLAS (Debian's libopenblas0 builds choose kernels at run time) picks
// its GEMM kernels from the CPU model when the library loads. On CPUs it does not know, as virtual
// machines that report a generic "Intel(R) Xeon(R) Processor", it falls back to its Prescott (SSE3)
// kernels: on an AVX-512 machine torch::mm then runs at 21 instead of 127 GFLOP/s per core.
// OPENBLAS_CORETYPE overrides the choice, but only before the library loads, so a program that
// finds the fallback sets it and executes itself again, once, before doing anything else.
#pragma once

namespace xpand::blas {

// The OpenBLAS core the process runs ("SkylakeX", "Haswell", "Prescott", ...); empty when the BLAS
// is not OpenBLAS.
const char* core_name();

// When OpenBLAS fell back to a kernel set older than the CPU supports and OPENBLAS_CORETYPE is not
// set: sets it to the best set the CPU supports (SkylakeX with AVX-512 F/CD/BW/DQ/VL, else Haswell
// with AVX2 and FMA) and re-executes /proc/self/exe with the same arguments (never returns then).
// Returns when nothing is to be done, when XPAND_BLAS_KERNELS=keep, or after a failed exec (with a
// warning on stderr). Call first thing in main(), before MPI or threads start.
void select_kernels(int argc, char** argv);

}  // namespace xpand::blas
