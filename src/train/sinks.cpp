// Metric sinks: console progress (rank 0) and the HDF5 run file (schema version 2).
#include <fmt/format.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "config/config.h"
#include "config/operational.h"
#include "core/error.h"
#include "core/host.h"
#include "core/log.h"
#include "core/progress.h"
#include "core/timer.h"
#include "param/analysis.h"
#include "store/async_writer.h"
#include "store/index.h"
#include "store/run_file.h"
#include "train/collapse_check.h"
#include "train/metrics.h"

namespace xpand::train {

namespace {

// The /resumes table of a resumed run: the old file's rows, then one row per operational key whose
// value differs between the old file's config and this run's (config/operational.h).
struct Resumes {
  std::vector<int64_t> step;
  std::vector<std::string> key, old_value, new_value;
};

Resumes resumes_of(const store::RunReader& old, const std::string& new_yaml, int64_t step, const std::string& run_id) {
  Resumes r;
  if (old.has_object("/resumes/step")) {
    std::vector<int64_t> shape;
    for (double v : old.read_array("/resumes/step", &shape)) r.step.push_back(int64_t(v));
    r.key = old.read_strings("/resumes/key");
    r.old_value = old.read_strings("/resumes/old");
    r.new_value = old.read_strings("/resumes/new");
  }
  if (!old.has_attr("config")) return r;
  try {
    const auto before = config::Config::load_string(old.attr_string("config"), old.path() + " (config attribute)");
    const auto now = config::Config::load_string(new_yaml, "this run's config");
    for (const auto& k : config::operational_keys()) {
      if (!before.has(k) || !now.has(k) || before.value_yaml(k) == now.value_yaml(k)) continue;
      log::info("run {}: resumed with {} {} (was {}); an operational key, not part of the run id", run_id, k,
                now.value_yaml(k), before.value_yaml(k));
      r.step.push_back(step);
      r.key.push_back(k);
      r.old_value.push_back(before.value_yaml(k));
      r.new_value.push_back(now.value_yaml(k));
    }
  } catch (const Error& e) {  // an old file whose config this version cannot read: nothing to compare
    log::warn("run {}: cannot compare with the resumed file's config ({})", run_id, e.what());
  }
  return r;
}

class ConsoleSink : public MetricSink {
 public:
  ConsoleSink(int64_t every, bool bar) : every_(every), bar_(bar && log::stderr_is_tty()) {}
  void on_start(const RunInfo& info) override {
    info_ = info;
    log::info("run {}: {} steps ({} per epoch){}", info.run_id, info.total_steps, info.steps_per_epoch,
              info.path.empty() ? "" : ", writing " + info.path);
    timer_.reset();
  }
  void on_step(const StepMetrics& m) override {
    // The rate counts the steps this process took (a resumed run starts at its checkpoint's step).
    if (first_step_ < 0) first_step_ = m.step - 1;
    const double t = timer_.seconds(), rate = t / double(std::max<int64_t>(1, m.step - first_step_));
    const std::string eta = duration(rate * double(info_.total_steps - m.step));
    if (bar_ && (t - last_bar_ >= 0.2 || m.step == info_.total_steps)) {
      last_bar_ = t;
      log::status(fmt::format("train {} {}/{} loss {:.4f}, {} elapsed, ETA {}",
                              progress_bar(double(m.step) / double(std::max<int64_t>(1, info_.total_steps))), m.step,
                              info_.total_steps, m.loss, duration(t), eta));
    }
    // Every log_every steps, the first and the last, and at least every 30 s.
    const bool due =
        m.step % every_ == 0 || m.step == info_.total_steps || m.step == first_step_ + 1 || t - last_line_ >= 30;
    if (!due) return;
    last_line_ = t;
    std::string comm = info_.world_size > 1
                           ? fmt::format(" (comm {:.1f} ms, {:.1f} exposed, {:.3g} MB)", 1e3 * m.time_comm,
                                         1e3 * m.time_comm_exposed, double(m.comm_bytes) * 1e-6)
                           : "";
    log::info("step {:>6}/{} epoch {:.2f} loss {:.4f} lr {:.3g} |g| {:.3g} {:.1f} ms/step{} ETA {}", m.step,
              info_.total_steps, m.epoch, m.loss, m.lr, m.grad_norm, 1e3 * m.time_step, comm, eta);
  }
  void on_eval(const EvalMetrics& e) override {
    if (info_.language_model)
      log::info("eval step {:>6}: train loss {:.4f} ({:.3f} bpc) | val loss {:.4f} ({:.3f} bpc) acc {:.4f}", e.step,
                e.train_loss, e.train_loss / std::log(2.0), e.test_loss, e.test_loss / std::log(2.0), e.test_acc);
    else
      log::info("eval step {:>6}: train loss {:.4f} acc {:.4f} | test loss {:.4f} acc {:.4f}{} | collapse err {:.1e}",
                e.step, e.train_loss, e.train_acc, e.test_loss, e.test_acc,
                info_.focus ? fmt::format(" (focus {:.4f}, rest {:.4f})", e.test_focus_acc, e.test_rest_acc) : "",
                e.collapse_error);
  }
  void on_end(const RunEnd& end) override {
    if (bar_) log::status_end();
    if (end.status == store::RunStatus::Completed)
      log::info("run {} completed in {}", info_.run_id, duration(timer_.seconds()));
    else
      log::warn("run {} ended with status {}: {}", info_.run_id, store::status_name(end.status), end.error);
  }

