// mlp: fully connected network over model.widths (input first, classes last), activation between
// layers, optional bias, and optional residual connections around square hidden layers.
// Expansive Networks' MNIST net is widths [784, 128, 10] with fc1 expanded (configs/nets/expansive-mnist.yaml).
#include <fmt/format.h>

#include "core/error.h"
#include "model/nets.h"

namespace xpand::model {

torch::Tensor activate(const std::string& name, const torch::Tensor& x) {
  if (name == "relu") return torch::relu(x);
  if (name == "tanh") return torch::tanh(x);
  if (name == "sigmoid") return torch::sigmoid(x);
  if (name == "gelu") return torch::gelu(x);
  throw Error(fmt::format("unknown activation '{}'", name));
}

namespace {

class Mlp : public Network {
 public:
  Mlp(const config::Config& cfg, const data::Dataset& ds, const param::Factory& make)
      : widths_(cfg.get_ints("model.widths")), activation_(cfg.get_string("model.activation")) {
    if (ds.task != data::Task::Classification)
      cfg.fail("model.kind", fmt::format("mlp needs a classification dataset, {} is language modelling", ds.name));
    if (widths_.size() < 2) cfg.fail("model.widths", "needs at least an input and an output width");
    int64_t in = 1;
    for (int64_t d : ds.sample_shape) in *= d;
    if (widths_.front() != in)
      cfg.fail("model.widths",
               fmt::format("first width {} must equal the input size of {} ({})", widths_.front(), ds.name, in));
    if (widths_.back() != ds.num_classes)
      cfg.fail("model.widths",
               fmt::format("last width {} must equal the {} classes of {}", widths_.back(), ds.num_classes, ds.name));
    bool bias = cfg.get_bool("model.bias"), zero_bias = cfg.get_string("model.bias_init") == "zero";
    const bool own_bias = cfg.get_string("model.layer_bias") == "own";
    size_t n = widths_.size() - 1;
    residual_.assign(n, false);
    for (int64_t r : cfg.get_ints("model.residual")) {
      if (r >= int64_t(n) - 1 || r < 1 || widths_[r] != widths_[r + 1])
        cfg.fail("model.residual", fmt::format("layer {} cannot take a residual: it must be a square hidden layer "
                                               "(1 <= index < {} with equal in and out widths)",
                                               r, n - 1));
      residual_[r] = true;
    }
    for (size_t i = 0; i < n; ++i) {
      std::string name = fmt::format("fc{}", i + 1);
      param::WeightShape shape{{widths_[i + 1], widths_[i]}};
      layers_.push_back(add_slot(*this, name, name, shape, param::Init::torch_default(shape), make, 1, i > 0));
      torch::Tensor b;
      // model.layer_bias: own: a layer whose parameterization has its own bias (factor biases, batch
      // norm, the seed's first_bias) takes no second one, as upstream's layers have it.
      if (bias && !(own_bias && layers_.back()->has_bias())) {
        double bound = 1.0 / std::sqrt(double(widths_[i]));
        b = register_parameter(name + "_bias", zero_bias ? torch::zeros({widths_[i + 1]})
                                                         : torch::empty({widths_[i + 1]}).uniform_(-bound, bound));
      }
      biases_.push_back(b);
    }
  }

  std::string kind() const override { return "mlp"; }

  torch::Tensor forward(const torch::Tensor& x) override {
    torch::Tensor h = x.flatten(1);
    for (size_t i = 0; i < layers_.size(); ++i) {
      torch::Tensor z = layers_[i]->linear(h, biases_[i]);
      if (residual_[i]) z = z + h;
      h = i + 1 < layers_.size() ? activate(activation_, z) : z;
    }
    return h;
  }

 private:
  std::vector<int64_t> widths_;
  std::string activation_;
  std::vector<param::ParamPtr> layers_;
  std::vector<torch::Tensor> biases_;
  std::vector<bool> residual_;
};

}  // namespace

NetworkPtr mlp_build(const config::Config& cfg, const data::Dataset& ds, const param::Factory& make) {
  return std::make_shared<Mlp>(cfg, ds, make);
}

}  // namespace xpand::model
