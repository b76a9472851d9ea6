// Subspace training and its random projections (see subspace.h).
#include "train/subspace.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>

#include <cmath>
#include <set>

#include "core/error.h"
#include "core/log.h"
#include "core/timer.h"
#include "core/vector_loops.h"
#include "param/spec.h"

namespace xpand::train {

namespace {

// In-place fast Walsh–Hadamard transform of n (a power of two) contiguous values on the CPU: the
// first three butterfly levels inside registers per block of 8, then two levels per pass over the
// array (radix 4), so the data is read log2(n)/2 times instead of log2(n). The inner loops are
// unit-stride over non-overlapping rows (restrict) and compiled for the CPU's vector width; each
// pass is split over the intra-op threads (by groups, or within a group once groups are few).
template <typename T>
XPAND_VECTOR_CLONES void butterfly4(T* __restrict__ p0, T* __restrict__ p1, T* __restrict__ p2, T* __restrict__ p3,
                                    int64_t len) {
  for (int64_t j = 0; j < len; ++j) {
    const T a0 = p0[j] + p1[j], a1 = p0[j] - p1[j], a2 = p2[j] + p3[j], a3 = p2[j] - p3[j];
    p0[j] = a0 + a2, p2[j] = a0 - a2, p1[j] = a1 + a3, p3[j] = a1 - a3;
  }
}

template <typename T>
XPAND_VECTOR_CLONES void butterfly2(T* __restrict__ p0, T* __restrict__ p1, int64_t len) {
  for (int64_t j = 0; j < len; ++j) {
    const T a = p0[j], b = p1[j];
    p0[j] = a + b, p1[j] = a - b;
  }
}

template <typename T>
void fwht_cpu(T* x, int64_t n) {
  constexpr int64_t kGrain = kElementGrain;  // elements per task
  int64_t h = 1;
  if (n >= 8) {
    at::parallel_for(0, n / 8, kGrain / 8, [&](int64_t b, int64_t e) {
      for (int64_t i = b * 8; i < e * 8; i += 8) {
        T* p = x + i;
        const T a0 = p[0] + p[1], a1 = p[0] - p[1], a2 = p[2] + p[3], a3 = p[2] - p[3];
        const T a4 = p[4] + p[5], a5 = p[4] - p[5], a6 = p[6] + p[7], a7 = p[6] - p[7];
        const T b0 = a0 + a2, b2 = a0 - a2, b1 = a1 + a3, b3 = a1 - a3;
        const T b4 = a4 + a6, b6 = a4 - a6, b5 = a5 + a7, b7 = a5 - a7;
        p[0] = b0 + b4, p[4] = b0 - b4, p[1] = b1 + b5, p[5] = b1 - b5;
        p[2] = b2 + b6, p[6] = b2 - b6, p[3] = b3 + b7, p[7] = b3 - b7;
      }
    });
    h = 8;
  }
  for (; 4 * h <= n; h *= 4) {  // levels h and 2h at once
    const int64_t groups = n / (4 * h);
    if (groups >= 8) {
      at::parallel_for(0, groups, std::max<int64_t>(1, kGrain / (4 * h)), [&](int64_t b, int64_t e) {
        for (int64_t g = b; g < e; ++g) {
          T* p = x + g * 4 * h;
          butterfly4(p, p + h, p + 2 * h, p + 3 * h, h);
        }
      });
    } else {
      for (int64_t g = 0; g < groups; ++g) {
        T* p = x + g * 4 * h;
        at::parallel_for(0, h, kGrain / 4, [&](int64_t b, int64_t e) {
          butterfly4(p + b, p + h + b, p + 2 * h + b, p + 3 * h + b, e - b);
        });
      }
    }
  }
  if (h < n) {  // one level left (log2 n odd): a single group
    at::parallel_for(0, h, kGrain / 2, [&](int64_t b, int64_t e) { butterfly2(x + b, x + h + b, e - b); });
  }
}

// Fast Walsh–Hadamard transform (unnormalised, natural order) of a 1-D contiguous tensor whose
// length is a power of two, in place. CPU: fwht_cpu. Other devices: log2(n) tensor butterfly stages,
// each an add and a subtract written into a second buffer (the buffers swap roles between stages).
torch::Tensor fwht(torch::Tensor x) {
  const int64_t n = x.numel();
  XPAND_CHECK(n > 0 && (n & (n - 1)) == 0 && x.dim() == 1,
              "Hadamard transform of a 1-D power-of-two length, got {} dimension(s) and {} elements", x.dim(), n);
  if (x.device().is_cpu() && x.is_contiguous()) {
    if (x.scalar_type() == torch::kFloat)
      fwht_cpu(x.data_ptr<float>(), n);
    else if (x.scalar_type() == torch::kDouble)
      fwht_cpu(x.data_ptr<double>(), n);
    else
      XPAND_CHECK(false, "fwht: unsupported dtype");
    return x;
  }
  torch::Tensor y = torch::empty_like(x);
  for (int64_t h = 1; h < n; h *= 2) {
    auto v = x.view({n / (2 * h), 2, h}), w = y.view({n / (2 * h), 2, h});
    auto a = v.select(1, 0), b = v.select(1, 1);
    auto wa = w.select(1, 0), wb = w.select(1, 1);
    torch::add_out(wa, a, b);
    torch::sub_out(wb, a, b);
    std::swap(x, y);
  }
  return x;
}

class DenseProjection final : public Projection {
 public:
  DenseProjection(torch::Tensor p) : p_(std::move(p)) {}
  torch::Tensor forward(const torch::Tensor& w) override { return torch::mv(p_, w); }
  torch::Tensor transpose(const torch::Tensor& g) override { return torch::mv(p_.t(), g); }
  int64_t input_length() const override { return p_.size(0); }
  double bytes() const override { return double(p_.numel()) * double(p_.element_size()); }