 private:
  int64_t every_;
  bool bar_;
  RunInfo info_;
  Timer timer_;
  int64_t first_step_ = -1;
  double last_line_ = 0, last_bar_ = -1;
};

// Schema version 2 (docs/FORMAT.md): root attributes, /metrics/{train,eval}/<column>, /snapshots,
// /checkpoint (external link). The file is set up on the calling thread (attributes, tables, and on
// resume the kept history), switched to SWMR, then written by a background thread.
constexpr int64_t kSchemaVersion = store::kRunSchemaVersion;

std::vector<std::string> names_of(const std::vector<store::Column>& cols, bool integer_only = false) {
  std::vector<std::string> out;
  for (const auto& c : cols)
    if (!integer_only || c.integer) out.push_back(c.name);
  return out;
}

// A metric table from its column definitions, each dataset carrying its units and description.
void add_table(store::RunWriter& w, const std::string& table, const std::vector<store::Column>& cols) {
  w.add_table(table, names_of(cols), names_of(cols, true));
  for (const auto& c : cols) {
    const std::string d = "/metrics/" + table + "/" + c.name;
    w.set_attr_at(d, "units", c.units);
    w.set_attr_at(d, "description", c.description);
    if (c.name == store::col::kCollapseError) w.set_attr_at(d, "compares", kCollapseCompares);
  }
}

// One 1-D dataset per field of `rows` under `group`: strings as UTF-8, numbers in the type the
// field has (int64 or float64).
template <class Row>
struct Columns {
  store::RunWriter& w;
  std::string group;
  const std::vector<Row>& rows;
  template <class F>
  void strings(const char* name, F get) {
    std::vector<std::string> v;
    for (const auto& r : rows) v.push_back(get(r));
    w.write_strings(group + "/" + name, v);
  }
  template <class F>
  void numbers(const char* name, F get) {
    std::vector<decltype(get(rows.front()))> v;
    for (const auto& r : rows) v.push_back(get(r));
    w.write_array(group + "/" + name, {int64_t(rows.size())}, v.data());
  }
};

// /layers/<column>: one row per layer, in forward order (docs/FORMAT.md).
void write_layers(store::RunWriter& w, const RunInfo& info) {
  if (info.layers.empty()) return;
  using L = RunInfo::Layer;
  Columns<L> c{w, "/layers", info.layers};
  c.strings("name", [](const L& l) { return l.name; });
  c.strings("kind", [](const L& l) { return l.kind; });
  c.strings("shape", [](const L& l) { return l.shape; });
  c.strings("order", [](const L& l) { return l.order; });
  c.numbers("factor", [](const L& l) { return l.factor; });
  c.numbers("depth", [](const L& l) { return l.depth; });
  c.numbers("rank", [](const L& l) { return l.rank; });
  c.numbers("inner", [](const L& l) { return l.inner; });
  c.numbers("collapsed", [](const L& l) { return l.collapsed; });
  c.numbers("trainable", [](const L& l) { return l.trainable; });
  c.numbers("cut", [](const L& l) { return l.cut; });
  c.numbers("flops_per_sample", [](const L& l) { return l.flops_per_sample; });
  w.set_attr_at("/layers", "other_params", info.other_params);
}

// /cut/<column>: the data-parallel cut per layer, as chosen (docs/FORMAT.md); measured columns at the end.
void write_cut(store::RunWriter& w, const RunInfo& info) {
  if (info.cut_layers.empty()) return;
  using C = RunInfo::CutLayer;
  Columns<C> c{w, "/cut", info.cut_layers};
  c.strings("layer", [](const C& l) { return l.name; });
  c.strings("choice", [](const C& l) { return l.choice; });
  c.strings("compute_source", [](const C& l) { return l.compute_source; });
  c.numbers("raw_bytes", [](const C& l) { return l.raw_bytes; });
  c.numbers("cut_bytes", [](const C& l) { return l.cut_bytes; });
  c.numbers("bytes", [](const C& l) { return l.bytes; });
  c.numbers("predicted_raw_s", [](const C& l) { return l.raw_cost_s; });
  c.numbers("predicted_cut_s", [](const C& l) { return l.cut_cost_s; });
  c.numbers("predicted_comm_s", [](const C& l) { return l.comm_s; });
  c.numbers("predicted_compute_s", [](const C& l) { return l.compute_s; });
  w.set_attr_at("/cut", "mode", info.cut_mode);
  w.set_attr_at("/cut", "link_source", info.link_source);
  w.set_attr_at("/cut", "link_latency_s", info.link_latency_s);
  w.set_attr_at("/cut", "link_bytes_per_s", info.link_bytes_per_s);
  w.set_attr_at("/cut", "link_overlap", info.link_overlap);
}

void write_cut_measured(store::RunWriter& w, const CutMeasured& m) {
  if (m.bytes.empty()) return;
  const int64_t n = int64_t(m.bytes.size());
  w.write_array("/cut/measured_bytes", {n}, m.bytes.data());
  w.write_array("/cut/measured_comm_s", {n}, m.comm_s.data());
  w.write_array("/cut/measured_exposed_s", {n}, m.exposed_s.data());
  w.write_array("/cut/measured_cut_s", {n}, m.cut_s.data());
  w.set_attr_at("/cut", "measured_steps", m.steps);
}

// An axis value as the attribute type it reads as in YAML: int64, float64 or string.
void set_typed_attr(store::RunWriter& w, const std::string& name, const std::string& text) {
  char* end = nullptr;
  errno = 0;
  long long i = std::strtoll(text.c_str(), &end, 10);
  if (!text.empty() && *end == '\0' && errno == 0) return w.set_attr(name, int64_t(i));
  double d = std::strtod(text.c_str(), &end);
  if (!text.empty() && *end == '\0') return w.set_attr(name, d);
  w.set_attr(name, text);
}

// Rows of a table of `from` whose step is at most `last_step`, appended to w's table.
void copy_rows(const store::RunReader& from, store::RunWriter& w, const std::string& table,
               const std::vector<std::string>& columns, int64_t last_step) {
  if (!from.has_object("/metrics/" + table + "/step")) return;
  std::vector<std::vector<double>> cols;
  for (const auto& c : columns)
    cols.push_back(from.has_object("/metrics/" + table + "/" + c) ? from.column(table, c) : std::vector<double>{});
  const auto& steps = cols[0];
  for (size_t r = 0; r < steps.size() && steps[r] <= double(last_step); ++r) {
    std::vector<double> row;
    for (const auto& c : cols) row.push_back(r < c.size() ? c[r] : NAN);
    w.append(table, row);
  }
}

// A resumed run copies the kept part of its old file into a new one before it renames it over the
// old: that needs about the old file's size free on the disk. HDF5 does not fail cleanly when a
// write runs out of space in the middle of an object copy, so the space is checked first.
void check_space_for_copy(const std::string& old_file) {
  struct stat st {};
  if (::stat(old_file.c_str(), &st) != 0) return;
  const std::string dir = std::filesystem::path(old_file).parent_path().string();
  struct statvfs fs {};
  if (::statvfs(dir.empty() ? "." : dir.c_str(), &fs) != 0) return;
  const double free_bytes = double(fs.f_bavail) * double(fs.f_frsize);
  const double need = double(st.st_size) * 1.25 + double(4 << 20);  // the copy, HDF5's metadata, a margin
  if (free_bytes < need)
    throw Error(
        fmt::format("resuming {} needs about {:.1f} MiB free in {} to rebuild its run file, but only {:.1f} "
                    "MiB are free: free some space and run again (the old run file and its checkpoint are "
                    "untouched)",
                    old_file, need / 1048576.0, dir, free_bytes / 1048576.0));
}

class H5Sink : public MetricSink {
 public:
  H5Sink(const std::string& path, const H5SinkOptions& o) : path_(path), opts_(o) {}

