// Single-pass CPU updates for SGD, Adam and AdamW (see optim.h).
//
// libtorch's optimizers update each tensor with 5 to 8 separate tensor operations (mul_, add_,
// addcmul_, sqrt, div, add_, addcdiv_), each one a pass over memory and a dispatch. On the small
// networks of the seed experiments that is a quarter of a training step (Adam on the 784-512-512-10
// MLP: 1.13 ms of a ~4.8 ms step at 2 threads; bench_step's BM_mlp_part). Here every element is read
// once and written once, with the same formulas evaluated in the same order as libtorch's, in the
// tensor's own dtype, and the state lives in libtorch's own ParamState objects under libtorch's keys,
// so checkpoints, `state()` and `dynamic_cast<torch::optim::Adam*>` see the ordinary optimizers. The
// results equal libtorch's up to rounding (the CPU kernels contract a*b+c into fused multiply-adds
// where libtorch's may not): tests/train/test_optim.cpp compares both on the same trajectories in
// float64 and float32.
#include <ATen/Parallel.h>

#include <cmath>

#include "core/vector_loops.h"
#include "train/fused_kernels.h"
#include "train/optim.h"

namespace xpand::train {
namespace {

template <typename F>
void chunked(int64_t n, F&& f) {
  at::parallel_for(0, n, kElementGrain, [&](int64_t b, int64_t e) { f(b, e - b); });
}

// Writes through data pointers bypass the version counters that in-place tensor ops bump; bump them
// as libtorch's update would, so autograd still sees a saved tensor that the step changed.
void bump_versions(std::initializer_list<torch::Tensor> ts) {
  for (const auto& t : ts)
    if (t.defined()) t.unsafeGetTensorImpl()->bump_version();
}

// The fused loops take CPU tensors of float or double, densely stored, with gradients of the same dtype.
bool fusable(const std::vector<torch::optim::OptimizerParamGroup>& groups) {
  for (auto& group : groups)
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      const auto& g = p.grad();
      if (!p.device().is_cpu() || !p.is_contiguous() || g.layout() != torch::kStrided ||
          g.scalar_type() != p.scalar_type() || !g.device().is_cpu())
        return false;
      if (p.scalar_type() != torch::kFloat32 && p.scalar_type() != torch::kFloat64) return false;
    }
  return true;
}

template <typename Options, typename State>
torch::Tensor adam_step(torch::optim::Optimizer& opt, bool decoupled) {
  torch::NoGradGuard no_grad;
  auto& states = opt.state();
  for (auto& group : opt.param_groups()) {
    auto& o = static_cast<Options&>(group.options());
    const double lr = o.lr(), wd = o.weight_decay(), b1 = std::get<0>(o.betas()), b2 = std::get<1>(o.betas());
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      auto it = states.find(optimizer_state_key(p));
      if (it == states.end()) {
        auto s = std::make_unique<State>();
        s->step(0);
        s->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        s->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        it = states.emplace(optimizer_state_key(p), std::move(s)).first;
      }
      auto& s = static_cast<State&>(*it->second);
      s.step(s.step() + 1);
      const double bc1 = 1 - std::pow(b1, double(s.step())), bc2 = 1 - std::pow(b2, double(s.step()));
      torch::Tensor g = p.grad().contiguous();
      torch::Tensor& m = s.exp_avg();
      torch::Tensor& v = s.exp_avg_sq();
      if (!m.is_contiguous()) m = m.contiguous();
      if (!v.is_contiguous()) v = v.contiguous();
      AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "xpand_fused_adam", [&] {
        kernels::AdamCoef<scalar_t> c{scalar_t(decoupled ? 0.0 : wd),
                                      scalar_t(decoupled ? 1 - lr * wd : 1.0),
                                      scalar_t(b1),
                                      scalar_t(1 - b1),
                                      scalar_t(b2),
                                      scalar_t(1 - b2),
                                      scalar_t(std::sqrt(bc2)),
                                      scalar_t(o.eps()),
                                      scalar_t(-lr / bc1)};
        scalar_t *pp = p.data_ptr<scalar_t>(), *mp = m.data_ptr<scalar_t>(), *vp = v.data_ptr<scalar_t>();
        const scalar_t* gp = g.data_ptr<scalar_t>();
        chunked(p.numel(), [&](int64_t b, int64_t n) { kernels::adam(pp + b, gp + b, mp + b, vp + b, n, c); });
      });
      bump_versions({p, m, v});
    }
  }
  return {};
}

