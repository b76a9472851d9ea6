// The single-run trainer (see trainer.h): set-up in Run's constructor, the output files in
// open_output(), and run_train's loop of step, evaluate, snapshot, checkpoint and preempt.
#include "train/trainer.h"

#include <fmt/format.h>

#include <cmath>
#include <filesystem>

#include "core/error.h"
#include "core/host.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/signals.h"
#include "core/timer.h"
#include "data/dataset.h"
#include "dist/backend.h"
#include "dist/context.h"
#include "param/param.h"
#include "store/index.h"
#include "train/autocast.h"
#include "train/checkpoint.h"
#include "train/distill.h"
#include "train/evaluation.h"
#include "train/existing_run.h"
#include "train/expand_schedule.h"
#include "train/gradient_path.h"
#include "train/optim.h"
#include "train/provenance.h"
#include "train/settings.h"

namespace fs = std::filesystem;

namespace xpand::train {

namespace {

// How long a finished run waits for another process's index update before it leaves the index
// to the next one (store::IndexOptions).
constexpr double kIndexLockSeconds = 10;

// A config error raised below the config layer (dist/), reported with its key and location.
template <typename F>
auto as_config_error(const config::Config& cfg, const std::string& key, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const ConfigError& e) {
    cfg.fail(key, e.what());
  }
}

// The training loss of one step, summed over the group, and whether any rank was asked to stop
// (SIGTERM/SIGINT/SIGUSR1): one small all-reduce, one host sync per step.
constexpr int kSignalSlots = 32;  // entry 0 the loss, entries 1..31 one per signal number
struct StepTotals {
  double loss = 0;
  int signal = 0;
};

// One run's state: everything the loop in run_train needs, built in the constructor.
class Run {
 public:
  Run(const config::Config& cfg, const RunOptions& opts);
  // Examines the output directory: false when the run is already completed (skipped). Resumes from
  // a checkpoint that fits, and hands the run's provenance to the sinks.
  bool open_output();

  // Forward and backward over the micro-batches, the gradient path's reduction, clipping and the
  // optimizer's step. Returns false when the loss or gradient is not finite (nothing stepped).
  bool train_step(int64_t step, StepTotals& totals);
  void evaluate(int64_t step);
  void snapshot(int64_t step);
  void checkpoint(int64_t step);
  void preempted(int64_t step, int signal);
  void failed(const std::exception& e);
  RunResult finish();

  const TrainSettings& settings() const { return s; }
  RunResult result;
  int64_t start_step = 0;

 private:
  void sync_buffers();
  bool checkpoint_due(int64_t step) const;

