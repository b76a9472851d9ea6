// Subspace training (train/subspace.h) against independent references, in float64:
// - every projection's transpose is its adjoint (<P w, g> = <w, P^T g>) and matches the explicit
//   matrix built column by column from forward(); columns have unit norm (fastfood's before
//   truncation to D rows), dense-qr's are orthonormal;
// - the gradient the trainer gives omega (P^T dL/dtheta) equals autograd through
//   theta = theta0 + P omega built as a differentiable expression;
// - a dense P over the byte limit is refused naming param.max_projection_bytes and fastfood;
// - training moves only omega: theta - theta0 stays in the column space of P, and the loss falls;
// - resuming from a checkpoint gives the same losses as a run that never stopped.
#include <gtest/gtest.h>

#include "../test_util.h"
#include "config/config.h"
#include "core/error.h"
#include "data/dataset.h"
#include "model/network.h"
#include "param/param.h"
#include "train/subspace.h"
#include "train/trainer.h"

using xpand::config::Config;
using namespace xpand::train;

namespace {

Config cfg_with(const std::string& projection, int64_t d, double max_bytes = 1e9) {
  return Config::load_string(
      "data: {name: teacher, batch_size: 16, train_size: 256, test_size: 64, teacher_inputs: 8, teacher_classes: 3}\n"
      "model: {kind: mlp, widths: [8, 12, 3]}\n"
      "dtype: float64\n"
      "param: {kind: subspace}\n",
      "subspace.yaml",
      {"param.projection=" + projection, "param.omega_dim=" + std::to_string(d),
       "param.max_projection_bytes=" + std::to_string(max_bytes)});
}

// The network a run of `cfg` starts from (same seed, same init), in float64.
xpand::model::NetworkPtr initial_network(const Config& cfg) {
  auto ds = xpand::data::dataset_load(cfg, torch::kCPU);
  torch::manual_seed(cfg.get_int("seed"));
  auto net = xpand::model::network_build(cfg, ds, xpand::param::factory_from_config(cfg));
  net->to(torch::kFloat64);
  return net;
}

// Every trainable number of a network, flattened in parameter order.
torch::Tensor flat_parameters(xpand::model::Network& net) {
  std::vector<torch::Tensor> flat;
  for (auto& t : net.parameters()) flat.push_back(t.detach().reshape(-1));
  return torch::cat(flat);
}

// The explicit D x d matrix of a projection, column j = forward(e_j).
torch::Tensor explicit_matrix(Projection& p, int64_t D, int64_t d) {
  auto m = torch::zeros({D, d}, torch::kFloat64);
  for (int64_t j = 0; j < d; ++j) {
    auto e = torch::zeros({d}, torch::kFloat64);
    e[j] = 1;
    m.select(1, j).copy_(p.forward(e));
  }
  return m;
}

}  // namespace

