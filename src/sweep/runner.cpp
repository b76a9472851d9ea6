// Sweep scheduling, claiming and progress (see runner.h).
#include "sweep/runner.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <numeric>
#include <set>
#include <thread>

#include "core/error.h"
#include "core/host.h"
#include "core/log.h"
#include "core/progress.h"
#include "core/signals.h"
#include "core/timer.h"
#include "data/dataset.h"
#include "dist/context.h"
#include "model/network.h"
#include "store/index.h"
#include "store/run_file.h"
#include "sweep/claim.h"
#include "train/optim.h"
#include "train/settings.h"
#include "train/subspace.h"
#include "train/trainer.h"

namespace xpand::sweep {

namespace {

namespace fs = std::filesystem;

std::string run_path(const Point& p) {
  return (fs::path(p.cfg.get_string("output.dir")) / "runs" / (p.run_id + ".h5")).string();
}

// The status in a point's run file ("" when there is none or it cannot be read).
std::string file_status(const Point& p) {
  std::error_code ec;
  if (!fs::exists(run_path(p), ec)) return "";
  try {
    return store::RunReader(run_path(p)).attr_string("status");
  } catch (const std::exception&) {
    return "";
  }
}

// Progress of the whole sweep (every group and job sharing the output directory), shown by world
// rank 0 from a thread of its own so that it keeps coming while a long point trains: a live bar on
// a terminal (redrawn each second, files rescanned every few seconds), a log line every `every`
// seconds otherwise (Slurm output files). Counts come from the run files and the live claims; the
// ETA from the planner's FLOPs of the points completed since this invocation started.
class Progress {
 public:
  Progress(const Spec& spec, const std::vector<PointCost>& costs, double every, double lease, bool force)
      : spec_(spec),
        costs_(costs),
        every_(every),
        lease_(lease),
        force_(force),
        final_(spec.points.size(), false),
        redo_(spec.points.size(), false) {
    const bool safe = store::hdf5_threadsafe();
    tty_ = log::stderr_is_tty();
    scan(true);
    // Without a thread-safe HDF5 no second thread may open run files: tick() from the sweep loop.
    if (safe) thread_ = std::thread([this] { loop(); });
  }
  ~Progress() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    if (tty_) log::status_end();
  }
  // A point was claimed or ended here: rescan at the next redraw.
  void changed() { dirty_ = true; }
  // Called between points when there is no progress thread.
  void tick() {
    if (!thread_.joinable() && since_.seconds() >= (tty_ ? 1.0 : every_)) {
      since_.reset();
      scan(false);
      show();
    }
  }