  const config::Config& cfg_;
  const RunOptions& opts_;
  Timer wall_;
  TrainSettings s;
  dist::CommPtr group_, comm_;
  int rank_ = 0, world_ = 1;
  int64_t threads_ = 0;
  torch::Device device_ = torch::kCPU;
  data::Dataset ds_;
  model::NetworkPtr net_;
  std::unique_ptr<ExpandSchedule> expand_;
  Trainables train_;
  std::unique_ptr<torch::optim::Optimizer> opt_;
  std::unique_ptr<Schedule> sched_;
  std::unique_ptr<Evaluator> eval_;
  std::unique_ptr<Teacher> teacher_;  // train.distill.from
  std::vector<std::unique_ptr<MetricSink>> sinks_;
  std::unique_ptr<RunLock> lock_;
  std::string ckpt_path_, error_;
  store::RunStatus status_ = store::RunStatus::Completed;
  FileId written_;
  bool checkpointed_ = false;  // at the current step
};

// The process-wide set-up before the dataset: the group agrees on the run, threads and the seed.
dist::CommPtr begin_run(const config::Config& cfg, const RunOptions& opts, const std::string& id, int64_t& threads) {
  dist::CommPtr group = opts.comm ? opts.comm : dist::comm_local();
  group->set_timeout(cfg.get_float("dist.timeout_s"));
  if (group->size() > 1) {
    // Every rank of a group must train the same configuration.
    std::string theirs = group->broadcast_string(id, 0, "run id check");
    if (theirs != id)
      throw ConfigError(
          fmt::format("rank {} resolved the configuration to run {} but group rank 0 to {}: every "
                      "rank of a group must get the same config file and --set overrides",
                      group->rank(), id, theirs));
  }
  threads = cfg.get_int("threads");
  if (threads == 0) threads = default_threads(dist::ranks_on_this_node());
  if (const int64_t cpus = usable_cpus(); threads > cpus) {
    // More threads than CPUs only contend (and OpenMP starting thousands of them takes minutes).
    log::warn("threads: {} is more than the {} CPUs this process may use; using {}", threads, cpus, cpus);
    threads = cpus;
  }
  torch::set_num_threads(int(threads));
  torch::manual_seed(uint64_t(cfg.get_int("seed")));
  return group;
}

data::Dataset load_data(const config::Config& cfg, torch::Device device) {
  data::Dataset ds = data::dataset_load(cfg, device);
  const auto dtype = cfg.get_string("dtype") == "float64" ? torch::kFloat64 : torch::kFloat32;
  if (ds.task == data::Task::Classification) {
    ds.train_x = ds.train_x.to(dtype);
    ds.test_x = ds.test_x.to(dtype);
  }
  return ds;
}

Run::Run(const config::Config& cfg, const RunOptions& opts) : cfg_(cfg), opts_(opts) {
  result.run_id = run_id(cfg);
  group_ = begin_run(cfg, opts, result.run_id, threads_);
  device_ = as_config_error(cfg, "device", [&] { return dist::device_for_run(cfg.get_string("device")); });
  if (cfg.get_string("train.precision") == "bf16" && device_.is_cpu())
    log::warn(
        "train.precision: bf16 on the CPU runs libtorch's bfloat16 CPU kernels, usually slower than float32 "
        "without AMX/AVX512-BF16 hardware; it is meant for GPUs");
  ds_ = load_data(cfg, device_);
  s = read_settings(cfg, ds_, group_->size());
  rank_ = group_->rank(), world_ = group_->size();
  // Every layer option and the network's size checked from shapes first: a key that does not apply,
  // or weights that cannot fit, is exit 2 before gigabytes are allocated. Training holds the weights,
  // their gradients and the optimizer's state (Adam: two more copies).
  model::network_check(cfg, ds_, s.optimizer == "adam" || s.optimizer == "adamw" ? 4 : 3);
  net_ = model::network_build(cfg, ds_, param::factory_from_config(cfg));
  net_->to(device_, s.dtype);
  init_from_run(cfg, *net_);  // after the move: the snapshot's float64 values reach a float64 network whole
  result.network = net_;
  comm_ = as_config_error(cfg, "dist.backend",
                          [&] { return dist::gradient_comm(s.backend, group_, device_, s.timeout_s); });
  if (world_ > 1) {
    // Same initial state on every rank, whatever the seeds did (frozen tensors and buffers too).
    torch::NoGradGuard ng;
    for (auto& t : net_->parameters()) comm_->broadcast(t.data(), 0, "initial parameters");
    for (auto& t : net_->buffers()) comm_->broadcast(t, 0, "initial buffers");
    // From here on each rank draws its own random numbers (dropout masks of its own rows);
    // everything that must agree across ranks is broadcast or uses explicit generators.
    torch::manual_seed(s.seed ^ (0x9E3779B97F4A7C15ull * uint64_t(rank_ + 1)));
  }
  expand_ = std::make_unique<ExpandSchedule>(cfg, *net_, s.seed);  // rotate: collapses all but the first
  train_ = make_trainables(cfg, *net_, s, comm_);
  opt_ = optimizer_build(cfg, train_.params);
  sched_ = std::make_unique<Schedule>(Schedule::from_config(cfg, s.total));
  eval_ = std::make_unique<Evaluator>(cfg, ds_, s, device_);
  teacher_ = Teacher::from_config(cfg, ds_, device_);
  result.path = (fs::path(s.out_dir) / "runs" / (result.run_id + ".h5")).string();
  ckpt_path_ = checkpoint_path(result.path);
  if (opts.console && rank_ == 0) sinks_.push_back(console_sink(s.log_every, opts.bar));
}

bool Run::open_output() {
  Existing existing;
  if (opts_.write_file) {
    existing = examine_run(result.path, ckpt_path_, result.run_id, s.total, opts_.force, opts_.resume,
                           checkpoint_datasets(*net_, train_.extra), *group_, lock_);
    if (existing.action == Existing::Skip) {
      result.status = store::RunStatus::Skipped;
      if (rank_ != 0) return false;
      log::info("{} is already completed; skipping (use --force to train it again)", result.path);
      result.final_eval = last_eval(result.path);
      result.steps = result.final_eval.step;
      return false;
    }
    if (rank_ == 0) sinks_.push_back(h5_sink(result.path, s.sink));
  }
  if (existing.action == Existing::Resume) {
    CheckpointInfo c = checkpoint_load(ckpt_path_, *net_, train_.params, *opt_, *expand_, rank_, train_.extra);
    if (c.world_size != world_ && rank_ == 0)
      log::warn("{}: checkpoint written by {} rank(s), resumed on {}: per-rank random streams (dropout) restart",
                ckpt_path_, c.world_size, world_);
    start_step = result.resumed_from = result.steps = c.step;
    if (rank_ == 0) result.final_eval = last_eval(result.path);  // the summary of a run resumed at its very end
    log::info("run {}: resuming from the checkpoint at step {} of {}", result.run_id, c.step, s.total);
  }
  train_.path->calibrate();  // dist.cut auto: after the skip decision, so a completed run measures nothing
  RunIdentity id{result.run_id, result.path, ckpt_path_, cfg_.to_yaml(), opts_.axes, opts_.write_file, start_step};
  RunInfo info =
      make_run_info(id, s, ds_, threads_, train_.count(), device_, *group_, comm_->backend(), train_.path->cut_mode());
  add_layers(info, cfg_, *net_);
  train_.path->describe(info);
  if (teacher_) info.attrs["distill_teacher"] = teacher_->describe();
  try {
    for (auto& sink : sinks_) sink->on_start(info);  // group rank 0's run file (a full disk fails here)
  } catch (const std::exception& e) {
    // The other ranks of a group wait in the step's collectives: end the job with the reason.
    if (world_ > 1) dist::abort_job_if_distributed(kExitFailure, fmt::format("run {}: {}", result.run_id, e.what()));
    throw;
  }
  // The run file's identity, checked at the end: a directory deleted or a file replaced under a
  // running job must not end in "completed, results: <a path that holds nothing>".
  if (opts_.write_file && rank_ == 0) written_ = file_id(result.path);
  net_->train();
  reset_peak_rss();  // mem_peak measures training, not set-up
  return true;
}

bool Run::train_step(int64_t step, StepTotals& totals) {
  Timer t;
  if (expand_->before_step(step, *opt_)) train_.path->tensors_changed();
  const double lr = sched_->at(step);
  optimizer_set_lr(*opt_, lr);
  // This rank's rows of the global batch, in grad_accum micro-batches. Each micro-batch loss is
  // weighted by its share of the global batch, so the gradients summed over micro-batches and
  // ranks are exactly the gradient of the global batch's mean loss.
  data::Batch b = ds_.train_batch(s.seed, step, s.batch, rank_, world_);
  const int64_t rows = b.x.size(0), accum = s.grad_accum;
  train_.path->begin_step(s.batch / world_ / accum);
  auto loss_sum = torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat64).device(device_));
  for (int64_t m = 0; m < accum; ++m) {
    const int64_t lo = m * rows / accum, hi = (m + 1) * rows / accum;
    if (m == accum - 1) train_.path->before_last_backward();
    torch::Tensor loss;
    auto x = b.x.narrow(0, lo, hi - lo), y = b.y.narrow(0, lo, hi - lo);
    const torch::Tensor teacher = teacher_ ? teacher_->logits(x) : torch::Tensor();  // its own dtype, no autocast
    {
      Autocast autocast(s.bf16, device_);  // the forward and the loss; backward runs outside, as in PyTorch
      auto logits = net_->forward(x);
      loss = (teacher_ ? teacher_->loss(ds_, logits, y, teacher) : loss_of(ds_, logits, y)) *
             (double(hi - lo) / double(s.batch));
    }
    loss.backward();
    loss_sum.add_(loss.detach().to(torch::kFloat64));  // on the device: no host sync per micro-batch
  }
  const dist::ReduceStats comm_stats = train_.path->reduce();
  // The step's loss and the preemption requests, summed over the group in one message: entry 0 the
  // loss, entry k the ranks asked to stop by signal k (the stop names the highest signal, as a
  // maximum over the ranks would).
  const int sig = signals::preempt_requested();
  auto totals_t = torch::zeros({kSignalSlots}, loss_sum.options());
  totals_t[0].copy_(loss_sum);
  if (sig > 0 && sig < kSignalSlots) totals_t[sig].fill_(1.0);
  totals_t = totals_t.to(comm_->device());
  if (world_ > 1) comm_->allreduce(totals_t, dist::ReduceOp::Sum, "step loss and preemption");
  totals_t = totals_t.cpu();
  const auto t_host = totals_t.accessor<double, 1>();
  totals.loss = t_host[0];
  for (int k = kSignalSlots - 1; k > 0 && totals.signal == 0; --k)
    if (t_host[k] > 0) totals.signal = k;
  // A tensor no gradient reached in this step gets zeros, as the reducer gives it on N ranks: the
  // optimizer steps it either way (weight decay, momentum), on one rank as on many.
  for (auto& p : train_.params)
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
  const double clip = s.grad_clip > 0 ? s.grad_clip : INFINITY;
  const double grad_norm = torch::nn::utils::clip_grad_norm_(train_.params, clip);
  result.losses.push_back(totals.loss);
  if (!std::isfinite(totals.loss) || !std::isfinite(grad_norm)) {
    status_ = store::RunStatus::Diverged;
    error_ = fmt::format("non-finite {} at step {} (loss {}, grad norm {})",
                         std::isfinite(totals.loss) ? "gradient" : "loss", step + 1, totals.loss, grad_norm);
    log::warn("run {} diverged: {}", result.run_id, error_);
    return false;
  }
  opt_->step();
  train_.path->after_optimizer_step();
  result.steps = step + 1;
  StepMetrics m{step + 1,
                double(step + 1) / double(s.steps_per_epoch),
                (step + 1) * s.batch,
                totals.loss,
                lr,
                grad_norm,
                t.seconds(),
                peak_rss_bytes()};
  m.time_comm = comm_stats.comm_seconds;
  m.time_comm_exposed = comm_stats.exposed_seconds;
  m.time_compute = m.time_step - m.time_comm_exposed;
  m.comm_bytes = result.comm_bytes = comm_stats.bytes;
  result.mem_peak = m.mem_peak;
  Timer ts;
  for (auto& sink : sinks_) sink->on_step(m);
  result.sink_seconds += ts.seconds();
  result.step_seconds += t.seconds();
  checkpointed_ = false;
  return true;
}

