// Subspace training and its random projections (see subspace.h).
#include "train/subspace.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include <fmt/format.h>

#include "core/error.h"
#include "core/log.h"
#include "core/timer.h"

namespace xpand::train {

namespace {

// Fast Walsh–Hadamard transform (unnormalised, natural order) of a 1-D tensor whose length is a
// power of two: log2(n) butterfly stages, each an add and a subtract written straight into a second
// buffer (no allocation per stage); the buffers swap roles between stages, so x is overwritten.
torch::Tensor fwht(torch::Tensor x) {
  const int64_t n = x.numel();
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
  double bytes() const override { return double(vals_.numel()) * (8 + 8 + double(vals_.element_size())); }

 private:
  torch::Tensor rows_, cols_, vals_;
  int64_t D_, d_;
};

class FastfoodProjection final : public Projection {
 public:
  FastfoodProjection(int64_t D, int64_t d, at::Generator& gen, torch::TensorOptions opt) : D_(D), d_(d) {
    L_ = 1;
    while (L_ < std::max(D, d)) L_ *= 2;
    auto cpu = torch::TensorOptions().dtype(torch::kFloat64);
    b_ = (torch::randint(0, 2, {L_}, gen, cpu) * 2 - 1).to(opt);
    perm_ = torch::randperm(L_, gen, torch::TensorOptions().dtype(torch::kLong)).to(opt.device());
    inv_ = torch::argsort(perm_);
    auto g = torch::randn({L_}, gen, cpu);
    // Every column of H G Π H B has squared norm L·ΣG²: scale to unit columns.
    g_ = (g / std::sqrt(double(L_) * g.pow(2).sum().item<double>())).to(opt);
  }
  torch::Tensor forward(const torch::Tensor& w) override {
    auto x = torch::zeros({L_}, w.options());
    x.narrow(0, 0, d_).copy_(w);
    x = fwht(x * b_);
    x = fwht(x.index_select(0, perm_) * g_);
    return x.narrow(0, 0, D_);
  }
  torch::Tensor transpose(const torch::Tensor& gr) override {
    // (H G Π H B)ᵀ = B H Πᵀ G H (H, G, B symmetric).
    auto x = torch::zeros({L_}, gr.options());
    x.narrow(0, 0, D_).copy_(gr);
    x = fwht(x) * g_;
    x = fwht(x.index_select(0, inv_)) * b_;
    return x.narrow(0, 0, d_);
  }
  double bytes() const override { return double(L_) * (3 * double(b_.element_size()) + 16); }

 private:
  int64_t D_, d_, L_ = 1;
  torch::Tensor b_, g_, perm_, inv_;
};

}  // namespace

std::unique_ptr<Projection> projection_make(const config::Config& cfg, const std::string& kind, int64_t D, int64_t d,
                                            uint64_t seed, torch::Dtype dtype, torch::Device device) {
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
    if (kind == "dense-qr") p = std::get<0>(torch::linalg_qr(p, "reduced"));
    else p.div_(p.norm(2, {0}, true));
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
    return std::make_unique<SparseProjection>(torch::cat(rows).to(device), torch::cat(cols).to(device), vals.to(opt),
                                              D, d);
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
  Timer t;
  // P depends on the seed alone: every rank of a group builds the same one, and a resumed run too.
  proj_ = projection_make(cfg, kind_, D_, d, projection_seed(seed), theta0_.scalar_type(),
                          theta0_.device());
  omega_ = torch::zeros({d}, theta0_.options()).set_requires_grad(true);
  log::info("subspace: omega {} of {} parameters (compression {:.1f}x), {} projection, {:.3g} MB, set up in {:.2f} s",
            d, D_, double(D_) / double(d), kind_, proj_->bytes() / 1e6, t.seconds());
}

void Subspace::pull_grad() {
  torch::NoGradGuard ng;
  std::vector<torch::Tensor> flat;
  for (auto& t : theta_) flat.push_back(t.grad().defined() ? t.grad().reshape(-1) : torch::zeros({t.numel()}, t.options()));
  auto g = proj_->transpose(torch::cat(flat));
  if (omega_.grad().defined()) omega_.mutable_grad().copy_(g);
  else omega_.mutable_grad() = g.clone();  // not a view of the projection's buffer (zero_grad detaches it)
}

void Subspace::push() {
  torch::NoGradGuard ng;
  auto theta = theta0_ + proj_->forward(omega_.detach());
  int64_t at = 0;
  for (auto& t : theta_) {
    t.copy_(theta.narrow(0, at, t.numel()).view_as(t));
    at += t.numel();
  }
}

}  // namespace xpand::train