 private:
  void loop() {
    std::unique_lock<std::mutex> lk(mu_);
    Timer scanned;
    const double period = tty_ ? 1.0 : every_;
    while (!cv_.wait_for(lk, std::chrono::duration<double>(period), [this] { return stop_; })) {
      if (!tty_ || dirty_.exchange(false) || scanned.seconds() >= 5) {
        scanned.reset();
        scan(false);
      }
      show();
    }
  }
  // Statuses from the files; a point once final (completed, failed, diverged) is not reopened.
  void scan(bool first) {
    completed_ = failed_ = running_ = left_ = 0;
    left_work_ = 0;
    for (size_t i = 0; i < spec_.points.size(); ++i) {
      const Point& p = spec_.points[i];
      // A claimed point is running; its file (perhaps open in this very process) is not opened.
      if (!final_[i] && claim_live(p.cfg.get_string("output.dir"), p.run_id, lease_)) {
        redo_[i] = false;
        ++running_;
        left_work_ += costs_[i].total_flops;
        continue;
      }
      std::string st = final_[i] ? final_status_[i] : file_status(p);
      // Final: what the sweep loop will not train again. A failed point is retried, and with
      // --force a point completed before this command started trains again (until its retraining
      // has been seen, its old file still says completed).
      if (first && force_ && st == "completed") redo_[i] = true;
      if (redo_[i] && st != "completed") redo_[i] = false;
      const bool done = st == "diverged" || (st == "completed" && !redo_[i]);
      if (done) {
        if (!final_[i]) {
          final_[i] = true;
          final_status_[i] = st;
          if (!first && st == "completed") done_work_ += costs_[i].total_flops;
        }
        completed_ += st == "completed";
        failed_ += st != "completed";
        continue;
      }
      if (st == "failed") {
        ++failed_;  // shown as failed until retried
        left_work_ += costs_[i].total_flops;
        continue;
      }
      left_work_ += costs_[i].total_flops;
      ++left_;
    }
  }
  void show() {
    const size_t n = spec_.points.size();
    const double t = wall_.seconds(), rate = done_work_ > 0 ? done_work_ / t : 0;
    const std::string eta = left_work_ <= 0 ? "0s" : rate > 0 ? duration(left_work_ / rate) : "?";
    if (tty_) {
      log::status(fmt::format("sweep {} {}/{} done{}, {} running, {} left, {} elapsed, ETA {}",
                              progress_bar(n ? double(completed_ + failed_) / double(n) : 1.0), completed_ + failed_, n,
                              failed_ ? fmt::format(" ({} failed)", failed_) : "", running_, left_, duration(t), eta));
    } else {
      log::info("sweep progress: {}/{} completed, {} failed or diverged, {} running, {} left, {} elapsed, ETA {}",
                completed_, n, failed_, running_, left_, duration(t), eta);
    }
  }

  const Spec& spec_;
  const std::vector<PointCost>& costs_;
  const double every_, lease_;
  const bool force_;
  bool tty_ = false;
  std::vector<bool> final_, redo_;
  std::map<size_t, std::string> final_status_;
  int completed_ = 0, failed_ = 0, running_ = 0, left_ = 0;
  double left_work_ = 0, done_work_ = 0;
  Timer wall_, since_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::atomic<bool> dirty_{false};
  std::thread thread_;
};

}  // namespace

std::vector<PointCost> sweep_costs(const Spec& spec) {
  std::vector<PointCost> costs;
  std::map<std::string, data::Dataset> datasets;  // by the data.* section of the resolved config
  for (const auto& p : spec.points) {
    std::string key;
    for (const auto& k : p.cfg.keys())
      if (k.rfind("data.", 0) == 0 || k == "seed") key += k + "=" + p.cfg.value_yaml(k) + ";";
    auto it = datasets.find(key);
    if (it == datasets.end()) it = datasets.emplace(key, data::dataset_load(p.cfg, torch::kCPU)).first;
    const data::Dataset& ds = it->second;
    torch::manual_seed(p.cfg.get_int("seed"));
    model::NetworkPtr net = train::network_shapes(p.cfg, ds);  // from shapes: no weight allocated
    const int64_t batch = p.cfg.get_int("data.batch_size");
    auto rep = model::network_report(*net, batch);
    PointCost c;
    c.flops_per_step = rep.flops;
    // The run's own settings (one rank: the group's size is checked when it trains).
    const int64_t total = train::read_settings(p.cfg, ds, 1).total;
    c.steps = total;
    // Schedule errors (warmup longer than the run) surface here, before anything trains.
    (void)train::Schedule::from_config(p.cfg, std::max<int64_t>(total, 1));
    c.total_flops = rep.flops * double(total);
    c.trainable = rep.trainable;
    for (const auto& l : rep.layers) c.memory_bytes += l.memory_bytes;
    c.comm_bytes = double(rep.cut) * (p.cfg.get_string("dtype") == "float64" ? 8 : 4);
    train::freeze_parameters(p.cfg, *net);  // frozen tensors stay outside the subspace (as in training)
    if (auto split = train::subspace_split(p.cfg, *net); !split.theta.empty()) {  // omega trains instead of theta
      const std::string proj = p.cfg.get_string("param.projection");
      const double elem = p.cfg.get_string("dtype") == "float64" ? 8 : 4;
      const double bytes = double(split.theta_numel()) * double(p.cfg.get_int("param.omega_dim")) * elem;
      if ((proj == "dense" || proj == "dense-qr") && bytes > p.cfg.get_float("param.max_projection_bytes"))
        p.cfg.fail(
            "param.max_projection_bytes",
            fmt::format("point {}: a {} projection of {} x {} takes {:.3g} GB, above the limit of {:.3g} GB; use "
                        "param.projection: fastfood (O(D) memory) or sparse, or raise the limit",
                        p.run_id, proj, split.theta_numel(), p.cfg.get_int("param.omega_dim"), bytes / 1e9,
                        p.cfg.get_float("param.max_projection_bytes") / 1e9));
      if (p.cfg.get_string("param.anchor") == "column" && proj != "dense-qr")
        p.cfg.fail("param.anchor",
                   fmt::format("point {}: anchor: column needs param.projection: dense-qr, not {}", p.run_id, proj));
      c.trainable = p.cfg.get_int("param.omega_dim") + split.rest_numel();
      c.comm_bytes = double(c.trainable) * elem;
    }
    costs.push_back(c);
  }
  return costs;
}