TEST(Subspace, ProjectionsAreAdjointAndNormalised) {
  for (const std::string kind : {"dense", "dense-qr", "sparse", "fastfood"}) {
    for (auto [D, d] : std::vector<std::pair<int64_t, int64_t>>{{300, 7}, {512, 40}, {97, 97}, {200, 128}, {64, 1}}) {
      SCOPED_TRACE(kind + " D=" + std::to_string(D) + " d=" + std::to_string(d));
      auto cfg = cfg_with(kind, d);
      auto p = projection_make(cfg, kind, D, d, 1234, torch::kFloat64, torch::kCPU);
      auto w = torch::randn({d}, torch::kFloat64), g = torch::randn({D}, torch::kFloat64);
      const double lhs = torch::dot(p->forward(w), g).item<double>(),
                   rhs = torch::dot(w, p->transpose(g)).item<double>();
      EXPECT_NEAR(lhs, rhs, 1e-10 * std::max(1.0, std::abs(lhs)));
      auto m = explicit_matrix(*p, D, d);
      EXPECT_TRUE(torch::allclose(p->transpose(g), torch::mv(m.t(), g), 1e-12, 1e-12));
      auto norms = m.norm(2, {0});
      if (kind == "fastfood") {
        // the fast transforms against the textbook product of explicit matrices, same draws
        EXPECT_TRUE(torch::allclose(m, fastfood_reference_matrix(D, d, 1234), 1e-12, 1e-12));
        // transpose() on a buffer padded to the projection's input length, as pull_grad passes it
        auto padded = torch::zeros({p->input_length()}, torch::kFloat64);
        padded.narrow(0, 0, D).copy_(g);
        EXPECT_TRUE(torch::allclose(p->transpose_consume(padded.clone()), torch::mv(m.t(), g), 1e-12, 1e-12));
        auto before = padded.clone();  // transpose() leaves its argument alone, padded or not
        p->transpose(padded);
        EXPECT_TRUE(torch::equal(padded, before));
        EXPECT_LE(norms.max().item<double>(), 1 + 1e-12);  // unit before truncation to D rows
        if ((D & (D - 1)) == 0) EXPECT_TRUE(torch::allclose(norms, torch::ones_like(norms), 0, 1e-12));
      } else {
        EXPECT_TRUE(torch::allclose(norms, torch::ones_like(norms), 0, 1e-12));
      }
      if (kind == "dense-qr")
        EXPECT_TRUE(torch::allclose(torch::mm(m.t(), m), torch::eye(d, torch::kFloat64), 0, 1e-12));
      // Same seed, same projection; another seed, another.
      auto again = projection_make(cfg, kind, D, d, 1234, torch::kFloat64, torch::kCPU);
      EXPECT_TRUE(torch::equal(again->forward(w), p->forward(w)));
      auto other = projection_make(cfg, kind, D, d, 99, torch::kFloat64, torch::kCPU);
      EXPECT_FALSE(torch::allclose(other->forward(w), p->forward(w)));
    }
  }
}

TEST(Subspace, OmegaGradientEqualsAutogradThroughTheta) {
  for (const std::string kind : {"dense", "sparse", "fastfood"}) {
    SCOPED_TRACE(kind);
    auto cfg = cfg_with(kind, 5);
    auto ds = xpand::data::dataset_load(cfg, torch::kCPU);
    torch::manual_seed(3);
    auto net = xpand::model::network_build(cfg, ds, xpand::param::factory_from_config(cfg));
    net->to(torch::kFloat64);
    std::vector<torch::Tensor> theta;
    for (auto& p : net->parameters()) theta.push_back(p);
    Subspace sub(cfg, theta, 7);
    {
      torch::NoGradGuard ng;
      sub.omega().copy_(torch::randn({5}, torch::kFloat64) * 0.1);
    }
    sub.push();
    auto x = ds.train_x.narrow(0, 0, 16).to(torch::kFloat64), y = ds.train_y.narrow(0, 0, 16);
    // The trainer's way: backward to theta, then P^T.
    net->zero_grad();
    torch::cross_entropy_loss(net->forward(x), y).backward();
    sub.pull_grad();
    auto mine = sub.omega().grad().clone();
    // Reference: theta as a differentiable function of omega (explicit P), one autograd pass.
    auto p = projection_make(cfg, kind, sub.full_dim(), 5, projection_seed(7), torch::kFloat64, torch::kCPU);
    auto P = explicit_matrix(*p, sub.full_dim(), 5);
    std::vector<torch::Tensor> flat0;
    for (auto& t : theta) flat0.push_back(t.detach().reshape(-1));
    auto theta_now = torch::cat(flat0);
    auto omega = sub.omega().detach().clone().set_requires_grad(true);
    auto theta0 = theta_now - torch::mv(P, omega.detach());
    auto th = theta0 + torch::mv(P, omega);
    // The MLP 8-12-3 with biases, written out.
    std::vector<torch::Tensor> parts;
    int64_t at = 0;
    for (auto& t : theta) {
      parts.push_back(th.narrow(0, at, t.numel()).view(t.sizes()));
      at += t.numel();
    }
    // Weights (2-D) and biases (1-D), each in layer order, whatever the parameter order.
    std::vector<torch::Tensor> w, bias;
    for (auto& t : parts) (t.dim() == 2 ? w : bias).push_back(t);
    ASSERT_EQ(w.size(), 2u);
    ASSERT_EQ(bias.size(), 2u);
    auto h = torch::relu(torch::addmm(bias[0], x, w[0].t()));
    auto logits = torch::addmm(bias[1], h, w[1].t());
    auto ref_net = net->forward(x);
    ASSERT_TRUE(torch::allclose(logits, ref_net, 1e-12, 1e-12)) << "reference network differs from the MLP";
    auto loss = torch::cross_entropy_loss(logits, y);
    auto ref = torch::autograd::grad({loss}, {omega})[0];
    EXPECT_TRUE(torch::allclose(mine, ref, 1e-10, 1e-12)) << mine << "\n" << ref;
  }
}

