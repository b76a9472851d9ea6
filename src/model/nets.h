// Constructors of the base networks (one file each: mlp.cpp, cnn.cpp, gpt.cpp).
#pragma once
#include "model/network.h"

namespace xpand::model {

NetworkPtr mlp_build(const config::Config& cfg, const data::Dataset& ds, const param::Factory& make);
NetworkPtr cnn_build(const config::Config& cfg, const data::Dataset& ds, const param::Factory& make);
NetworkPtr gpt_build(const config::Config& cfg, const data::Dataset& ds, const param::Factory& make);

// Activation by name: relu, tanh, sigmoid, gelu.
torch::Tensor activate(const std::string& name, const torch::Tensor& x);

}  // namespace xpand::model