  void on_start(const RunInfo& info) override {
    lm_ = info.language_model;
    focus_ = info.focus;
    dtype_ = info.dtype == "float64" ? torch::kFloat64 : torch::kFloat32;
    const bool resume = !info.resume_from.empty();
    // A resumed run is rebuilt under a temporary name and renamed over the old file once it holds
    // the kept history: a kill in between leaves the old file (and its checkpoint) untouched.
    // A fresh run too: the file appears under its name only once it is in SWMR mode, so a kill at
    // any moment leaves either no run file or one that opens.
    const std::string write_path = path_ + ".part";
    if (resume) check_space_for_copy(info.resume_from);
    store::WriterOptions wo;
    wo.compression = opts_.compression;
    wo.checksum = true;  // snapshots: a flipped bit fails the read (collapse, init_from) instead of passing
    // Nothing half-made stays behind when setting up fails (a full disk, a damaged old file).
    struct RemovePart {
      std::string path;
      bool armed = true;
      ~RemovePart() {
        if (armed) ::unlink(path.c_str());
      }
    } remove_part{write_path};
    auto w = std::make_unique<store::RunWriter>(write_path, wo);
    w->set_attr("schema_version", kSchemaVersion);
    w->set_attr("run_id", info.run_id);
    w->set_attr("name", info.name);
    w->set_attr("status", "running");
    w->set_attr("error", "");
    w->set_attr("config", info.config_yaml);
    w->set_attr("total_steps", info.total_steps);
    w->set_attr("steps_per_epoch", info.steps_per_epoch);
    w->set_attr("steps", int64_t(0));
    w->set_attr("end_time", "");
    w->set_attr("wall_seconds", std::nan(""));  // measured at the end
    for (const auto& [k, v] : info.attrs) w->set_attr(k, v);
    for (const auto& [k, v] : info.int_attrs) w->set_attr(k, v);
    for (const auto& [k, v] : info.list_attrs) w->set_attr_at("/", k, v);
    for (const auto& [k, v] : info.float_attrs) w->set_attr(k, v);
    for (const auto& [k, v] : info.ints_attrs) w->set_attr_at("/", k, v);
    std::vector<std::string> axis_names;
    for (const auto& [k, v] : info.axes) {
      axis_names.push_back(k);
      set_typed_attr(*w, k, v);
    }
    w->set_attr_at("/", "axes", axis_names);
    w->set_attr("resumed_from_step", info.resume_step);
    write_layers(*w, info);
    write_cut(*w, info);
    cut_ = !info.cut_layers.empty();
    add_table(*w, "train", store::train_columns());
    add_table(*w, "eval", store::eval_columns(lm_, focus_));
    const auto train = names_of(store::train_columns()), eval = names_of(store::eval_columns(lm_, focus_));
    int64_t resumes = 0;
    if (resume) {
      std::vector<std::string> snapshots;
      {
        store::RunReader old(info.resume_from);
        const Resumes table = resumes_of(old, info.config_yaml, info.resume_step, info.run_id);
        if (!table.step.empty()) {
          w->write_array("/resumes/step", {int64_t(table.step.size())}, table.step.data());
          w->write_strings("/resumes/key", table.key);
          w->write_strings("/resumes/old", table.old_value);
          w->write_strings("/resumes/new", table.new_value);
        }
        if (old.has_attr("start_time")) w->set_attr("start_time", old.attr_string("start_time"));
        resumes = old.has_attr("resumes") ? int64_t(old.attr_double("resumes")) + 1 : 1;
        copy_rows(old, *w, "train", train, info.resume_step);
        copy_rows(old, *w, "eval", eval, info.resume_step);
        if (old.has_object("/snapshots"))
          for (const auto& name : old.children("/snapshots"))
            if (std::atoll(name.c_str()) <= info.resume_step) snapshots.push_back(name);
      }  // closed before copy_from opens the file again
      for (const auto& name : snapshots) w->copy_from(info.resume_from, "/snapshots/" + name);
      w->reopen();  // see RunWriter::reopen: without it a later flush can fail after the copies
    }
    w->set_attr("resumes", resumes);
    if (!info.checkpoint_file.empty()) w->link_external("/checkpoint", info.checkpoint_file, "/");
    w->create_group("/snapshots");
    if (opts_.swmr) w->start_swmr();
    w->flush();
    store::commit_file(write_path, path_);
    remove_part.armed = false;
    w->set_path(path_);  // messages name the file by its final name from now on
    writer_ = std::make_unique<store::AsyncRunWriter>(std::move(w), opts_.queue_bytes, opts_.flush_seconds);
  }

