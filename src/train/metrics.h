// Metric records the trainer emits and the sinks that consume them (console, HDF5 run file).
// Measuring and reporting are separate: the trainer fills these structs and never formats output.
#pragma once
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "store/columns.h"

namespace xpand::train {

struct StepMetrics {
  int64_t step = 0;     // 1-based count of optimizer steps taken
  double epoch = 0;     // fractional epochs completed
  int64_t samples = 0;  // training samples seen (global)
  double loss = 0, lr = 0, grad_norm = 0;
  double time_step = 0;  // seconds for this step (data, forward, backward, optimizer)
  int64_t mem_peak = 0;  // peak resident set size of the process since training started (bytes)
  // Data-parallel communication of this step (zero on one rank): seconds the all-reduces were in
  // flight, seconds the step waited for them (not hidden behind backward), the rest of the step, and
  // gradient bytes all-reduced per rank.
  double time_comm = 0, time_comm_exposed = 0, time_compute = 0;
  int64_t comm_bytes = 0;
};

struct EvalMetrics {
  int64_t step = 0;
  double train_loss = 0, train_acc = 0, test_loss = 0, test_acc = 0;
  double collapse_error = 0;  // max |f_collapsed - f| / max |f| on an evaluation batch
  // data.focus_classes: test accuracy on the focus classes and on the others (NaN when unset)
  double test_focus_acc = std::nan(""), test_rest_acc = std::nan("");
};

// What the data-parallel cut did, per layer (the run file's /cut, docs/FORMAT.md): means per step
// over the steps this process trained.
struct CutMeasured {
  int64_t steps = 0;
  std::vector<double> bytes, comm_s, exposed_s, cut_s;  // per layer, in /cut/layer order
};

// How a run ended (the run file's closing attributes).
struct RunEnd {
  store::RunStatus status = store::RunStatus::Completed;  // completed | diverged | preempted | failed
  std::string error;                                      // why, when not completed
  std::string end_time;                                   // ISO 8601 UTC
  int64_t steps = 0;                                      // optimizer steps taken
  double wall_seconds = std::nan("");                     // set-up to end (NaN when the run failed)
  CutMeasured cut;                                        // empty on one rank
};

// What a run is, for provenance and headers.
struct RunInfo {
  std::string run_id, path, config_yaml, name;
  int64_t total_steps = 0, steps_per_epoch = 0, world_size = 1;
  bool language_model = false;
  bool focus = false;                        // data.focus_classes set: eval rows carry test_focus_acc, test_rest_acc
  std::string dtype = "float32";             // training dtype (snapshot rank tolerances)
  std::map<std::string, std::string> attrs;  // provenance: versions, host, dataset, times, ...
  std::map<std::string, int64_t> int_attrs;  // ranks_per_run, seed, ...
  std::map<std::string, std::vector<std::string>> list_attrs;  // per rank: hostnames, devices
  std::map<std::string, double> float_attrs;                   // input_mean, input_std, ...
  std::map<std::string, std::vector<int64_t>> ints_attrs;      // input_shape, vocab
  std::vector<std::pair<std::string, std::string>> axes;       // sweep axes: config key, YAML value
  // The network's layers as xpand builds them (the run file's /layers table, docs/FORMAT.md).
  struct Layer {
    std::string name, kind, shape, order;
    double factor = std::nan("");            // expanded: the expansion factor
    int64_t depth = 1, rank = 0, inner = 0;  // expanded: factors, first inner width; lowrank/lora: rank
    int64_t collapsed = 0, trainable = 0, cut = 0;
    double flops_per_sample = 0;
  };
  std::vector<Layer> layers;
  int64_t other_params = 0;  // parameters outside the layers (norms, embeddings), biases excluded
  // The data-parallel cut chosen per layer (ranks > 1; the run file's /cut, docs/FORMAT.md).
  struct CutLayer {
    std::string name, choice, compute_source;  // choice: weight | raw | none
    int64_t raw_bytes = 0, cut_bytes = 0, bytes = 0;
    double raw_cost_s = std::nan(""), cut_cost_s = std::nan(""), comm_s = std::nan(""), compute_s = std::nan("");
  };
  std::vector<CutLayer> cut_layers;
  std::string cut_mode, link_source;
  double link_latency_s = std::nan(""), link_bytes_per_s = std::nan(""), link_overlap = std::nan("");
  // Resuming: the previous run file whose metrics and snapshots up to resume_step are kept.
  std::string resume_from;
  int64_t resume_step = 0;
  std::string checkpoint_file;  // the checkpoint file relative to the run file's directory (/checkpoint links it)
};

class MetricSink {
 public:
  virtual ~MetricSink() = default;
  virtual void on_start(const RunInfo& info) {}
  virtual void on_step(const StepMetrics& m) {}
  virtual void on_eval(const EvalMetrics& m) {}
  // A snapshot of the collapsed weights: (layer name, shape, row-major float64 data), and the
  // layer's raw tensors when output.snapshot_factors is set. Entries with `network` set are the
  // network's tensors outside its layers (norms, embeddings, batch-norm statistics), under their
  // module names: /snapshots/<step>/network/<name>.
  struct Array {
    std::vector<int64_t> shape;
    std::vector<double> data;
  };
  struct Tensor {
    std::string layer;
    std::vector<int64_t> shape;
    std::vector<double> data;
    std::vector<Array> factors;
    Array bias;  // the layer's own bias (empty shape: none)
    bool network = false;
  };
  virtual void on_snapshot(int64_t step, const std::vector<Tensor>& weights) {}
  // Before a checkpoint: everything emitted so far must be on disk when this returns.
  virtual void on_checkpoint(int64_t step) {}
  virtual void on_end(const RunEnd& end) {}
};

// Progress lines every `log_every` steps, on the first step and at least every 30 s; with `bar`, a
// progress bar with the ETA below them while stderr is a terminal.
std::unique_ptr<MetricSink> console_sink(int64_t log_every, bool bar = false);
struct H5SinkOptions {
  int compression = 0;              // deflate level of snapshot arrays
  bool swmr = true;                 // SWMR writing (live readers, crash safety)
  double flush_seconds = 10;        // metrics reach the disk at least this often
  size_t queue_bytes = 256u << 20;  // bound of the writer thread's queue
};
// The HDF5 run file (docs/FORMAT.md), written by a background thread.
std::unique_ptr<MetricSink> h5_sink(const std::string& path, const H5SinkOptions& options = {});

}  // namespace xpand::train
