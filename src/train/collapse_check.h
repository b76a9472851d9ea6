// The collapse check recorded as collapse_error at every evaluation (docs/FORMAT.md): the network
// in its expanded form (param/form.h: every layer as it trains, factor by factor, activation-first,
// batch norm with running statistics) against the collapsed network (one dense weight and bias per
// layer, model::network_collapse), on a fixed test batch. Two different computations: a wrong
// collapse (a factor left out, a bias not folded, stale batch-norm statistics) shows here, where a
// comparison through W_eff on both sides would be 0 by construction.
#pragma once
#include <torch/torch.h>

#include "model/network.h"

namespace xpand::train {

// What the check compares, stored as the `compares` attribute of /metrics/eval/collapse_error.
inline constexpr const char* kCollapseCompares =
    "expanded form (every layer as it trains: expanded factor by factor in activation-first order, each factor "
    "bias, skip and batch norm as its own operation, batch norm with running statistics; expanded conv conv by "
    "conv; lowrank x C^T then B^T; lora W0 x + s B (A x); dense and subspace layers as they are) against the "
    "collapsed network (one dense weight and bias per layer), on the first test batch, in evaluation mode";

// max |f_expanded(x) - f_collapsed(x)| / max |f_expanded(x)|, without gradients; both networks
// should be in evaluation mode.
double collapse_error(model::Network& net, model::Network& collapsed, const torch::Tensor& x);

}  // namespace xpand::train