  void on_step(const StepMetrics& m) override {
    // In the order of store::train_columns().
    std::vector<double> row = {double(m.step), m.epoch,     double(m.samples),   m.loss,
                               m.lr,           m.grad_norm, m.time_step,         double(m.mem_peak),
                               m.time_compute, m.time_comm, m.time_comm_exposed, double(m.comm_bytes)};
    writer_->post([row = std::move(row)](store::RunWriter& w) { w.append("train", row); }, 128);
  }

  void on_eval(const EvalMetrics& e) override {
    // In the order of store::eval_columns().
    std::vector<double> row = {double(e.step), e.train_loss, e.train_acc, e.test_loss, e.test_acc, e.collapse_error};
    if (lm_) row.insert(row.end(), {e.train_loss / std::log(2.0), e.test_loss / std::log(2.0)});
    if (focus_) row.insert(row.end(), {e.test_focus_acc, e.test_rest_acc});
    writer_->post([row = std::move(row)](store::RunWriter& w) { w.append("eval", row); }, 128);
    writer_->flush_async();  // every evaluation reaches the disk (and live readers) promptly
  }

  void on_snapshot(int64_t step, const std::vector<Tensor>& weights) override {
    size_t bytes = 0;
    for (const auto& t : weights) {
      bytes += t.data.size() * sizeof(double);
      for (const auto& f : t.factors) bytes += f.data.size() * sizeof(double);
    }
    auto snap = std::make_shared<std::vector<Tensor>>(weights);
    const auto dtype = dtype_;
    writer_->post(
        [step, snap, dtype](store::RunWriter& w) {
          const std::string group = fmt::format("/snapshots/{:08d}", step);
          int64_t layers = 0;
          // First the norms, embeddings and statistics outside the layers, under their module names:
          // a reader judges a snapshot without its `layers` attribute by its layers, which come after.
          for (const auto& t : *snap)
            if (t.network) w.write_array(group + "/network/" + t.layer, t.shape, t.data.data());
          for (const auto& t : *snap) {
            if (t.network) continue;
            ++layers;
            const std::string g = group + "/" + t.layer;
            if (t.shape.empty()) {  // a layer that is not one linear map (nonlinear expansion): factors only
              for (size_t i = 0; i < t.factors.size(); ++i)
                w.write_array(fmt::format("{}/factors/{}", g, i), t.factors[i].shape, t.factors[i].data.data());
              if (!t.bias.shape.empty()) w.write_array(g + "/bias", t.bias.shape, t.bias.data.data());
              w.set_attr_at(g, "nonlinear", int64_t(1));
              continue;
            }
            w.write_array(g + "/weight", t.shape, t.data.data());
            if (!t.bias.shape.empty()) w.write_array(g + "/bias", t.bias.shape, t.bias.data.data());
            for (size_t i = 0; i < t.factors.size(); ++i)
              w.write_array(fmt::format("{}/factors/{}", g, i), t.factors[i].shape, t.factors[i].data.data());
            // The spectrum is computed here, off the training thread, at the precision the run trained in.
            try {
              auto wt = torch::from_blob(const_cast<double*>(t.data.data()), t.shape, torch::kFloat64).to(dtype);
              auto sp = param::spectrum(wt);
              auto sv = sp.singular_values.contiguous();
              w.write_array(g + "/singular_values", {sv.numel()}, sv.data_ptr<double>());
              w.set_attr_at(g, "numerical_rank", sp.numerical_rank);
              w.set_attr_at(g, "effective_rank", sp.effective_rank);
              w.set_attr_at(g, "stable_rank", sp.stable_rank);
            } catch (const Error& e) {  // e.g. a non-finite weight of a diverging run
              w.set_attr_at(g, "spectrum_error", std::string(e.what()));
            }
          }
          // Last: the snapshot is complete (a reader of a live or killed run tells it from a half-written one).
          if (layers > 0) {
            w.set_attr_at(group, "step", step);
            w.set_attr_at(group, "layers", layers);
          }
        },
        bytes);
  }

