// How a run's network starts besides its seeded initialisation: frozen tensors (train.freeze) and
// weights from another run's snapshot (model.init_from).
#pragma once
#include <string>
#include <vector>

#include "config/config.h"
#include "data/dataset.h"
#include "model/network.h"

namespace xpand::train {

// train.freeze: parameters whose names match one of the glob patterns stop requiring gradients;
// ConfigError naming train.freeze (and listing the parameters) for a pattern that matches none.
void freeze_parameters(const config::Config& cfg, model::Network& net);

// model.init_from (and a lowrank or lora layer's own init_from): each layer starts from the dense
// weight of a run file's snapshot through its kind's init_from_weights hook (dense and subspace copy
// it, lowrank init: svd factors it, lora takes it as W0; a kind without the hook is a config error),
// and with model.init_from each layer's bias too. Call after the network has its device and dtype
// (a float64 network gets the snapshot's float64 values whole). check_only: the files, snapshots
// and shapes are checked and nothing is read (plan, sweep costs). Errors name the init_from key.
void init_from_run(const config::Config& cfg, model::Network& net, bool check_only = false);

// Array `name` ("weight", "bias") of `layer` in a run file's snapshot (step 0: the newest complete
// one), checked against the expected dimensions; float64 (as stored); a meta tensor when check_only.
// Throws Error naming the file and what is missing.
torch::Tensor snapshot_array(const std::string& path, int64_t step, const std::string& layer, const std::string& name,
                             const std::vector<int64_t>& dims_expected, bool check_only = false);

// The network built from shapes alone (parameterizations on the meta device, no weight allocated
// or drawn), its init_from sources checked: what `xpand plan` and the sweep's costs need.
model::NetworkPtr network_shapes(const config::Config& cfg, const data::Dataset& ds);

}  // namespace xpand::train