 private:
  torch::Tensor p_;  // D x d
};

class SparseProjection final : public Projection {
 public:
  SparseProjection(torch::Tensor rows, torch::Tensor cols, torch::Tensor vals, int64_t D, int64_t d)
      : rows_(std::move(rows)), cols_(std::move(cols)), vals_(std::move(vals)), D_(D), d_(d) {}
  torch::Tensor forward(const torch::Tensor& w) override {
    return torch::zeros({D_}, w.options()).index_add_(0, rows_, vals_ * w.index_select(0, cols_));
  }
  torch::Tensor transpose(const torch::Tensor& g) override {
    return torch::zeros({d_}, g.options()).index_add_(0, cols_, vals_ * g.index_select(0, rows_));
  }
  int64_t input_length() const override { return D_; }
  double bytes() const override { return double(vals_.numel()) * (8 + 8 + double(vals_.element_size())); }

 private:
  torch::Tensor rows_, cols_, vals_;
  int64_t D_, d_;
};

// Fastfood's random parts for length L (a power of two): the signs B, the permutation Π and the
// Gaussian scaling G (normalised so every column of H G Π H B has unit norm), drawn in this order.
struct FastfoodDraws {
  torch::Tensor b, perm, g;
};

FastfoodDraws fastfood_draws(int64_t L, at::Generator& gen) {
  auto cpu = torch::TensorOptions().dtype(torch::kFloat64);
  FastfoodDraws r;
  r.b = torch::randint(0, 2, {L}, gen, cpu) * 2 - 1;
  r.perm = torch::randperm(L, gen, torch::TensorOptions().dtype(torch::kLong));
  auto g = torch::randn({L}, gen, cpu);
  // Every column of H G Π H B has squared norm L·ΣG²: scale to unit columns.
  r.g = g / std::sqrt(double(L) * g.pow(2).sum().item<double>());
  return r;
}

int64_t pow2_at_least(int64_t n) {
  int64_t p = 1;
  while (p < n) p *= 2;
  return p;
}

// P ω = first D entries of H G Π H B ω̃ (ω̃: ω zero-padded to L). Only the first d entries of B ω̃ are
// non-zero, and the Walsh–Hadamard transform of a vector supported on the first M entries (M a power
// of two) is the M-point transform repeated L/M times: (H_L x)[i] = (H_M x)[i mod M]. So the first H
// costs an M-point transform, and Π of the repeated vector is a gather through perm(j) mod M. The
// transpose mirrors it: of the last H only the first d outputs are needed, and those are the M-point
// transform of the sum of the L/M blocks, which Πᵀ turns into a sum over j into bucket perm(j) mod M.
// One L-point transform each way instead of two.
class FastfoodProjection final : public Projection {
 public:
  FastfoodProjection(int64_t D, int64_t d, at::Generator& gen, torch::TensorOptions opt)
      : D_(D), d_(d), L_(pow2_at_least(std::max(D, d))), M_(pow2_at_least(d)) {
    auto r = fastfood_draws(L_, gen);
    b_ = r.b.narrow(0, 0, d_).to(opt);
    low_ = r.perm.bitwise_and(M_ - 1).to(opt.device());
    if (!opt.device().is_cpu()) inv_ = torch::argsort(r.perm).to(opt.device());
    g_ = r.g.to(opt);
  }
  torch::Tensor forward(const torch::Tensor& w) override {
    auto h = torch::zeros({M_}, w.options());
    auto head = h.narrow(0, 0, d_);
    torch::mul_out(head, w, b_);
    h = fwht(std::move(h));            // H B ω̃, one period of it
    auto x = h.index_select(0, low_);  // Π: entry j is (H B ω̃)[perm(j)] = h[perm(j) mod M]
    x.mul_(g_);
    return fwht(std::move(x)).narrow(0, 0, D_);
  }
  torch::Tensor transpose(const torch::Tensor& gr) override {
    auto x = torch::zeros({L_}, gr.options());
    x.narrow(0, 0, D_).copy_(gr.reshape(-1).narrow(0, 0, D_));
    return transpose_consume(std::move(x));
  }
  torch::Tensor transpose_consume(torch::Tensor x) override {
    // (H G Π H B)ᵀ = B H Πᵀ G H (H, G, B symmetric); x: L entries, zeros after D, transformed in place.
    XPAND_CHECK(x.numel() == L_ && x.is_contiguous(), "fastfood transpose: needs a contiguous buffer of {}", L_);
    x = fwht(std::move(x));
    x.mul_(g_);
    torch::Tensor s;  // Πᵀ, then the L/M blocks summed
    if (x.is_cpu())
      s = torch::zeros({M_}, x.options()).index_add_(0, low_, x);  // serial on the CPU: deterministic
    else
      s = x.index_select(0, inv_).view({L_ / M_, M_}).sum(0);  // no atomics: bitwise reproducible on GPUs
    s = fwht(std::move(s));
    return s.narrow(0, 0, d_) * b_;  // the first d entries of H (...), then B
  }
  int64_t input_length() const override { return L_; }
  double bytes() const override {
    return double(L_) * (double(g_.element_size()) + (inv_.defined() ? 16 : 8)) + double(d_) * b_.element_size();
  }

