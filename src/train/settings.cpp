// The typed settings of a run (see settings.h).
#include "train/settings.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace xpand::train {

int64_t total_steps(const config::Config& cfg, int64_t spe) {
  const double epochs = cfg.get_float("train.epochs");
  const int64_t max_steps = cfg.get_int("train.max_steps");
  int64_t total = static_cast<int64_t>(std::ceil(epochs * double(spe)));
  if (max_steps > 0) total = epochs > 0 ? std::min(total, max_steps) : max_steps;
  if (total < 1) cfg.fail("train.epochs", "train.epochs and train.max_steps leave no step to train");
  return total;
}

TrainSettings read_settings(const config::Config& cfg, const data::Dataset& ds, int world) {
  TrainSettings s;
  s.name = cfg.get_string("name");
  s.seed = static_cast<uint64_t>(cfg.get_int("seed"));
  s.threads = cfg.get_int("threads");
  s.device = cfg.get_string("device");
  s.dtype_name = cfg.get_string("dtype");
  s.dtype = s.dtype_name == "float64" ? torch::kFloat64 : torch::kFloat32;
  s.optimizer = cfg.get_string("train.optimizer");
  s.precision = cfg.get_string("train.precision");
  s.bf16 = s.precision == "bf16";
  if (s.bf16 && s.dtype != torch::kFloat32)
    cfg.fail("train.precision", "bf16 autocast lowers float32 work to bfloat16: it needs dtype: float32");

  s.batch = cfg.get_int("data.batch_size");
  s.steps_per_epoch = ds.steps_per_epoch(s.batch);
  if (s.steps_per_epoch < 1)
    cfg.fail("data.batch_size",
             fmt::format("{} exceeds the {} training samples of {}", s.batch, ds.train_size(), ds.name));
  s.grad_accum = cfg.get_int("train.grad_accum");
  if (s.batch / world < s.grad_accum)
    cfg.fail("train.grad_accum", fmt::format("{} micro-batches need at least {} samples per rank, but a batch of "
                                             "{} over {} rank(s) gives {} (rank 0)",
                                             s.grad_accum, s.grad_accum, s.batch, world, s.batch / world));
  s.total = total_steps(cfg, s.steps_per_epoch);
  s.eval_every = cfg.get_int("train.eval_every") > 0 ? cfg.get_int("train.eval_every") : s.steps_per_epoch;
  s.grad_clip = cfg.get_float("train.grad_clip");
  s.log_every = cfg.get_int("train.log_every");

  s.eval_batch_size = cfg.get_int("data.eval_batch_size");
  s.eval_max_samples = cfg.get_int("data.eval_max_samples");
  s.eval_lm_batches = ds.task == data::Task::LanguageModel ? cfg.get_int("data.eval_batches") : 0;
  if (ds.task == data::Task::Classification) s.focus_classes = cfg.get_ints("data.focus_classes");

  s.out_dir = cfg.get_string("output.dir");
  s.snapshot_every = cfg.get_int("output.snapshot_every");
  s.snapshot_factors = cfg.get_bool("output.snapshot_factors");
  s.checkpoint_every = cfg.get_int("output.checkpoint_every");
  s.sink.compression = int(cfg.get_int("output.compression"));
  s.sink.swmr = cfg.get_bool("output.swmr");
  s.sink.flush_seconds = cfg.get_float("output.flush_seconds");
  s.sink.queue_bytes = size_t(cfg.get_float("output.queue_mb") * 1048576.0);

  s.backend = cfg.get_string("dist.backend");
  s.cut = cfg.get_string("dist.cut");
  s.timeout_s = cfg.get_float("dist.timeout_s");
  s.bucket_mb = cfg.get_float("dist.bucket_mb");
  s.first_bucket_mb = cfg.get_float("dist.first_bucket_mb");
  s.link_gbps = cfg.get_float("dist.link_gbps");
  s.latency_us = cfg.get_float("dist.latency_us");
  s.gemm_gflops = cfg.get_float("dist.gemm_gflops");
  if (cfg.has("model.init_from")) s.init_from = cfg.get_string("model.init_from");
  if (cfg.has("model.init_step")) s.init_step = cfg.get_int("model.init_step");
  return s;
}

}  // namespace xpand::train