  void on_checkpoint(int64_t) override { writer_->sync(); }

  void on_end(const RunEnd& end) override {
    if (!writer_) return;
    writer_->post(
        [end, cut = cut_](store::RunWriter& w) {
          if (cut) write_cut_measured(w, end.cut);
          w.set_attr("end_time", end.end_time);
          w.set_attr("steps", end.steps);
          if (end.status != store::RunStatus::Failed) w.set_attr("wall_seconds", end.wall_seconds);
          w.set_attr("error", end.error);
          w.flush();
          w.set_attr("status", std::string(store::status_name(end.status)));  // last, after everything else is on disk
          w.flush();
        },
        0, true);
    writer_->close();
  }

 private:
  std::string path_;
  H5SinkOptions opts_;
  std::unique_ptr<store::AsyncRunWriter> writer_;
  torch::ScalarType dtype_ = torch::kFloat32;
  bool lm_ = false, focus_ = false, cut_ = false;
};

}  // namespace

std::unique_ptr<MetricSink> console_sink(int64_t log_every, bool bar) {
  return std::make_unique<ConsoleSink>(log_every, bar);
}
std::unique_ptr<MetricSink> h5_sink(const std::string& path, const H5SinkOptions& options) {
  return std::make_unique<H5Sink>(path, options);
}

}  // namespace xpand::train
