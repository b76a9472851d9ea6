// Subspace (intrinsic-dimension) training: D trainable numbers θ move only inside a random
// d-dimensional affine subspace, θ = θ0 + P·ω, with θ0 the network's ordinary initialisation,
// ω ∈ R^d (`param.omega_dim`) starting at 0 and P a D×d random projection generated from the run's
// seed (never stored; a checkpoint keeps ω). θ is every trainable tensor with `param.kind: subspace`,
// or the weights and biases of the layers set to `kind: subspace` (`layers.fc1.kind: subspace`): all
// of them share one ω, and the network's other tensors train as usual. The optimizer sees ω (and
// those other tensors) instead of θ.
//
// `param.anchor: column` is the ω-space notebook's variant: θ = P·ω with P the QR of
// [θ_init, Gaussian columns] (dense-qr only), so P's first column is θ_init/‖θ_init‖ and ω starts at
// Pᵀθ_init = (‖θ_init‖, 0, …, 0): the subspace holds the initialisation and its rescalings.
//
// A step runs the network as usual (every layer dense), so backward yields ∂L/∂θ; the chain rule
// gives ∂L/∂ω = Pᵀ·∂L/∂θ, which is all that data-parallel ranks all-reduce (d numbers, the narrowest
// cut of this parameterization). After the optimizer's step θ is rewritten as θ0 + P·ω.
//
// Projections (`param.projection`), each with unit-norm columns (fastfood's before its truncation to D
// of L rows; after it, squared norms average D/L, in (1/2, 1]):
//   dense     Gaussian D×d (d·D·4 bytes; refused above param.max_projection_bytes)
//   dense-qr  the same, orthonormalised by QR (orthonormal columns)
//   sparse    Li et al.'s very sparse random projection: ±1 with probability 1/(2s) each, s = √D
//   fastfood  V = H·G·Π·H·B on ω zero-padded to L = 2^⌈log2 D⌉, the first D rows (Le et al.; Li et
//             al.): fast Walsh–Hadamard transforms on tensors, O(L log L) time and O(L) memory
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "model/network.h"

namespace xpand::train {

class Projection {
 public:
  virtual ~Projection() = default;
  virtual torch::Tensor forward(const torch::Tensor& omega) = 0;  // P·ω, length D
  virtual torch::Tensor transpose(const torch::Tensor& g) = 0;    // Pᵀ·g, length d; g is left as it was
  // Pᵀ·g for g handed over in a buffer of input_length() entries (zeros after D) that the
  // projection may transform in place (Subspace::pull_grad's buffer): no copy.
  virtual torch::Tensor transpose_consume(torch::Tensor padded) { return transpose(padded); }
  virtual int64_t input_length() const = 0;
  virtual double bytes() const = 0;  // memory it holds
};

// The seed P is generated from, given the run's seed (the same on every rank and on resume).
inline uint64_t projection_seed(uint64_t run_seed) { return run_seed * 0x9E3779B97F4A7C15ull + 0x5eed; }

// Builds a projection from R^d to R^D; throws ConfigError (naming param.projection or
// param.max_projection_bytes) when a dense P would exceed the limit. dense-qr with `first_column`
// (length D): P = Q of the QR of [first_column, d-1 Gaussian columns], its first column
// first_column/‖first_column‖.
std::unique_ptr<Projection> projection_make(const config::Config& cfg, const std::string& kind, int64_t D, int64_t d,
                                            uint64_t seed, torch::Dtype dtype, torch::Device device,
                                            const torch::Tensor& first_column = {});

// The in-place fast Walsh–Hadamard transform (unnormalised, natural order) of a contiguous 1-D
// tensor whose length is a power of two; returns the transformed tensor (x itself on the CPU).
torch::Tensor hadamard_transform(torch::Tensor x);

// Fastfood's P for (D, d, seed) as the textbook product of explicit L x L matrices (Sylvester H,
// diagonal G and B, permutation Π), its first D rows and d columns, in float64: the reference the
// fast forward/transpose are tested against (small D only: L² memory).
torch::Tensor fastfood_reference_matrix(int64_t D, int64_t d, uint64_t seed);

// Which trainable tensors of `net` move in the subspace (theta) and which train as usual (rest), in
// the network's parameter order. theta is empty when no layer is a subspace layer.
struct SubspaceSplit {
  std::vector<torch::Tensor> theta, rest;
  std::vector<std::string> theta_names;
  int64_t theta_numel() const;
  int64_t rest_numel() const;
};
SubspaceSplit subspace_split(const config::Config& cfg, model::Network& net);

class Subspace {
 public:
  // θ: the tensors that move in the subspace (their current values are θ0, or θ_init with
  // param.anchor: column).
  Subspace(const config::Config& cfg, std::vector<torch::Tensor> theta, uint64_t seed);
  torch::Tensor& omega() { return omega_; }  // the optimizer's only tensor
  void pull_grad();                          // ω.grad = Pᵀ · concat(θ.grad)
  void push();                               // θ = θ0 + P·ω
  int64_t dim() const { return omega_.numel(); }
  int64_t full_dim() const { return D_; }
  const std::string& kind() const { return kind_; }
  double projection_bytes() const { return proj_->bytes(); }

 private:
  std::vector<torch::Tensor> theta_;
  torch::Tensor theta0_, omega_;
  int64_t D_ = 0;
  std::string kind_;
  std::unique_ptr<Projection> proj_;
};

}  // namespace xpand::train