int sweep_run(const Spec& spec, const RunnerOptions& o) {
  dist::Context& ctx = *dist::Context::get();
  dist::Group group = ctx.split(o.ranks_per_run);
  const bool leader = group.comm->rank() == 0, world_root = ctx.world_rank() == 0;
  const size_t n = spec.points.size();

  // Most expensive first: the sweep's wall time stays close to total work / groups.
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::vector<PointCost> costs = sweep_costs(spec);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return costs[a].total_flops > costs[b].total_flops; });
  const double total_work =
      std::accumulate(costs.begin(), costs.end(), 0.0, [](double s, const PointCost& c) { return s + c.total_flops; });
  if (world_root)
    log::info("sweep {}: {} points over {}, {} group(s) of {} rank(s), {:.3g} FLOPs in all", spec.path, n,
              fmt::join(spec.axis_keys, ", "), group.count, group.comm->size(), total_work);

  const std::string owner = owner_id(fmt::format("group{}", group.index));
  std::set<size_t> attempted;  // points this group trained (or tried) in this invocation
  std::set<size_t> threw;      // points whose run failed here, perhaps before writing a run file
  std::map<size_t, std::chrono::steady_clock::time_point> busy_until;  // points another process trains
  int code = kExitOk;
  Timer wall;
  bool preempted = false;
  std::unique_ptr<Progress> progress;
  if (world_root && o.progress_seconds > 0)
    progress = std::make_unique<Progress>(spec, costs, o.progress_seconds, o.lease_seconds, o.force);
  for (;;) {
    // A stop signal between points: every rank of the group leaves together.
    double sig = signals::preempt_requested();
    if (group.comm->size() > 1) sig = group.comm->allreduce_scalar(sig, dist::ReduceOp::Max, "sweep preemption");
    if (sig != 0) {
      preempted = true;
      break;
    }
    // Group rank 0 picks: a point to train, "wait" (others hold the rest), or "done".
    double pick = -1;  // -1 done, -2 wait, else the point index
    std::unique_ptr<Claim> claim;
    if (leader) {
      int held = 0;
      for (size_t i : order) {
        if (pick >= 0) break;
        const Point& p = spec.points[i];
        const std::string st = file_status(p);
        if ((st == "completed" && !o.force) || st == "diverged" || attempted.count(i)) continue;
        if (auto b = busy_until.find(i); b != busy_until.end() && std::chrono::steady_clock::now() < b->second) {
          ++held;  // trained by another live process: wait for it
          continue;
        }
        claim = Claim::try_acquire(p.cfg.get_string("output.dir"), p.run_id, owner, o.lease_seconds);
        if (claim)
          pick = double(i);
        else
          ++held;
      }
      if (pick < 0 && held > 0) pick = -2;  // wait: a dead owner's claim may expire
      if (progress) progress->tick();
    }
    if (group.comm->size() > 1)
      pick = group.comm->allreduce_scalar(leader ? pick : -1e300, dist::ReduceOp::Max, "sweep pick");
    if (pick == -1) break;
    if (pick == -2) {
      std::this_thread::sleep_for(std::chrono::duration<double>(std::min(5.0, o.lease_seconds / 4)));
      continue;
    }
    const size_t i = size_t(pick);
    attempted.insert(i);
    if (progress) progress->changed();
    const Point& p = spec.points[i];
    train::RunOptions ro;
    ro.comm = group.comm;
    ro.console = leader;
    ro.force = o.force;
    ro.axes = p.axes;
    std::string axes;
    for (const auto& [k, v] : p.axes) axes += fmt::format("{}{}={}", axes.empty() ? "" : " ", k, v);
    if (leader) log::info_all("group {}: point {} of {} ({}): {}", group.index, i + 1, n, axes, p.run_id);
    Timer t;
    try {
      train::RunResult r = train::run_train(p.cfg, ro);
      if (r.status == store::RunStatus::Diverged) code = std::max(code, int(kExitDiverged));
      if (r.status == store::RunStatus::Preempted) preempted = true;
      if (leader)
        log::info_all(
            "group {}: {} {} in {}{}", group.index, p.run_id, store::status_name(r.status), duration(t.seconds()),
            r.status == store::RunStatus::Completed ? fmt::format(" ({:.4f} test acc)", r.final_eval.test_acc) : "");
    } catch (const train::RunBusyError& e) {
      // Another live process trains this point (its claim lapsed while it was stopped, and this
      // group took the claim over): not a failure; the point is looked at again later.
      if (leader)
        log::warn("group {}: point {} ({}): {}; leaving it to that process", group.index, p.run_id, axes, e.what());
      attempted.erase(i);
      busy_until[i] =
          std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                                 std::chrono::duration<double>(std::max(1.0, o.lease_seconds / 4)));
    } catch (const std::exception& e) {
      // The run file records the failure; the sweep goes on (a multi-rank group has aborted the job).
      log::error("group {}: point {} ({}) failed: {}", group.index, p.run_id, axes, e.what());
      code = kExitFailure;
      threw.insert(i);
    }
    claim.reset();  // release
    if (progress) progress->changed();
    if (preempted) break;
  }
  progress.reset();
  if (preempted) {
    if (world_root)
      log::warn("sweep {}: stopped by a signal; rerun the same command to resume (exit code {})", spec.path,
                int(kExitPreempted));
    return kExitPreempted;
  }
  if (group.comm->size() > 1) group.comm->barrier("sweep end");
  // Every point's final state, from the files (other groups and jobs included): a leader leaves the
  // loop only once no point is left that someone else still holds.
  if (leader) {
    int completed = 0, failed = 0, diverged = 0, missing = 0;
    for (const auto& p : spec.points) {
      std::string st = file_status(p);
      if (threw.count(p.index) && st != "completed" && st != "diverged") st = "failed";
      if (st == "completed") claim_clear_stale(p.cfg.get_string("output.dir"), p.run_id, o.lease_seconds);
      completed += st == "completed";
      failed += st == "failed";
      diverged += st == "diverged";
      missing += st.empty() || st == "running" || st == "preempted";
    }
    if (world_root)
      log::info("sweep {}: {} completed, {} failed, {} diverged, {} not finished, in {}", spec.path, completed, failed,
                diverged, missing, duration(wall.seconds()));
    if (failed > 0 || missing > 0)
      code = std::max(code, int(kExitFailure));
    else if (diverged > 0)
      code = std::max(code, int(kExitDiverged));
  }
  return code;
}

}  // namespace xpand::sweep
