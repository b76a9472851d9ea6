// The one path a step's gradients take, from backward to the optimizer, on one rank or many:
//
//   begin_step()           gradients cleared; each cut layer's W_eff computed once into a leaf
//   forward, backward      (micro-batches; the last one armed so buckets all-reduce while backward runs)
//   reduce()               the cut's tensors summed over the group by dist::Reducer, then carried
//                          back to the trained tensors (W_eff -> factors; dL/dtheta -> dL/domega)
//   optimizer step, after_optimizer_step()
//
// Two cuts implement it: LayerCut (per layer, W_eff or the raw tensors: dist.cut: auto | narrowest |
// planned | raw, train/cut_chooser.h) and SubspaceCut (the omega-subspace: d numbers instead of the
// network's D, train/subspace.h).
// make_trainables() picks the cut from the config and returns the optimizer's tensors with it.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "dist/comm.h"
#include "dist/reducer.h"
#include "model/network.h"
#include "train/checkpoint.h"
#include "train/metrics.h"
#include "train/settings.h"

namespace xpand::train {

class GradientPath {
 public:
  GradientPath(dist::CommPtr comm, const TrainSettings& s);
  virtual ~GradientPath() = default;

  // Before the step's first forward; `micro_rows`: rows of this rank's micro-batches.
  void begin_step(int64_t micro_rows) { begin(micro_rows); }
  // Before the backward of the step's last micro-batch: the reducer collects the gradients that
  // complete the step and starts each bucket's all-reduce as backward fills it (ranks > 1).
  void before_last_backward();
  // After backward: every trained tensor holds its gradient of the global batch (summed over the
  // group). Returns the step's communication.
  dist::ReduceStats reduce();
  virtual void after_optimizer_step() {}
  // The trained tensors changed shape in place (the rotate schedule switched layers): the reducer's
  // hooks go, and the next step registers them on the new gradient accumulators.
  void tensors_changed() { reducer_.detach(); }

  // dist.cut as applied: auto | narrowest | planned | raw (raw on one rank and for the subspace).
  virtual std::string cut_mode() const = 0;
  // Chooses the cut per layer (dist.cut: auto calibrates here; collective: every rank of the group
  // calls it once, before the first step). Without it every layer that has a cut uses it.
  virtual void calibrate() {}
  // The cut chosen per layer with its predicted costs (info.cut_layers, link_*), ranks > 1.
  virtual void describe(RunInfo& info) const {}
  // What the cut did per layer, means per step so far (RunEnd::cut).
  virtual CutMeasured measured() const { return {}; }
  const dist::Reducer& reducer() const { return reducer_; }

 protected:
  virtual void begin(int64_t micro_rows) = 0;
  // The tensors whose .grad() the reducer sums, in the order backward produces them.
  virtual std::vector<torch::Tensor> tensors() = 0;
  virtual void prepare() {}                                // after backward, before the reduction
  virtual void finish() {}                                 // after the reduction
  virtual void reduced(const dist::ReduceStats& stats) {}  // the step's communication, after finish()
  int world() const { return comm_->size(); }

 private:
  dist::CommPtr comm_;
  dist::Reducer reducer_;
};

// What the optimizer trains and how its gradients travel.
struct Trainables {
  std::vector<torch::Tensor> params;  // the optimizer's tensors
  NamedTensors extra;                 // what checkpoints keep besides the network (omega)
  std::unique_ptr<GradientPath> path;
  int64_t count() const;  // trainable scalars
};

// Applies train.freeze, then builds the cut: SubspaceCut when some layer has kind subspace, else
// LayerCut. The network's current values are the subspace's theta0.
Trainables make_trainables(const config::Config& cfg, model::Network& net, const TrainSettings& s,
                           const dist::CommPtr& comm);

}  // namespace xpand::train