// Adam and AdamW fuse without amsgrad (its running maximum is left to libtorch).
template <typename Options>
bool adam_fusable(const std::vector<torch::optim::OptimizerParamGroup>& groups) {
  for (auto& group : groups)
    if (static_cast<const Options&>(group.options()).amsgrad()) return false;
  return fusable(groups);
}

}  // namespace

bool optimizer_fuses(const torch::optim::Optimizer& opt) {
  if (dynamic_cast<const FusedAdam*>(&opt)) return adam_fusable<torch::optim::AdamOptions>(opt.param_groups());
  if (dynamic_cast<const FusedAdamW*>(&opt)) return adam_fusable<torch::optim::AdamWOptions>(opt.param_groups());
  if (dynamic_cast<const FusedSGD*>(&opt)) return fusable(opt.param_groups());
  return false;
}

torch::Tensor FusedAdam::step(LossClosure closure) {
  if (closure != nullptr || !adam_fusable<torch::optim::AdamOptions>(param_groups()))
    return torch::optim::Adam::step(closure);
  return adam_step<torch::optim::AdamOptions, torch::optim::AdamParamState>(*this, false);
}

torch::Tensor FusedAdamW::step(LossClosure closure) {
  if (closure != nullptr || !adam_fusable<torch::optim::AdamWOptions>(param_groups()))
    return torch::optim::AdamW::step(closure);
  return adam_step<torch::optim::AdamWOptions, torch::optim::AdamWParamState>(*this, true);
}

torch::Tensor FusedSGD::step(LossClosure closure) {
  if (closure != nullptr || !fusable(param_groups())) return torch::optim::SGD::step(closure);
  torch::NoGradGuard no_grad;
  for (auto& group : param_groups()) {
    auto& o = static_cast<torch::optim::SGDOptions&>(group.options());
    const double mu = o.momentum();
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      torch::Tensor g = p.grad().contiguous();
      torch::Tensor buf;
      bool first = false;
      if (mu != 0) {
        auto it = state_.find(optimizer_state_key(p));
        if (it == state_.end()) {  // libtorch starts the buffer at the first step's d (no dampening)
          auto s = std::make_unique<torch::optim::SGDParamState>();
          s->momentum_buffer(torch::zeros_like(p, torch::MemoryFormat::Contiguous));
          it = state_.emplace(optimizer_state_key(p), std::move(s)).first;
          first = true;
        }
        buf = static_cast<torch::optim::SGDParamState&>(*it->second).momentum_buffer();
        if (!buf.is_contiguous()) {
          buf = buf.contiguous();
          static_cast<torch::optim::SGDParamState&>(*it->second).momentum_buffer(buf);
        }
      }
      AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "xpand_fused_sgd", [&] {
        kernels::SgdCoef<scalar_t> c{scalar_t(o.weight_decay()), scalar_t(first ? 0.0 : mu),
                                     scalar_t(first ? 1.0 : 1 - o.dampening()), scalar_t(mu), scalar_t(-1 * o.lr())};
        scalar_t* pp = p.data_ptr<scalar_t>();
        const scalar_t* gp = g.data_ptr<scalar_t>();
        if (mu == 0) {
          chunked(p.numel(), [&](int64_t b, int64_t n) { kernels::sgd(pp + b, gp + b, n, c); });
          return;
        }
        scalar_t* bp = buf.data_ptr<scalar_t>();
        const bool nesterov = o.nesterov();
        chunked(p.numel(),
                [&](int64_t b, int64_t n) { kernels::sgd_momentum(nesterov, pp + b, gp + b, bp + b, n, c); });
      });
      bump_versions({p, buf});
    }
  }
  return {};
}

}  // namespace xpand::train
