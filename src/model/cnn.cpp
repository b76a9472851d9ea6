// cnn: small conv nets in the style of ExpandNets' SmallNet (exp_cifar/models/cifar_tiny_3.py and
// cifar_tiny_7.py): blocks of conv k×k (same padding, or none: model.padding valid, as the 3×3
// SmallNet) → batch norm → activation → 2×2 max pool (floor), then fully connected layers.
#include <fmt/format.h>

#include "model/nets.h"

namespace xpand::model {

namespace {

class Cnn : public Network {
 public:
  Cnn(const config::Config& cfg, const data::Dataset& ds, const param::Factory& make)
      : activation_(cfg.get_string("model.activation")),
        k_(cfg.get_int("model.kernel_size")),
        pad_(cfg.get_string("model.padding") == "same" ? k_ / 2 : 0) {
    if (ds.task != data::Task::Classification || ds.sample_shape.size() != 3)
      cfg.fail("model.kind", fmt::format("cnn needs an image dataset (C, H, W); {} is not one", ds.name));
    if (k_ % 2 == 0 && pad_ > 0) cfg.fail("model.kernel_size", fmt::format("must be odd for same padding, got {}", k_));
    bool bias = cfg.get_bool("model.bias"), bn = cfg.get_bool("model.batch_norm");
    const bool zero_bias = cfg.get_string("model.bias_init") == "zero";
    const bool own_bias = cfg.get_string("model.layer_bias") == "own";  // see mlp.cpp
    int64_t c = ds.sample_shape[0], h = ds.sample_shape[1], w = ds.sample_shape[2];
    auto channels = cfg.get_ints("model.channels");
    for (size_t i = 0; i < channels.size(); ++i) {
      std::string name = fmt::format("conv{}", i + 1);
      param::WeightShape shape{{channels[i], c, k_, k_}};
      const int64_t ho = h + 2 * pad_ - k_ + 1, wo = w + 2 * pad_ - k_ + 1;  // the conv's output map
      if (ho < 1 || wo < 1)
        cfg.fail("model.channels",
                 fmt::format("conv{} ({}x{} kernel, no padding) does not fit its {}x{} input", i + 1, k_, k_, h, w));
      convs_.push_back(add_slot(*this, name, name, shape, param::Init::torch_default(shape), make, ho * wo, i > 0));
      torch::Tensor b;
      if (bias && !(own_bias && convs_.back()->has_bias())) {
        double bound = 1.0 / std::sqrt(double(shape.fan_in()));
        b = register_parameter(name + "_bias", zero_bias ? torch::zeros({channels[i]})
                                                         : torch::empty({channels[i]}).uniform_(-bound, bound));
      }
      conv_biases_.push_back(b);
      bns_.push_back(bn ? register_module(name + "_bn", torch::nn::BatchNorm2d(channels[i]))
                        : torch::nn::BatchNorm2d(nullptr));
      c = channels[i];
      h = ho / 2, w = wo / 2;
      if (h < 1 || w < 1)
        cfg.fail("model.channels", fmt::format("{} conv and pooling blocks shrink the {}x{} input below 1x1",
                                               channels.size(), ds.sample_shape[1], ds.sample_shape[2]));
    }
    std::vector<int64_t> widths = {c * h * w};
    for (int64_t f : cfg.get_ints("model.fc")) widths.push_back(f);
    widths.push_back(ds.num_classes);
    for (size_t i = 0; i + 1 < widths.size(); ++i) {
      std::string name = fmt::format("fc{}", i + 1);
      param::WeightShape shape{{widths[i + 1], widths[i]}};
      fcs_.push_back(add_slot(*this, name, name, shape, param::Init::torch_default(shape), make, 1, true));
      torch::Tensor b;
      if (bias && !(own_bias && fcs_.back()->has_bias())) {
        double bound = 1.0 / std::sqrt(double(widths[i]));
        b = register_parameter(name + "_bias", zero_bias ? torch::zeros({widths[i + 1]})
                                                         : torch::empty({widths[i + 1]}).uniform_(-bound, bound));
      }
      fc_biases_.push_back(b);
    }
  }

  std::string kind() const override { return "cnn"; }

  torch::Tensor forward(const torch::Tensor& x) override {
    torch::Tensor h = x;
    for (size_t i = 0; i < convs_.size(); ++i) {
      h = convs_[i]->conv2d(h, conv_biases_[i], 1, pad_, 1);
      if (!bns_[i].is_empty()) h = bns_[i]->forward(h);
      h = torch::max_pool2d(activate(activation_, h), 2);
    }
    h = h.flatten(1);
    for (size_t i = 0; i < fcs_.size(); ++i) {
      h = fcs_[i]->linear(h, fc_biases_[i]);
      if (i + 1 < fcs_.size()) h = activate(activation_, h);
    }
    return h;
  }

 private:
  std::string activation_;
  int64_t k_, pad_;
  std::vector<param::ParamPtr> convs_, fcs_;
  std::vector<torch::Tensor> conv_biases_, fc_biases_;
  std::vector<torch::nn::BatchNorm2d> bns_;
};

}  // namespace

NetworkPtr cnn_build(const config::Config& cfg, const data::Dataset& ds, const param::Factory& make) {
  return std::make_shared<Cnn>(cfg, ds, make);
}

}  // namespace xpand::model