 private:
  int64_t D_, d_, L_, M_;
  torch::Tensor b_, g_, low_, inv_;  // B's first d signs, G, perm(j) mod M, perm⁻¹ (GPUs only)
};

}  // namespace

torch::Tensor hadamard_transform(torch::Tensor x) { return fwht(std::move(x)); }

torch::Tensor fastfood_reference_matrix(int64_t D, int64_t d, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  const int64_t L = pow2_at_least(std::max(D, d));
  auto r = fastfood_draws(L, gen);
  auto h = torch::ones({1, 1}, torch::kFloat64);  // Sylvester: H_2n = [[H, H], [H, -H]]
  while (h.size(0) < L) h = torch::cat({torch::cat({h, h}, 1), torch::cat({h, -h}, 1)}, 0);
  auto pi = torch::zeros({L, L}, torch::kFloat64);  // (Π x)[j] = x[perm(j)]
  pi.index_put_({torch::arange(L), r.perm}, 1.0);
  auto full = h.mm(torch::diag(r.g)).mm(pi).mm(h).mm(torch::diag(r.b));
  return full.narrow(0, 0, D).narrow(1, 0, d).clone();
}

std::unique_ptr<Projection> projection_make(const config::Config& cfg, const std::string& kind, int64_t D, int64_t d,
                                            uint64_t seed, torch::Dtype dtype, torch::Device device,
                                            const torch::Tensor& first_column) {
  auto gen = at::detail::createCPUGenerator(seed);
  const auto opt = torch::TensorOptions().dtype(dtype).device(device);
  if (kind == "dense" || kind == "dense-qr") {
    const double bytes = double(D) * double(d) * double(torch::elementSize(dtype));
    const double limit = cfg.get_float("param.max_projection_bytes");
    if (bytes > limit)
      cfg.fail("param.max_projection_bytes",
               fmt::format("a {} projection of {} x {} takes {:.3g} GB, above the limit of {:.3g} GB; use "
                           "param.projection: fastfood (O(D) memory) or sparse, or raise the limit",
                           kind, D, d, bytes / 1e9, limit / 1e9));
    if (kind == "dense-qr" && d > D)
      cfg.fail("param.omega_dim", fmt::format("dense-qr needs omega_dim <= {} (the network's parameters)", D));
    // Generated and normalised in the training dtype, in place: one D x d buffer (plus QR's).
    auto p = torch::randn({D, d}, gen, torch::TensorOptions().dtype(dtype));
    if (first_column.defined()) {
      XPAND_CHECK(kind == "dense-qr" && first_column.numel() == D, "first column needs dense-qr and length D");
      p.select(1, 0).copy_(first_column.reshape(-1));
    }
    if (kind == "dense-qr") {
      auto [q, r] = torch::linalg_qr(p, "reduced");
      q.mul_(torch::sign(r.diagonal()).where(r.diagonal() != 0, torch::ones_like(r.diagonal())));  // R's diagonal > 0
      p = q;
    } else {
      p.div_(p.norm(2, {0}, true));
    }
    return std::make_unique<DenseProjection>(p.to(device));
  }
  if (kind == "sparse") {
    // Li, Hastie and Church's very sparse projection: s = √D, so each column has ~√D non-zeros.
    const double s = std::sqrt(double(D));
    const int64_t per_col = std::max<int64_t>(1, std::llround(double(D) / s));
    std::vector<torch::Tensor> rows, cols;
    for (int64_t j = 0; j < d; ++j) {
      rows.push_back(torch::randperm(D, gen, torch::TensorOptions().dtype(torch::kLong)).narrow(0, 0, per_col));
      cols.push_back(torch::full({per_col}, j, torch::TensorOptions().dtype(torch::kLong)));
    }
    auto signs = torch::randint(0, 2, {d * per_col}, gen, torch::TensorOptions().dtype(torch::kFloat64)) * 2 - 1;
    auto vals = signs / std::sqrt(double(per_col));  // unit-norm columns
    return std::make_unique<SparseProjection>(torch::cat(rows).to(device), torch::cat(cols).to(device), vals.to(opt), D,
                                              d);
  }
  if (kind == "fastfood") return std::make_unique<FastfoodProjection>(D, d, gen, opt);
  cfg.fail("param.projection", fmt::format("unknown projection '{}'", kind));
}

Subspace::Subspace(const config::Config& cfg, std::vector<torch::Tensor> theta, uint64_t seed)
    : theta_(std::move(theta)), kind_(cfg.get_string("param.projection")) {
  XPAND_CHECK(!theta_.empty(), "subspace training needs trainable tensors");
  torch::NoGradGuard ng;
  std::vector<torch::Tensor> flat;
  for (auto& t : theta_) flat.push_back(t.detach().reshape(-1));
  theta0_ = torch::cat(flat).clone();
  D_ = theta0_.numel();
  const int64_t d = cfg.get_int("param.omega_dim");
  const bool column = cfg.get_string("param.anchor") == "column";
  if (column && kind_ != "dense-qr")
    cfg.fail("param.anchor", fmt::format("anchor: column puts theta_init into an orthonormal P: it needs "
                                         "param.projection: dense-qr, not {}",
                                         kind_));
  if (column && theta0_.norm().item<double>() == 0)
    cfg.fail("param.anchor", "anchor: column needs a non-zero initialisation of the subspace's tensors");
  Timer t;
  // P depends on the seed (and θ_init) alone: every rank of a group builds the same one, and a
  // resumed run too.
  proj_ = projection_make(cfg, kind_, D_, d, projection_seed(seed), theta0_.scalar_type(), theta0_.device(),
                          column ? theta0_ : torch::Tensor());
  if (column) {  // θ = P ω: no offset; ω starts where P ω = θ_init (θ_init lies in P's span)
    omega_ = proj_->transpose(theta0_).detach().clone().set_requires_grad(true);
    theta0_.zero_();
  } else {
    omega_ = torch::zeros({d}, theta0_.options()).set_requires_grad(true);
  }
  log::info(
      "subspace: omega {} of {} parameters (compression {:.1f}x), {} projection{}, {:.3g} MB, set up in "
      "{:.2f} s",
      d, D_, double(D_) / double(d), kind_, column ? " through theta_init" : "", proj_->bytes() / 1e6, t.seconds());
}

void Subspace::pull_grad() {
  torch::NoGradGuard ng;
  // θ's gradients copied once, straight into the buffer the projection transforms (zeros after D).
  const int64_t n = proj_->input_length();
  auto flat = torch::empty({n}, theta0_.options());
  int64_t at = 0;
  for (auto& t : theta_) {
    auto dst = flat.narrow(0, at, t.numel());
    if (t.grad().defined())
      dst.view(t.sizes()).copy_(t.grad());
    else
      dst.zero_();
    at += t.numel();
  }
  if (n > at) flat.narrow(0, at, n - at).zero_();
  auto g = proj_->transpose_consume(std::move(flat));
  if (omega_.grad().defined())
    omega_.mutable_grad().copy_(g);
  else
    omega_.mutable_grad() = g.clone();  // not a view of the projection's buffer (zero_grad detaches it)
}

void Subspace::push() {
  torch::NoGradGuard ng;
  auto pw = proj_->forward(omega_.detach());
  int64_t at = 0;
  for (auto& t : theta_) {  // θ0 + Pω written straight into each tensor (one pass)
    auto out = t.view({-1});
    torch::add_out(out, theta0_.narrow(0, at, t.numel()), pw.narrow(0, at, t.numel()));
    at += t.numel();
  }
}

int64_t SubspaceSplit::theta_numel() const {
  int64_t n = 0;
  for (const auto& t : theta) n += t.numel();
  return n;
}

int64_t SubspaceSplit::rest_numel() const {
  int64_t n = 0;
  for (const auto& t : rest) n += t.numel();
  return n;
}

SubspaceSplit subspace_split(const config::Config& cfg, model::Network& net) {
  SubspaceSplit out;
  const bool whole = cfg.get_string("param.kind") == "subspace";
  std::set<const void*> in_subspace;  // tensor impls
  if (!whole) {
    std::set<std::string> names;
    for (auto& slot : net.slots())
      if (param::spec_for(cfg, slot.name).kind == "subspace") {
        for (auto& p : slot.param->parameters()) in_subspace.insert(p.unsafeGetTensorImpl());
        names.insert(slot.name + "_bias");  // the layer's own bias (mlp, cnn)
      }
    for (auto& np : net.named_parameters())
      if (names.count(np.key())) in_subspace.insert(np.value().unsafeGetTensorImpl());
  }
  for (auto& np : net.named_parameters()) {
    const torch::Tensor& p = np.value();
    if (!p.requires_grad()) continue;
    if (whole || in_subspace.count(p.unsafeGetTensorImpl())) {
      out.theta.push_back(p);
      out.theta_names.push_back(np.key());
    } else {
      out.rest.push_back(p);
    }
  }
  return out;
}

}  // namespace xpand::train
