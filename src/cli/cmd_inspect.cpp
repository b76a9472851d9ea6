// `xpand inspect PATH [--run ID] [--tail N] [--csv | --json]`: what an output directory or a run file
// holds, readable while runs are training (run files open in SWMR-read mode).
//   directory or index.h5: one row per run — status, axis values, progress, final metrics
//   run file (or DIR --run ID): provenance, config, ranks, the tail of the metrics, snapshots
// Malformed files (truncated, foreign, newer schema) give a message naming the file and exit 1.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iostream>

#include "cli/commands.h"
#include "cli/watchdog.h"
#include "core/error.h"
#include "core/utf8.h"
#include "store/columns.h"
#include "store/index.h"
#include "store/run_file.h"

namespace xpand::cli {

namespace {

namespace fs = std::filesystem;

// Seconds one file may take to read before it is declared damaged (cli/watchdog.h).
constexpr unsigned kReadSeconds = 20;

std::string num(double v, const char* f = "{:.4f}") { return std::isfinite(v) ? fmt::format(f, v) : "-"; }

// Text from files is valid UTF-8 already (store::RunReader sanitises it); a terminal table also shows
// control characters as \xNN.
std::string text(const std::string& s) { return utf8::printable(s); }

std::string csv_cell(const std::string& raw) {
  const std::string s = utf8::sanitize(raw);
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

std::string json_num(double v) { return std::isfinite(v) ? fmt::format("{}", v) : "null"; }

std::string progress(const store::RunSummary& s) {
  if (s.total_steps <= 0) return std::to_string(s.steps);
  return fmt::format("{}/{} ({:.0f}%)", s.steps, s.total_steps, 100.0 * double(s.steps) / double(s.total_steps));
}

// --- a collapsed model (xpand collapse) ------------------------------------------------------------

int print_model(const store::RunReader& r, bool json) {
  auto attr = [&](const char* n) { return r.has_attr(n) ? r.attr_string(n) : std::string(); };
  const int64_t step = r.has_attr("step") ? r.attr_int("step") : -1;
  struct Layer {
    std::string name, shape;
    int64_t n = 0;
  };
  std::vector<Layer> layers;
  int64_t total = 0;
  for (const auto& name : r.children("/")) {
    if (!r.has_object("/" + name + "/weight")) continue;
    std::vector<int64_t> dims = r.extent("/" + name + "/weight");
    int64_t n = 1;
    for (int64_t d : dims) n *= d;
    layers.push_back({name, fmt::format("{}", fmt::join(dims, "x")), n});
    total += n;
  }
  if (json) {
    fmt::print(
        "{{\"kind\": \"xpand collapsed model\", \"path\": {}, \"run_id\": {}, \"step\": {}, \"source\": {}, "
        "\"weights\": {}, \"layers\": [",
        json_string(r.path()), json_string(attr("run_id")), step, json_string(attr("source")), total);
    for (size_t i = 0; i < layers.size(); ++i)
      fmt::print("{}{{\"name\": {}, \"shape\": {}}}", i ? ", " : "", json_string(layers[i].name),
                 json_string(layers[i].shape));
    fmt::print("]}}\n");
    return kExitOk;
  }
  fmt::print("# {}: xpand collapsed model of run {} at step {} ({}); {} weights\n", text(r.path()),
             text(attr("run_id")), step, text(attr("source")), total);
  fmt::print("{:<24} {:>14} {:>10}\n", "layer", "shape", "weights");
  for (const auto& l : layers) fmt::print("{:<24} {:>14} {:>10}\n", text(l.name), l.shape, l.n);
  return kExitOk;
}

// --- the table of runs --------------------------------------------------------------------------

int print_runs(const std::vector<std::string>& files, const std::string& where, bool csv, bool json) {
  std::vector<store::RunSummary> runs;
  std::vector<std::string> bad;
  for (const auto& f : files) {
    try {
      ReadWatchdog wd(f, kReadSeconds);
      runs.push_back(store::summary_read(f));
    } catch (const std::exception& e) {
      bad.push_back(e.what());
    }
  }
  std::vector<std::string> axes;
  for (const auto& s : runs)
    for (const auto& a : s.axes)
      if (std::find(axes.begin(), axes.end(), a.first) == axes.end()) axes.push_back(a.first);
  auto axis = [](const store::RunSummary& s, const std::string& a) {
    for (const auto& p : s.axes)
      if (p.first == a) return p.second;
    return std::string();
  };
  if (json) {
    fmt::print("{{\"source\": {}, \"axes\": [", json_string(where));
    for (size_t i = 0; i < axes.size(); ++i) fmt::print("{}{}", i ? ", " : "", json_string(axes[i]));
    fmt::print("], \"runs\": [\n");
    for (size_t i = 0; i < runs.size(); ++i) {
      const auto& s = runs[i];
      std::string ax;
      for (const auto& a : axes)
        ax += fmt::format("{}{}: {}", ax.empty() ? "" : ", ", json_string(a), json_string(axis(s, a)));
      fmt::print(
          "  {{\"run_id\": {}, \"status\": {}, \"live\": {}, \"axes\": {{{}}}, \"steps\": {}, \"total_steps\": {}, "
          "\"train_loss\": {}, \"train_acc\": {}, \"test_loss\": {}, \"test_acc\": {}, \"wall_seconds\": {}, "
          "\"error\": {}, \"path\": {}}}{}\n",
          json_string(s.run_id), json_string(s.status), s.live ? "true" : "false", ax, s.steps, s.total_steps,
          json_num(s.train_loss), json_num(s.train_acc), json_num(s.test_loss), json_num(s.test_acc),
          json_num(s.wall_seconds), json_string(s.error), json_string(s.path), i + 1 < runs.size() ? "," : "");
    }
    fmt::print("], \"unreadable\": [");
    for (size_t i = 0; i < bad.size(); ++i) fmt::print("{}{}", i ? ", " : "", json_string(bad[i]));
    fmt::print("]}}\n");
  } else if (csv) {
    std::vector<std::string> head = {"run_id", "status"};
    for (const auto& a : axes) head.push_back(csv_cell(a));
    for (const char* c : {"steps", "total_steps", store::col::kTrainLoss, store::col::kTrainAcc, store::col::kTestLoss,
                          store::col::kTestAcc, "wall_seconds", "error"})
      head.push_back(c);
    fmt::print("{}\n", fmt::join(head, ","));
    for (const auto& s : runs) {
      std::vector<std::string> row = {csv_cell(s.run_id), csv_cell(s.status)};
      for (const auto& a : axes) row.push_back(csv_cell(axis(s, a)));
      for (double v : {double(s.steps), double(s.total_steps)}) row.push_back(fmt::format("{}", v));
      for (double v : {s.train_loss, s.train_acc, s.test_loss, s.test_acc, s.wall_seconds})
        row.push_back(std::isfinite(v) ? fmt::format("{}", v) : "");
      row.push_back(csv_cell(s.error));
      fmt::print("{}\n", fmt::join(row, ","));
    }
  } else {
    size_t idw = 6;
    for (const auto& s : runs) idw = std::max(idw, text(s.run_id).size());
    std::vector<size_t> aw;
    for (const auto& a : axes) {
      size_t w = a.size();
      for (const auto& s : runs) w = std::max(w, text(axis(s, a)).size());
      aw.push_back(w);
    }
    std::string head = fmt::format("{:<{}}  {:<10}", "run_id", idw, "status");
    for (size_t i = 0; i < axes.size(); ++i) head += fmt::format("  {:>{}}", text(axes[i]), aw[i]);
    head += fmt::format("  {:>20}  {:>10} {:>9} {:>10} {:>9} {:>8}", "progress", store::col::kTrainLoss,
                        store::col::kTrainAcc, store::col::kTestLoss, store::col::kTestAcc, "time_s");
    fmt::print("# {}: {} run(s)\n{}\n", text(where), runs.size(), head);
    int done = 0, running = 0;
    for (const auto& s : runs) {
      std::string line = fmt::format("{:<{}}  {:<10}", text(s.run_id), idw, text(s.status));
      for (size_t i = 0; i < axes.size(); ++i) line += fmt::format("  {:>{}}", text(axis(s, axes[i])), aw[i]);
      line += fmt::format("  {:>20}  {:>10} {:>9} {:>10} {:>9} {:>8}", progress(s), num(s.train_loss), num(s.train_acc),
                          num(s.test_loss), num(s.test_acc), num(s.wall_seconds, "{:.1f}"));
      fmt::print("{}\n", line);
      done += s.status == "completed";
      running += s.status == "running";
    }
    fmt::print("# {} completed, {} running or interrupted, {} other\n", done, running,
               runs.size() - size_t(done) - size_t(running));
    for (const auto& s : runs)
      if (!s.error.empty()) fmt::print("# {}: {}\n", text(s.run_id), text(s.error));
  }
  for (const auto& b : bad) std::cerr << "xpand: unreadable run file: " << text(b) << "\n";
  return bad.empty() ? kExitOk : kExitFailure;
}

// --- one run file --------------------------------------------------------------------------------

struct Table {
  std::vector<std::string> columns;
  std::vector<std::vector<double>> data;  // per column
  size_t rows() const { return data.empty() ? 0 : data[0].size(); }
};

Table read_table(const store::RunReader& r, const std::string& name) {
  Table t;
  if (!r.has_object("/metrics/" + name)) return t;
  t.columns = r.columns(name);
  // "step" first, the rest as stored.
  auto it = std::find(t.columns.begin(), t.columns.end(), "step");
  if (it != t.columns.end()) std::rotate(t.columns.begin(), it, it + 1);
  size_t n = SIZE_MAX;
  for (const auto& c : t.columns) {
    t.data.push_back(r.column(name, c));
    n = std::min(n, t.data.back().size());
  }
  for (auto& d : t.data) d.resize(n == SIZE_MAX ? 0 : n);  // a live file may be mid-extension
  return t;
}

std::string cell(double v) {
  if (!std::isfinite(v)) return fmt::format("{}", v);
  if (v == std::floor(v) && std::fabs(v) < 1e15) return fmt::format("{}", int64_t(v));
  return fmt::format("{:.6g}", v);
}

void print_table_text(const std::string& title, const Table& t, size_t tail) {
  const size_t n = t.rows(), first = n > tail ? n - tail : 0;
  fmt::print("\n## {} ({} rows{})\n", title, n, first > 0 ? fmt::format(", last {}", tail) : "");
  if (t.columns.empty()) return;
  std::string head;
  for (const auto& c : t.columns) head += fmt::format("{:>{}} ", text(c), std::max<size_t>(10, c.size()));
  fmt::print("{}\n", head);
  for (size_t r = first; r < n; ++r) {
    std::string line;
    for (size_t c = 0; c < t.columns.size(); ++c)
      line += fmt::format("{:>{}} ", cell(t.data[c][r]), std::max<size_t>(10, t.columns[c].size()));
    fmt::print("{}\n", line);
  }
}

std::string table_json(const Table& t, size_t tail) {
  const size_t n = t.rows(), first = n > tail ? n - tail : 0;
  std::string out = fmt::format("{{\"rows\": {}, \"columns\": {{", n);
  for (size_t c = 0; c < t.columns.size(); ++c) {
    std::vector<std::string> v;
    for (size_t r = first; r < n; ++r) v.push_back(json_num(t.data[c][r]));
    out += fmt::format("{}{}: [{}]", c ? ", " : "", json_string(t.columns[c]), fmt::join(v, ", "));
  }
  return out + "}}";
}

std::string attr_text(const store::RunReader& r, const std::string& name) {
  try {
    return r.attr_string(name);
  } catch (const store::StoreError&) {
  }
  try {
    return cell(r.attr_double(name));
  } catch (const store::StoreError&) {
  }
  try {
    return fmt::format("{}", fmt::join(r.attr_strings(name), ", "));
  } catch (const store::StoreError&) {
  }
  return "?";
}

int print_run(const std::string& file, size_t tail, bool csv, bool json) {
  ReadWatchdog wd(file, kReadSeconds);
  store::RunSummary s = store::summary_read(file);  // validates schema_version, run_id, status
  store::RunReader r(file);
  Table train = read_table(r, "train"), eval = read_table(r, "eval");
  auto snaps = store::snapshot_list(r);
  if (csv) {
    // Both tables, long format: table,step,column,value.
    fmt::print("table,row,column,value\n");
    for (const auto* t : {&eval, &train}) {
      const std::string name = t == &eval ? "eval" : "train";
      const size_t n = t->rows(), first = n > tail ? n - tail : 0;
      for (size_t row = first; row < n; ++row)
        for (size_t c = 0; c < t->columns.size(); ++c)
          fmt::print("{},{},{},{}\n", name, row, csv_cell(t->columns[c]), cell(t->data[c][row]));
    }
    return kExitOk;
  }
  const std::vector<std::string> names = r.attr_names();
  if (json) {
    fmt::print("{{\"file\": {}, \"live\": {}, \"attributes\": {{", json_string(file), s.live ? "true" : "false");
    bool first = true;
    for (const auto& a : names) {
      fmt::print("{}{}: {}", first ? "" : ", ", json_string(a), json_string(attr_text(r, a)));
      first = false;
    }
    fmt::print("}}, \"eval\": {}, \"train\": {}, \"snapshots\": [", table_json(eval, tail), table_json(train, tail));
    for (size_t i = 0; i < snaps.size(); ++i) fmt::print("{}{}", i ? ", " : "", snaps[i].step);
    fmt::print("], \"incomplete_snapshots\": [{}]}}\n",
               !snaps.empty() && !snaps.back().complete ? std::to_string(snaps.back().step) : std::string());
    return kExitOk;
  }
  fmt::print(
      "# {}{}\n", text(file),
      s.live ? " (status running: the run is in progress, or its process was killed; `xpand train` resumes it)" : "");
  fmt::print("run {}: status {}, {} steps{}\n", text(s.run_id), text(s.status), progress(s),
             s.error.empty() ? "" : ", error: " + text(s.error));
  for (const auto& a : names)
    if (a != "config") fmt::print("  {:<18} {}\n", text(a), text(attr_text(r, a)));
  fmt::print("\n## config\n{}", r.has_attr("config") ? utf8::printable(attr_text(r, "config"), true) : "(none)\n");
  print_table_text("metrics/eval", eval, tail);
  print_table_text("metrics/train", train, tail);
  fmt::print("\n## snapshots ({}): {}\n", snaps.size(), store::snapshot_steps_str(snaps));
  if (!snaps.empty()) {
    const auto& last = snaps.back();
    fmt::print("{:<24} {:>14} {:>8} {:>9} {:>9}   (step {}{})\n", "layer", "shape", "rank", "eff.rank", "stable",
               last.step, last.complete ? "" : "; incomplete: its run did not finish writing it");
    for (const auto& layer : r.children(last.group)) {
      const std::string g = last.group + "/" + layer;
      std::vector<int64_t> shape;
      std::string shape_s = r.has_attr_at(g, "nonlinear") ? "nonlinear" : "-";
      if (r.has_object(g + "/weight")) {
        r.read_array(g + "/weight", &shape);
        shape_s = fmt::format("{}", fmt::join(shape, "x"));
      }
      auto a = [&](const char* n, const char* f) { return r.has_attr_at(g, n) ? num(r.attr_double_at(g, n), f) : "-"; };
      fmt::print("{:<24} {:>14} {:>8} {:>9} {:>9}\n", text(layer), shape_s, a("numerical_rank", "{:.0f}"),
                 a("effective_rank", "{:.2f}"), a("stable_rank", "{:.2f}"));
    }
  }
  return kExitOk;
}

}  // namespace

Runner inspect_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "inspect",
      "show an output directory's runs (status, axes, progress, final metrics) or one run file; works "
      "while runs train");
  auto path = std::make_shared<std::string>();
  auto run = std::make_shared<std::string>();
  auto tail = std::make_shared<size_t>(10);
  auto csv = std::make_shared<bool>(false);
  auto json = std::make_shared<bool>(false);
  cmd->add_option("path", *path, "output directory, its index.h5, or a run file")->required();
  cmd->add_option("--run", *run, "with a directory: show this run id");
  cmd->add_option("--tail", *tail, "metric rows shown per table")->capture_default_str();
  auto* c = cmd->add_flag("--csv", *csv, "comma-separated output");
  cmd->add_flag("--json", *json, "JSON output")->excludes(c);
  return [=]() {
    std::error_code ec;
    require_input(*path, "", InputKind::FileOrDirectory);
    try {
      if (fs::is_directory(*path, ec)) {
        if (!run->empty()) {
          const std::string f = (fs::path(*path) / "runs" / (*run + ".h5")).string();
          require_input(f, "--run " + *run + ":");
          return print_run(f, *tail, *csv, *json);
        }
        if (!fs::is_directory(fs::path(*path) / "runs", ec))
          throw ConfigError(fmt::format("{}: not an xpand output directory (no runs/ inside)", *path));
        return print_runs(store::run_files(*path), *path, *csv, *json);
      }
      if (!run->empty()) throw ConfigError("--run needs an output directory, not a file");
      std::vector<std::string> listed;
      bool is_index = false;
      {
        ReadWatchdog wd(*path, kReadSeconds);
        store::RunReader r(*path);
        const std::string kind =
            r.has_attr("kind") && r.dtype_attr("kind") == "string" ? r.attr_string("kind") : std::string();
        if (kind == "xpand collapsed model") return print_model(r, *json);
        is_index = kind == "xpand index";
        if (is_index) listed = r.read_strings("/summary/path");
      }
      if (is_index) {
        // An index: the runs it lists, read afresh (the index itself may be older than they are).
        std::vector<std::string> files;
        const fs::path dir = fs::path(*path).parent_path();
        for (const auto& p : listed) files.push_back(fs::path(p).is_absolute() ? p : (dir / p).string());
        return print_runs(files, *path, *csv, *json);
      }
      return print_run(*path, *tail, *csv, *json);
    } catch (const store::StoreError& e) {
      throw DataError(e.what());
    }
  };
}

}  // namespace xpand::cli
