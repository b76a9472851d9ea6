// Every config key a training run reads, read once into typed fields (the trainer and the sweep's
// cost estimates share it): the run's shape (steps, batches, evaluation and output cadence), its
// numerics and its operational settings.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "config/config.h"
#include "data/dataset.h"
#include "train/metrics.h"

namespace xpand::train {

struct TrainSettings {
  // identity and numerics
  std::string name;
  uint64_t seed = 0;
  int64_t threads = 0;  // as configured (0: default_threads())
  std::string device, dtype_name, optimizer, precision;
  torch::Dtype dtype = torch::kFloat32;
  bool bf16 = false;
  // the step loop
  int64_t batch = 0, steps_per_epoch = 0, grad_accum = 1, total = 0;
  int64_t eval_every = 0;  // steps between evaluations (an epoch when train.eval_every is 0)
  double grad_clip = 0;
  int64_t log_every = 0;
  // evaluation
  int64_t eval_batch_size = 0, eval_max_samples = 0, eval_lm_batches = 0;
  std::vector<int64_t> focus_classes;
  // output
  std::string out_dir;
  int64_t snapshot_every = 0, checkpoint_every = 0;
  bool snapshot_factors = false;
  H5SinkOptions sink;
  // data-parallel communication
  std::string backend, cut;
  double timeout_s = 0, bucket_mb = 0, first_bucket_mb = 0;
  double link_gbps = 0, latency_us = 0, gemm_gflops = 0;  // dist.cut auto's overrides (0: measure)
  // model.init_from (empty: none) and its snapshot step
  std::string init_from;
  int64_t init_step = 0;
};

// Optimizer steps of a run: ceil(train.epochs x steps per epoch), capped by train.max_steps (or
// max_steps alone when epochs is 0). ConfigError when nothing is left to train.
int64_t total_steps(const config::Config& cfg, int64_t steps_per_epoch);

// Reads and checks the settings of one run on `ds` with `world` ranks: ConfigError (exit 2) for a
// batch larger than the training split, micro-batches (train.grad_accum) without rows on a rank, an
// empty run, or bf16 without float32.
TrainSettings read_settings(const config::Config& cfg, const data::Dataset& ds, int world);

}  // namespace xpand::train