// Batch-norm running statistics follow each rank's shard: evaluation, snapshots and the end of
// the run use their mean over the group (integer counters come from group rank 0).
void Run::sync_buffers() {
  if (world_ == 1) return;
  torch::NoGradGuard ng;
  for (auto& t : net_->buffers()) {
    if (t.is_floating_point())
      comm_->allreduce(t, dist::ReduceOp::Avg, "batch-norm statistics");
    else
      comm_->broadcast(t, 0, "buffers");
  }
}

void Run::evaluate(int64_t step) {
  sync_buffers();
  result.final_eval = eval_->run(*net_, *comm_, step);
  for (auto& sink : sinks_) sink->on_eval(result.final_eval);
}

void Run::snapshot(int64_t step) {
  sync_buffers();  // collective: every rank, before rank 0 writes
  if (rank_ != 0) return;
  auto snap = snapshot_of(*net_, s.snapshot_factors);
  for (auto& sink : sinks_) sink->on_snapshot(step, snap);
}

void Run::checkpoint(int64_t step) {
  if (!opts_.write_file || checkpointed_) return;
  // The run file holds every row up to this step before the checkpoint that resumes after it.
  for (auto& sink : sinks_) sink->on_checkpoint(step);
  sync_buffers();  // batch-norm statistics: the group's mean, which every rank resumes from
  CheckpointInfo ci;
  ci.step = step;
  ci.run_id = result.run_id;
  checkpoint_save(ckpt_path_, ci, *net_, train_.params, *opt_, *expand_, *group_, s.sink.compression, train_.extra);
  checkpointed_ = true;
}