TEST(Subspace, DenseProjectionOverTheLimitIsRefused) {
  auto cfg = cfg_with("dense", 1000, 1e5);
  try {
    projection_make(cfg, "dense", 200000, 1000, 1, torch::kFloat32, torch::kCPU);
    FAIL() << "no error";
  } catch (const xpand::ConfigError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("param.max_projection_bytes"), std::string::npos) << m;
    EXPECT_NE(m.find("fastfood"), std::string::npos) << m;
    EXPECT_NE(m.find("0.8 GB"), std::string::npos) << m;
  }
}

TEST(Subspace, TrainingMovesOnlyOmegaAndLearns) {
  const std::string yaml =
      "data: {name: teacher, batch_size: 32, train_size: 512, test_size: 128, teacher_inputs: 8, teacher_classes: 3}\n"
      "model: {kind: mlp, widths: [8, 32, 3]}\n"
      "dtype: float64\n"
      "param: {kind: subspace, omega_dim: 40, projection: dense}\n"
      "train: {epochs: 0, max_steps: 60, lr: 0.05}\n";
  RunOptions o;
  o.console = false;
  o.write_file = false;
  auto r = run_train(Config::load_string(yaml, "s.yaml"), o);
  ASSERT_EQ(r.status, "completed");
  EXPECT_LT(r.losses.back(), 0.8 * r.losses.front());
  // theta - theta0 lies in span(P): rebuild theta0 (same seed, same init) and P, and project.
  auto cfg = Config::load_string(yaml, "s.yaml");
  auto delta = flat_parameters(*r.network) - flat_parameters(*initial_network(cfg));
  ASSERT_GT(delta.norm().item<double>(), 1e-3);
  auto p = projection_make(cfg, "dense", delta.numel(), 40, projection_seed(uint64_t(cfg.get_int("seed"))),
                           torch::kFloat64, torch::kCPU);
  auto P = explicit_matrix(*p, delta.numel(), 40);
  auto coef = std::get<0>(torch::linalg_lstsq(P, delta.unsqueeze(1)));
  auto residual = (torch::mm(P, coef).squeeze(1) - delta).norm().item<double>();
  EXPECT_LT(residual, 1e-9 * delta.norm().item<double>());
}

