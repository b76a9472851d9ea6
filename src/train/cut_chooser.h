// dist.cut: auto, the per-layer choice of where an expanded layer's gradient is all-reduced.
//
// Each layer whose W_eff is smaller than its raw tensors has two exact options (docs/DISTRIBUTED.md):
//   raw     all-reduce every factor's gradient; the batch runs in the planner's order
//   weight  all-reduce dL/dW_eff (the dense layer's bytes); W_eff is formed once per step, the batch
//           runs through it, and the backward from W_eff to the factors runs after the reduction
// The predicted step of a choice (one option per layer) is its compute plus the communication that
// the backward pass cannot hide:
//   step = C + buckets(S) * latency_s + max(0, S / bytes_per_s - overlap * (2/3) C)
// with C the layers' compute under their options (plus work outside the choice), S the bytes they
// all-reduce, and 2/3 of C the backward that buckets can run behind. auto starts from the cheaper
// option per layer with nothing hidden (compute + bytes / bytes_per_s; the cut on a tie: fewer
// bytes), then flips single layers while that lowers the predicted step (the hidden part and the
// buckets' latency are not per layer).
// compute comes from timing both options at the layer's shapes (calibrate_cuts) or from the
// planner's FLOPs over a GEMM rate (dist.gemm_gflops, `xpand plan --gemm-gflops`); the link from
// timing all-reduces on the communicator or from dist.link_gbps.
#pragma once
#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "dist/comm.h"
#include "model/network.h"

namespace xpand::train {

// The communicator as the model sees it: an all-reduce of S bytes takes latency_s + S / bytes_per_s;
// `overlap` (0..1) is the fraction of backward compute time during which an all-reduce progresses.
struct LinkModel {
  double latency_s = 0, bytes_per_s = 0, overlap = 0;
  double first_bucket_mb = 1, bucket_mb = 25;  // the reducer's buckets (dist.first_bucket_mb, dist.bucket_mb)
  std::string source;  // "measured", "cached <file>", "dist.link_gbps", "plan", "none needed" or "-"
  double comm(double bytes) const { return bytes / bytes_per_s; }
  // The bandwidth part of S bytes not hidden behind the backward of `compute_s` of compute.
  double exposed(double bytes, double compute_s) const {
    return std::max(0.0, comm(bytes) - overlap * (2.0 / 3.0) * compute_s);
  }
};

// One option of one layer: its compute per step (seconds) and the bytes it all-reduces.
struct CutOption {
  double compute_s = 0;
  int64_t bytes = 0;
};

// One layer for the chooser. Without a choice (low-rank, LoRA, dense, batch norm between factors)
// only `raw` is used.
struct LayerCosts {
  std::string name;
  bool has_choice = false;
  CutOption raw, cut;
  std::string compute_source;  // "timed", "flops" or "planned" (the planner runs it weight-first anyway)
};

// The chooser's verdict on one layer.
struct CutDecision {
  std::string name;
  std::string choice;                     // "weight", "raw", or "none" (the layer has no cut: raw tensors are the cut)
  int64_t bytes = 0;                      // bytes all-reduced per step under the choice
  double raw_cost_s = 0, cut_cost_s = 0;  // each option's compute + its bytes' all-reduce time (none hidden)
  double comm_s = 0, compute_s = 0;       // of the chosen option: all-reduce time (bandwidth term), compute
  std::string compute_source;
};

// auto: the option per layer that minimises the predicted step under `link` (see the file comment).
std::vector<CutDecision> choose_cuts(const std::vector<LayerCosts>& layers, const LinkModel& link);
// The fixed modes as decisions (costs filled in the same way): "narrowest" cuts every layer that has
// a cut, "raw" none. ("planned" is narrowest restricted to layers whose compute_source is "planned".)
std::vector<CutDecision> fixed_cuts(const std::vector<LayerCosts>& layers, const LinkModel& link,
                                    const std::string& mode);

// Buckets the reducer sends for `bytes` (dist.first_bucket_mb, then dist.bucket_mb each).
int64_t bucket_count(double bytes, double first_bucket_mb, double bucket_mb);

// The predicted step: every layer's chosen compute, plus `other_compute_s` (work outside the choice),
// plus the communication the backward does not hide and every bucket's latency.
struct StepPrediction {
  double compute_s = 0, comm_s = 0, exposed_s = 0, step_s = 0;
  int64_t bytes = 0, buckets = 0;
};
StepPrediction predict_step(const std::vector<CutDecision>& decisions, double other_compute_s, int64_t other_bytes,
                            const LinkModel& link, double first_bucket_mb, double bucket_mb);

// A ring all-reduce over `ranks` ranks on links of `gbps` Gbit/s per rank with `latency_us` per step
// of a tree (2 ceil(log2 ranks) steps): the model of a hypothetical job (`xpand plan --ranks`).
LinkModel link_for_ranks(int ranks, double gbps, double latency_us, double overlap);

// Calibration of a real job (dist.cut: auto on more than one rank), identical on every rank:
// the link (all-reduces of a few sizes on `comm`; dist.link_gbps overrides) and, for every layer
// with a choice, the compute of both options timed at the layer's shapes with `micro_rows` rows
// (dist.gemm_gflops: the planner's FLOPs over that rate instead). Measurements are cached in
// <cache_dir>/calibration-<host>-<backend>-n<ranks>-t<threads>.yaml, so the runs of a sweep measure once.
struct CalibrationOptions {
  std::string cache_dir;  // empty: no cache
  double link_gbps = 0, latency_us = 0, gemm_gflops = 0;
  int64_t micro_rows = 1, grad_accum = 1, threads = 1;
  std::string precision = "float32";  // train.precision (part of the cache key)
};
struct Calibration {
  LinkModel link;
  std::vector<LayerCosts> layers;  // one per slot of the network, in slot order
};
Calibration calibrate_cuts(model::Network& net, const dist::CommPtr& comm, const CalibrationOptions& opts);

// The costs of every slot from shapes alone (planner FLOPs over `gemm_flops_per_s`), for `xpand plan`
// and for dist.gemm_gflops. `rows`: rows of one micro-batch on one rank.
std::vector<LayerCosts> layer_costs_from_flops(model::Network& net, int64_t rows, double gemm_flops_per_s,
                                               int64_t grad_accum, int64_t elem_bytes);

// FLOP/s of an m x k x n matrix product on this machine (best of two after a warm-up).
double gemm_rate(int64_t m, int64_t k, int64_t n, const torch::TensorOptions& options);

}  // namespace xpand::train