void Run::preempted(int64_t step, int signal) {
  checkpoint(step);
  status_ = store::RunStatus::Preempted;
  error_ = fmt::format("stopped {} after step {} of {}; `xpand train` (or the sweep) resumes it{}",
                       signal != 0 ? fmt::format("by signal {}", signal) : std::string("as asked (stop_after)"), step,
                       s.total, opts_.write_file ? " from the checkpoint at that step" : "");
  log::warn("run {}: {}", result.run_id, error_);
}

void Run::failed(const std::exception& e) {
  // The run file records the failure (status "failed", the message) before the error propagates.
  for (auto& sink : sinks_) {
    try {
      sink->on_end(RunEnd{store::RunStatus::Failed, e.what(), now_iso(), result.steps, std::nan(""), CutMeasured{}});
    } catch (const std::exception&) {
    }
  }
  // In a group, end the job now: unwinding would wait on collectives the other ranks never
  // finish, and this rank's message would be lost behind their timeout.
  if (world_ > 1)
    dist::abort_job_if_distributed(kExitFailure, fmt::format("run {} failed: {}", result.run_id, e.what()));
}

RunResult Run::finish() {
  result.status = status_;
  result.wall_seconds = wall_.seconds();
  const RunEnd end{status_,
                   error_,
                   now_iso(),
                   result.steps,
                   result.wall_seconds,
                   train_.path ? train_.path->measured() : CutMeasured{}};
  for (auto& sink : sinks_) sink->on_end(end);
  const bool writer = opts_.write_file && rank_ == 0;
  if (writer && !(file_id(result.path) == written_))
    throw Error(
        fmt::format("{} no longer names the run file this run wrote (its directory was removed or the file "
                    "replaced while the run trained): its results are lost; train it again",
                    result.path));
  if (writer && opts_.update_index) {
    try {
      store::IndexOptions io;
      io.lock_seconds = kIndexLockSeconds;  // the index is a cache: never hang a finished run on it
      Timer ti;
      const store::IndexResult ir = store::index_rebuild(s.out_dir, io);
      log::debug("index: {} run(s), {} reused from the previous index, in {:.3f} s", ir.runs, ir.reused, ti.seconds());
    } catch (const std::exception& e) {
      log::warn("could not update {}/index.h5: {}", s.out_dir, e.what());
    }
  }
  return result;
}

}  // namespace

