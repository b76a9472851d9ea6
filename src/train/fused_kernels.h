// The element loops of the single-pass optimizers (fused_optim.cpp), on raw arrays of one dtype.
// They live in their own translation unit, without libtorch's headers, so it can be compiled with
// -fno-math-errno (vector square roots) while every other file keeps the shared precompiled header.
#pragma once
#include <cstdint>

namespace xpand::train::kernels {

template <typename T>
struct AdamCoef {
  T l2;     // Adam's weight decay, added to the gradient (0 for AdamW)
  T decay;  // AdamW's decoupled decay factor 1 - lr·wd (1 for Adam)
  T b1, omb1, b2, omb2;
  T sqrt_bc2, eps, neg_step;  // sqrt(1 - b2^t), eps, -lr / (1 - b1^t)
};

// Element i, in libtorch's order:
//   g = grad + l2·p;  m = m·b1 + (1-b1)·g;  v = v·b2 + (1-b2)·g·g;
//   p = p·decay + (-lr/bc1)·m / (sqrt(v)/sqrt(bc2) + eps)
template <typename T>
void adam(T* p, const T* g, T* m, T* v, int64_t n, AdamCoef<T> c);

template <typename T>
struct SgdCoef {
  T wd, keep, take, mu, neg_lr;  // buf = buf·keep + take·d: (0, 1) on the first step, (mu, 1-dampening) after
};

// d = grad + wd·p;  buf = buf·keep + take·d;  p = p + (-lr)·(nesterov ? d + mu·buf : buf)
template <typename T>
void sgd_momentum(bool nesterov, T* p, const T* g, T* buf, int64_t n, SgdCoef<T> c);

// p = p + (-lr)·(grad + wd·p)
template <typename T>
void sgd(T* p, const T* g, int64_t n, SgdCoef<T> c);

}  // namespace xpand::train::kernels
