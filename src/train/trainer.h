// One training run: data, network, optimizer and schedule from a validated config; the step loop
// (forward, backward to the narrowest cut, bucketed all-reduce across the group, backward to the
// raw tensors, clip, optimizer), evaluation on the collapsed network, divergence handling, and
// metric records handed to sinks (console, HDF5 run file under <out>/runs/<run_id>.h5).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "core/error.h"
#include "dist/comm.h"
#include "model/network.h"
#include "store/columns.h"
#include "train/metrics.h"
#include "train/network_init.h"

namespace xpand::train {

// run_train found the run locked by another live process (it is training that run now): not a
// failure of the run, and the sweep leaves the point to that process.
class RunBusyError : public Error {
 public:
  explicit RunBusyError(const std::string& what) : Error(what, kExitFailure) {}
};

struct RunOptions {
  bool write_file = true;    // false: no HDF5 output (tests)
  bool console = true;       // progress lines on stderr
  bool bar = false;          // and a progress bar while stderr is a terminal (xpand train; a sweep draws its own)
  bool force = false;        // retrain from scratch even if a run file (completed or resumable) exists
  bool resume = true;        // continue an unfinished run from its checkpoint
  bool update_index = true;  // rebuild <out>/index.h5 when the run ends (group rank 0)
  int64_t stop_after = 0;    // > 0: stop as if preempted (checkpoint, status preempted) after this step (tests)
  // Sweep axes: config keys and their YAML values, recorded as root attributes and index columns.
  std::vector<std::pair<std::string, std::string>> axes;
  // The data-parallel group training this run (an mpi communicator from dist::Context::split);
  // null = this process alone. Group rank 0 writes the run file and the console lines.
  dist::CommPtr comm;
};

struct RunResult {
  std::string run_id, path;
  store::RunStatus status =
      store::RunStatus::Running;  // completed | diverged | preempted | skipped (already completed)
  int64_t resumed_from = 0;       // the checkpoint step training continued from (0: from scratch)
  int64_t steps = 0;
  double wall_seconds = 0;
  int64_t mem_peak = 0;  // peak resident set size during training (bytes)
  EvalMetrics final_eval;
  std::vector<double> losses;  // training loss of every step (for tests and summaries)
  model::NetworkPtr network;   // the trained network (as trained, not collapsed)
  int64_t comm_bytes = 0;      // gradient bytes all-reduced per rank in the last step
  // Training-thread seconds of the steps (forward to optimizer, plus handing the step's metrics to
  // the sinks), and of the hand-over alone: the metrics path's cost as the trainer sees it.
  double step_seconds = 0, sink_seconds = 0;
};

// Run identity: "<name>-<16 hex digits of the resolved config without output.*>".
std::string run_id(const config::Config& cfg);

// Trains one configuration to completion (or divergence). Throws xpand::Error on failures.
RunResult run_train(const config::Config& cfg, const RunOptions& opts = {});

// Prints the closing summary table of finished runs to stdout.
void print_summary(const std::vector<RunResult>& results);

}  // namespace xpand::train