TEST(Subspace, ResumeEqualsUninterrupted) {
  xpand::test::TempDir dir;
  const std::string yaml =
      "data: {name: teacher, batch_size: 32, train_size: 512, test_size: 128, teacher_inputs: 8, teacher_classes: 3}\n"
      "model: {kind: mlp, widths: [8, 32, 3]}\n"
      "param: {kind: subspace, omega_dim: 30, projection: fastfood}\n"
      "train: {epochs: 0, max_steps: 40, lr: 0.05, optimizer: adam}\n"
      "output: {checkpoint_every: 10}\n";
  RunOptions o;
  o.console = false;
  auto whole = run_train(Config::load_string(yaml, "s.yaml", {"output.dir=" + dir.file("a")}), o);
  ASSERT_EQ(whole.status, "completed");
  // The same run stopped after 20 steps (by a step cap kept out of the run id: resume reads the
  // checkpoint at step 20 of the 40-step run written by a first run that was told to stop there).
  o.stop_after = 20;
  auto first = run_train(Config::load_string(yaml, "s.yaml", {"output.dir=" + dir.file("b")}), o);
  ASSERT_EQ(first.steps, 20);
  o.stop_after = 0;
  auto rest = run_train(Config::load_string(yaml, "s.yaml", {"output.dir=" + dir.file("b")}), o);
  ASSERT_EQ(rest.status, "completed");
  ASSERT_EQ(rest.resumed_from, 20);
  ASSERT_EQ(rest.losses.size(), 20u);
  for (size_t i = 0; i < 20; ++i) EXPECT_EQ(rest.losses[i], whole.losses[20 + i]) << "step " << 21 + i;
}

// The CPU fast Walsh–Hadamard transform equals the Sylvester Hadamard matrix H_n (H_1 = [1],
// H_2n = [[H, H], [H, -H]]) applied to x, for every power of two up to 1024 and both dtypes.
TEST(Subspace, HadamardTransformEqualsSylvesterMatrix) {
  auto h = torch::ones({1, 1}, torch::kFloat64);
  for (int64_t n = 1; n <= 1024; n *= 2) {
    if (n > 1) h = torch::cat({torch::cat({h, h}, 1), torch::cat({h, -h}, 1)}, 0);
    auto x = torch::randn({n}, torch::kFloat64);
    auto want = torch::mv(h, x);
    auto got = hadamard_transform(x.clone());
    EXPECT_LT((got - want).abs().max().item<double>(), 1e-12 * std::max<double>(1, n)) << "n = " << n;
    auto got32 = hadamard_transform(x.to(torch::kFloat32)).to(torch::kFloat64);
    EXPECT_LT((got32 - want).abs().max().item<double>(), 1e-5 * std::max<double>(1, n)) << "float n = " << n;
  }
}

// layers.fc1.kind: subspace: fc1's weight and bias move in theta0 + P omega (one shared omega),
// fc2 trains as usual, and the optimizer holds d + |fc2| numbers.
TEST(Subspace, SelectedLayersMoveInTheSubspaceOthersTrainAsUsual) {
  const std::string yaml =
      "data: {name: teacher, batch_size: 32, train_size: 512, test_size: 128, teacher_inputs: 8, teacher_classes: 3}\n"
      "model: {kind: mlp, widths: [8, 32, 3]}\n"
      "dtype: float64\n"
      "param: {omega_dim: 20, projection: dense}\n"
      "layers: {fc1: {kind: subspace}}\n"
      "train: {epochs: 0, max_steps: 60, lr: 0.05}\n";
  auto cfg = Config::load_string(yaml, "s.yaml");
  auto init = initial_network(cfg);
  auto split = subspace_split(cfg, *init);
  ASSERT_EQ(split.theta_names, (std::vector<std::string>{"fc1_bias", "fc1.weight"}));  // the network's order
  EXPECT_EQ(split.theta_numel(), 8 * 32 + 32);
  EXPECT_EQ(split.rest_numel(), 32 * 3 + 3);

  RunOptions o;
  o.console = false;
  o.write_file = false;
  auto r = run_train(cfg, o);
  ASSERT_EQ(r.status, "completed");
  EXPECT_LT(r.losses.back(), 0.8 * r.losses.front());
  auto params = r.network->named_parameters();
  auto init_params = init->named_parameters();
  auto delta = torch::cat({(params["fc1_bias"] - init_params["fc1_bias"]).reshape(-1),
                           (params["fc1.weight"] - init_params["fc1.weight"]).reshape(-1)});
  ASSERT_GT(delta.norm().item<double>(), 1e-3);
  EXPECT_GT((params["fc2.weight"] - init_params["fc2.weight"]).norm().item<double>(), 1e-3);
  auto p = projection_make(cfg, "dense", delta.numel(), 20, projection_seed(uint64_t(cfg.get_int("seed"))),
                           torch::kFloat64, torch::kCPU);
  auto P = explicit_matrix(*p, delta.numel(), 20);
  auto coef = std::get<0>(torch::linalg_lstsq(P, delta.unsqueeze(1)));
  EXPECT_LT((torch::mm(P, coef).squeeze(1) - delta).norm().item<double>(), 1e-9 * delta.norm().item<double>());
}

