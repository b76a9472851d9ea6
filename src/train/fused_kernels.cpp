// Element loops of the single-pass optimizers (see fused_kernels.h). Built with -fno-math-errno and
// without the precompiled header (CMakeLists.txt); restrict pointers and one clone per vector width,
// so each loop compiles to AVX-512, AVX2 or SSE2 code picked when the program loads.
#include "train/fused_kernels.h"

#include <cmath>

#include "core/vector_loops.h"

namespace xpand::train::kernels {
namespace {

template <typename T>
XPAND_VECTOR_CLONES void adam_loop(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ m, T* __restrict__ v,
                                   int64_t n, AdamCoef<T> c) {
  for (int64_t i = 0; i < n; ++i) {
    const T gi = g[i] + c.l2 * p[i];
    const T mi = m[i] * c.b1 + c.omb1 * gi;
    const T vi = v[i] * c.b2 + c.omb2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * c.decay + c.neg_step * mi / (std::sqrt(vi) / c.sqrt_bc2 + c.eps);
  }
}

template <typename T, bool kNesterov>
XPAND_VECTOR_CLONES void sgd_momentum_loop(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ buf, int64_t n,
                                           SgdCoef<T> c) {
  for (int64_t i = 0; i < n; ++i) {
    const T d = g[i] + c.wd * p[i];
    const T b = buf[i] * c.keep + c.take * d;
    buf[i] = b;
    p[i] = p[i] + c.neg_lr * (kNesterov ? d + c.mu * b : b);
  }
}

template <typename T>
XPAND_VECTOR_CLONES void sgd_loop(T* __restrict__ p, const T* __restrict__ g, int64_t n, SgdCoef<T> c) {
  for (int64_t i = 0; i < n; ++i) p[i] = p[i] + c.neg_lr * (g[i] + c.wd * p[i]);
}

}  // namespace

template <typename T>
void adam(T* p, const T* g, T* m, T* v, int64_t n, AdamCoef<T> c) {
  adam_loop(p, g, m, v, n, c);
}

template <typename T>
void sgd_momentum(bool nesterov, T* p, const T* g, T* buf, int64_t n, SgdCoef<T> c) {
  if (nesterov)
    sgd_momentum_loop<T, true>(p, g, buf, n, c);
  else
    sgd_momentum_loop<T, false>(p, g, buf, n, c);
}

template <typename T>
void sgd(T* p, const T* g, int64_t n, SgdCoef<T> c) {
  sgd_loop(p, g, n, c);
}

template void adam<float>(float*, const float*, float*, float*, int64_t, AdamCoef<float>);
template void adam<double>(double*, const double*, double*, double*, int64_t, AdamCoef<double>);
template void sgd_momentum<float>(bool, float*, const float*, float*, int64_t, SgdCoef<float>);
template void sgd_momentum<double>(bool, double*, const double*, double*, int64_t, SgdCoef<double>);
template void sgd<float>(float*, const float*, int64_t, SgdCoef<float>);
template void sgd<double>(double*, const double*, int64_t, SgdCoef<double>);

}  // namespace xpand::train::kernels
