// Metric sinks: console progress (rank 0) and the HDF5 run file (first schema, version 1).
#include <cmath>

#include <fmt/format.h>

#include "core/log.h"
#include "core/timer.h"
#include "store/run_file.h"
#include "train/metrics.h"

namespace xpand::train {

namespace {

std::string duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  if (s < 90) return fmt::format("{:.0f}s", s);
  if (s < 5400) return fmt::format("{:.0f}m{:02.0f}s", std::floor(s / 60), std::fmod(s, 60));
  return fmt::format("{:.0f}h{:02.0f}m", std::floor(s / 3600), std::fmod(s / 60, 60));
}

class ConsoleSink : public MetricSink {
 public:
  explicit ConsoleSink(int64_t every) : every_(every) {}
  void on_start(const RunInfo& info) override {
    info_ = info;
    log::info("run {}: {} steps ({} per epoch){}", info.run_id, info.total_steps, info.steps_per_epoch,
              info.path.empty() ? "" : ", writing " + info.path);
    timer_.reset();
  }
  void on_step(const StepMetrics& m) override {
    if (m.step % every_ != 0 && m.step != info_.total_steps) return;
    double rate = timer_.seconds() / double(m.step);
    std::string comm = info_.world_size > 1 ? fmt::format(" (comm {:.1f} ms, {:.1f} exposed, {:.3g} MB)",
                                                          1e3 * m.time_comm, 1e3 * m.time_comm_exposed,
                                                          double(m.comm_bytes) * 1e-6)
                                            : "";
    log::info("step {:>6}/{} epoch {:.2f} loss {:.4f} lr {:.3g} |g| {:.3g} {:.1f} ms/step{} ETA {}", m.step,
              info_.total_steps, m.epoch, m.loss, m.lr, m.grad_norm, 1e3 * m.time_step, comm,
              duration(rate * double(info_.total_steps - m.step)));
  }
  void on_eval(const EvalMetrics& e) override {
    if (info_.language_model)
      log::info("eval step {:>6}: train loss {:.4f} ({:.3f} bpc) | val loss {:.4f} ({:.3f} bpc) acc {:.4f}", e.step,
                e.train_loss, e.train_loss / std::log(2.0), e.test_loss, e.test_loss / std::log(2.0), e.test_acc);
    else
      log::info("eval step {:>6}: train loss {:.4f} acc {:.4f} | test loss {:.4f} acc {:.4f} | collapse err {:.1e}",
                e.step, e.train_loss, e.train_acc, e.test_loss, e.test_acc, e.collapse_error);
  }
  void on_end(const std::string& status, const std::string& error,
              const std::map<std::string, std::string>&) override {
    if (status == "completed")
      log::info("run {} completed in {}", info_.run_id, duration(timer_.seconds()));
    else
      log::warn("run {} ended with status {}: {}", info_.run_id, status, error);
  }

 private:
  int64_t every_;
  RunInfo info_;
  Timer timer_;
};

// Schema version 1 (docs/FORMAT.md): root attributes, /metrics/{train,eval}/<column>, /snapshots.
class H5Sink : public MetricSink {
 public:
  explicit H5Sink(const std::string& path) : w_(path) {}
  void on_start(const RunInfo& info) override {
    w_.set_attr("schema_version", int64_t(1));
    w_.set_attr("run_id", info.run_id);
    w_.set_attr("name", info.name);
    w_.set_attr("status", "running");
    w_.set_attr("error", "");
    w_.set_attr("config", info.config_yaml);
    w_.set_attr("total_steps", info.total_steps);
    w_.set_attr("steps_per_epoch", info.steps_per_epoch);
    for (const auto& [k, v] : info.attrs) w_.set_attr(k, v);
    w_.add_table("train",
                 {"step", "epoch", "samples", "loss", "lr", "grad_norm", "time_step", "mem_peak", "time_compute",
                  "time_comm", "time_comm_exposed", "comm_bytes"},
                 {"step", "samples", "mem_peak", "comm_bytes"});
    std::vector<std::string> eval = {"step", "train_loss", "train_acc", "test_loss", "test_acc", "collapse_error"};
    if (info.language_model) eval.insert(eval.end(), {"train_bpc", "test_bpc"});
    lm_ = info.language_model;
    w_.add_table("eval", eval);
    w_.flush();
  }
  void on_step(const StepMetrics& m) override {
    w_.append("train",
              {double(m.step), m.epoch, double(m.samples), m.loss, m.lr, m.grad_norm, m.time_step, double(m.mem_peak),
               m.time_compute, m.time_comm, m.time_comm_exposed, double(m.comm_bytes)});
  }
  void on_eval(const EvalMetrics& e) override {
    std::vector<double> row = {double(e.step), e.train_loss, e.train_acc, e.test_loss, e.test_acc, e.collapse_error};
    if (lm_) row.insert(row.end(), {e.train_loss / std::log(2.0), e.test_loss / std::log(2.0)});
    w_.append("eval", row);
    w_.flush();  // every evaluation is on disk before training goes on
  }
  void on_snapshot(int64_t step, const std::vector<Tensor>& weights) override {
    for (const auto& t : weights)
      w_.write_array(fmt::format("/snapshots/{:08d}/{}/weight", step, t.layer), t.shape, t.data.data());
  }
  void on_end(const std::string& status, const std::string& error,
              const std::map<std::string, std::string>& attrs) override {
    for (const auto& [k, v] : attrs) w_.set_attr(k, v);
    w_.set_attr("error", error);
    w_.flush();
    w_.set_attr("status", status);  // last, after everything else is on disk
    w_.flush();
  }

 private:
  store::RunWriter w_;
  bool lm_ = false;
};

}  // namespace

std::unique_ptr<MetricSink> console_sink(int64_t log_every) { return std::make_unique<ConsoleSink>(log_every); }
std::unique_ptr<MetricSink> h5_sink(const std::string& path) { return std::make_unique<H5Sink>(path); }

}  // namespace xpand::train