// param.anchor: column (the omega-space notebook): P = QR of [theta_init, Gaussian], so P is
// orthonormal with theta_init/|theta_init| as its first column; training starts at theta_init
// exactly (up to rounding) and theta stays in span(P) (no offset).
TEST(Subspace, ColumnAnchorHoldsTheInitialisation) {
  const int64_t D = 300, d = 12;
  auto v = torch::randn({D}, torch::kFloat64);
  auto cfg = cfg_with("dense-qr", d);
  auto p = projection_make(cfg, "dense-qr", D, d, 7, torch::kFloat64, torch::kCPU, v);
  auto P = explicit_matrix(*p, D, d);
  EXPECT_LT((torch::mm(P.t(), P) - torch::eye(d, torch::kFloat64)).abs().max().item<double>(), 1e-12);
  EXPECT_LT((P.select(1, 0) - v / v.norm()).abs().max().item<double>(), 1e-12);

  const std::string yaml =
      "data: {name: teacher, batch_size: 32, train_size: 512, test_size: 128, teacher_inputs: 8, teacher_classes: 3}\n"
      "model: {kind: mlp, widths: [8, 32, 3]}\n"
      "dtype: float64\n"
      "param: {kind: subspace, omega_dim: 40, projection: dense-qr, anchor: column}\n"
      "train: {epochs: 0, max_steps: 60, lr: 0.05}\n";
  auto c = Config::load_string(yaml, "s.yaml");
  auto init = initial_network(c);
  auto theta_init = flat_parameters(*init);
  std::vector<torch::Tensor> tensors;
  for (auto& t : init->parameters()) tensors.push_back(t);
  Subspace s(c, tensors, uint64_t(c.get_int("seed")));
  EXPECT_NEAR(s.omega()[0].item<double>(), theta_init.norm().item<double>(), 1e-9);
  EXPECT_LT(s.omega().narrow(0, 1, 39).abs().max().item<double>(), 1e-9);
  s.push();  // theta = P omega0 reproduces theta_init
  EXPECT_LT((flat_parameters(*init) - theta_init).abs().max().item<double>(), 1e-12);

  RunOptions o;
  o.console = false;
  o.write_file = false;
  auto r = run_train(c, o);
  ASSERT_EQ(r.status, "completed");
  EXPECT_LT(r.losses.back(), 0.8 * r.losses.front());
  auto theta = flat_parameters(*r.network);
  auto pr = projection_make(c, "dense-qr", theta.numel(), 40, projection_seed(uint64_t(c.get_int("seed"))),
                            torch::kFloat64, torch::kCPU, theta_init);
  auto Q = explicit_matrix(*pr, theta.numel(), 40);
  EXPECT_LT((torch::mv(Q, torch::mv(Q.t(), theta)) - theta).norm().item<double>(), 1e-9 * theta.norm().item<double>());
  EXPECT_GT((theta - theta_init).norm().item<double>(), 1e-3);

  // Anything but dense-qr is refused, naming the key.
  try {
    run_train(Config::load_string(yaml, "s.yaml", {"param.projection=fastfood"}), o);
    ADD_FAILURE() << "anchor: column with fastfood was accepted";
  } catch (const xpand::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("param.anchor"), std::string::npos) << e.what();
  }
}