std::string run_id(const config::Config& cfg) { return cfg.get_string("name") + "-" + cfg.hash(); }

RunResult run_train(const config::Config& cfg, const RunOptions& opts) {
  Run run(cfg, opts);
  if (!run.open_output()) return run.result;
  const TrainSettings& s = run.settings();
  try {
    for (int64_t step = run.start_step; step < s.total; ++step) {
      StepTotals totals;
      if (!run.train_step(step, totals)) break;  // diverged
      const int64_t done = step + 1;
      const bool last = done == s.total;
      const bool evaluated = done % s.eval_every == 0 || last;
      if (evaluated) run.evaluate(done);
      if ((s.snapshot_every > 0 && done % s.snapshot_every == 0) || last) run.snapshot(done);
      if (s.checkpoint_every > 0 ? done % s.checkpoint_every == 0 || last : evaluated) run.checkpoint(done);
      const bool stop_here = opts.stop_after > 0 && done == opts.stop_after;  // the same on every rank
      if ((totals.signal != 0 || stop_here) && !last) {
        run.preempted(done, totals.signal);
        break;
      }
    }
  } catch (const std::exception& e) {
    run.failed(e);
    throw;
  }
  return run.finish();
}

void print_summary(const std::vector<RunResult>& results) {
  fmt::print("\n{:<34} {:<10} {:>7} {:>10} {:>9} {:>10} {:>9} {:>8} {:>9}\n", "run", "status", "steps", "train_loss",
             "train_acc", "test_loss", "test_acc", "time_s", "peak_MiB");
  for (const auto& r : results)
    fmt::print("{:<34} {:<10} {:>7} {:>10.4f} {:>9.4f} {:>10.4f} {:>9.4f} {:>8.1f} {:>9.1f}\n", r.run_id,
               store::status_name(r.status), r.steps, r.final_eval.train_loss, r.final_eval.train_acc,
               r.final_eval.test_loss, r.final_eval.test_acc, r.wall_seconds, double(r.mem_peak) / 1048576.0);
  for (const auto& r : results)
    if (!r.path.empty()) fmt::print("results: {}\n", r.path);
}

}  // namespace xpand::train
