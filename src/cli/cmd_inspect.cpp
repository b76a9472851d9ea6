// `xpand inspect PATH [--run ID] [--tail N] [--csv | --json]`: what an output directory or a run file
// holds, readable while runs are training (run files open in SWMR-read mode).
//   directory or index.h5: one row per run — status, axis values, progress, final metrics
//   run file (or DIR --run ID): provenance, config, ranks, the tail of the metrics, snapshots
// Malformed files (truncated, foreign, newer schema) give a message naming the file and exit 1.
#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <map>
#include <set>

#include "cli/commands.h"
#include "cli/watchdog.h"
#include "config/operational.h"
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
  // Format 2: /state_dict/<name>; format 1 (older xpand): /<layer>/weight.
  const bool sd = r.has_object("/state_dict");
  for (const auto& name : r.children(sd ? "/state_dict" : "/")) {
    const std::string path = sd ? "/state_dict/" + name : "/" + name + "/weight";
    if (!r.has_object(path)) continue;
    std::vector<int64_t> dims = r.extent(path);
    int64_t n = 1;
    for (int64_t d : dims) n *= d;
    layers.push_back({name, dims.empty() ? "scalar" : fmt::format("{}", fmt::join(dims, "x")), n});
    total += n;
  }
  if (json) {
    fmt::print(
        "{{\"kind\": \"xpand collapsed model\", \"path\": {}, \"run_id\": {}, \"step\": {}, \"source\": {}, "
        "\"model\": {}, \"values\": {}, \"tensors\": [",
        json_string(r.path()), json_string(attr("run_id")), step, json_string(attr("source")),
        json_string(attr("model")), total);
    for (size_t i = 0; i < layers.size(); ++i)
      fmt::print("{}{{\"name\": {}, \"shape\": {}}}", i ? ", " : "", json_string(layers[i].name),
                 json_string(layers[i].shape));
    fmt::print("]}}\n");
    return kExitOk;
  }
  fmt::print("# {}: xpand collapsed model{} of run {} at step {} ({}); {} values\n", text(r.path()),
             attr("model").empty() ? "" : " (" + text(attr("model")) + ")", text(attr("run_id")), step,
             text(attr("source")), total);
  fmt::print("{:<32} {:>14} {:>10}\n", "tensor", "shape", "values");
  for (const auto& l : layers) fmt::print("{:<32} {:>14} {:>10}\n", text(l.name), l.shape, l.n);
  return kExitOk;
}

// --- the table of runs --------------------------------------------------------------------------

// How `inspect DIR` selects and orders its rows.
struct TableOptions {
  std::vector<std::string> filters;  // KEY=VALUE
  std::string sort;                  // a config key, axis or column; empty: by the columns' values
  bool reverse = false;
};

// A run's resolved config as dotted keys -> YAML text (lists in flow style).
void flatten(const YAML::Node& n, const std::string& prefix, std::map<std::string, std::string>* out) {
  if (n.IsMap()) {
    for (const auto& kv : n)
      flatten(kv.second, prefix.empty() ? kv.first.Scalar() : prefix + "." + kv.first.Scalar(), out);
    return;
  }
  if (n.IsScalar()) {
    (*out)[prefix] = n.Scalar();
    return;
  }
  YAML::Emitter e;
  e << YAML::Flow << n;
  (*out)[prefix] = e.c_str();
}

std::map<std::string, std::string> flat_config(const std::string& yaml) {
  std::map<std::string, std::string> out;
  try {
    flatten(YAML::Load(yaml), "", &out);
  } catch (const YAML::Exception&) {  // a damaged config attribute: no columns from it
  }
  return out;
}

// Keys that say where and how a run was carried out, not what it is: no column of their own.
bool context_key(const std::string& k) {
  return k == "name" || k == "device" || k == "threads" || k.rfind("output.", 0) == 0 || config::is_operational(k);
}

// Numbers compare as numbers, anything else as text.
bool value_less(const std::string& a, const std::string& b) {
  char *ea = nullptr, *eb = nullptr;
  const double x = std::strtod(a.c_str(), &ea), y = std::strtod(b.c_str(), &eb);
  const bool na = !a.empty() && *ea == '\0', nb = !b.empty() && *eb == '\0';
  if (na && nb && x != y) return x < y;
  if (na != nb) return na;
  return a < b;
}

struct RunRow {
  store::RunSummary s;
  std::map<std::string, std::string> cfg;  // flattened config, axes and the metric columns
  double peak_mib = store::RunSummary::kNaN;
};

// A metric of a run that did not complete normally (diverged, preempted, failed) is not a result.
bool shows_metrics(const store::RunSummary& s) { return s.status == "completed" || s.status == "running"; }

// The value of a column for sorting and filtering: a config key, an axis, or a summary field.
std::string field(const RunRow& r, const std::string& key) {
  if (auto it = r.cfg.find(key); it != r.cfg.end()) return it->second;
  for (const auto& [k, v] : r.s.axes)
    if (k == key) return v;
  const auto& s = r.s;
  if (key == "status") return s.status;
  if (key == "run_id") return s.run_id;
  if (key == "steps") return std::to_string(s.steps);
  const std::map<std::string, double> metrics = {{"train_loss", s.train_loss}, {"train_acc", s.train_acc},
                                                 {"test_loss", s.test_loss},   {"test_acc", s.test_acc},
                                                 {"time_s", s.wall_seconds},   {"peak_MiB", r.peak_mib}};
  if (auto it = metrics.find(key); it != metrics.end())
    return shows_metrics(s) && std::isfinite(it->second) ? fmt::format("{}", it->second) : "";
  return "";
}

int print_runs(const std::vector<std::string>& files, const std::string& where, bool csv, bool json,
               const TableOptions& opt) {
  std::vector<RunRow> rows;
  std::vector<std::string> bad;
  for (const auto& f : files) {
    try {
      ReadWatchdog wd(f, kReadSeconds);
      RunRow row;
      row.s = store::summary_read(f);
      store::RunReader r(f);
      if (r.has_attr("config") && r.dtype_attr("config") == "string") row.cfg = flat_config(r.attr_string("config"));
      if (r.has_object("/metrics/train/mem_peak")) {
        const auto mem = r.column("train", "mem_peak");
        if (!mem.empty()) row.peak_mib = *std::max_element(mem.begin(), mem.end()) / 1048576.0;
      }
      rows.push_back(std::move(row));
    } catch (const std::exception& e) {
      bad.push_back(e.what());
    }
  }
  // A --sort or --filter key no run has is a typo, not an empty selection.
  std::vector<std::pair<std::string, std::string>> asked;
  for (const auto& f : opt.filters) asked.emplace_back("--filter " + f, f.substr(0, f.find('=')));
  if (!opt.sort.empty()) asked.emplace_back("--sort " + opt.sort, opt.sort);
  static const std::set<std::string> columns = {"status",    "run_id",   "steps",  "train_loss", "train_acc",
                                                "test_loss", "test_acc", "time_s", "peak_MiB"};
  for (const auto& [flag, k] : asked) {
    bool known = columns.count(k) > 0;
    for (const auto& r : rows) known = known || r.cfg.count(k) || !field(r, k).empty();
    if (!known && !rows.empty())
      throw ConfigError(fmt::format("{}: no run has the key '{}' (config keys such as train.lr, axes, or {})", flag, k,
                                    fmt::join(columns, ", ")));
  }
  // --filter KEY=VALUE: the runs whose KEY is VALUE (numbers compared as numbers).
  for (const auto& f : opt.filters) {
    const auto eq = f.find('=');
    const std::string k = f.substr(0, eq), v = f.substr(eq + 1);
    rows.erase(std::remove_if(rows.begin(), rows.end(),
                              [&](const RunRow& r) {
                                const std::string x = field(r, k);
                                return value_less(x, v) || value_less(v, x);
                              }),
               rows.end());
  }
  // Columns: the sweep axes (a mapping-valued axis by its dotted keys), then every config key whose
  // value differs between the runs shown.
  std::vector<std::string> cols;
  auto add_col = [&](const std::string& k) {
    if (std::find(cols.begin(), cols.end(), k) == cols.end()) cols.push_back(k);
  };
  for (const auto& r : rows)
    for (const auto& [k, v] : r.s.axes) {
      if (r.cfg.count(k) || r.cfg.empty()) {
        add_col(k);
        continue;
      }
      for (const auto& [ck, cv] : r.cfg)  // a mapping: its keys, as the config holds them
        if (ck.rfind(k + ".", 0) == 0) add_col(ck);
    }
  std::set<std::string> keys;
  for (const auto& r : rows)
    for (const auto& [k, v] : r.cfg) keys.insert(k);
  for (const auto& k : keys) {
    if (context_key(k)) continue;
    bool differs = false;
    for (const auto& r : rows) differs |= field(r, k) != field(rows.front(), k);
    if (differs) add_col(k);
  }
  auto value = [&](const RunRow& r, const std::string& k) { return field(r, k); };
  // Rows by --sort, else by the columns' values, then the run id.
  std::vector<std::string> order = opt.sort.empty() ? cols : std::vector<std::string>{opt.sort};
  if (!opt.sort.empty() && !columns.count(opt.sort)) add_col(opt.sort);  // a config key: shown too
  std::stable_sort(rows.begin(), rows.end(), [&](const RunRow& a, const RunRow& b) {
    for (const auto& k : order) {
      const std::string x = value(a, k), y = value(b, k);
      if (value_less(x, y)) return true;
      if (value_less(y, x)) return false;
    }
    return a.s.run_id < b.s.run_id;
  });
  if (opt.reverse) std::reverse(rows.begin(), rows.end());
  auto metric = [&](const RunRow& r, double v, const char* f = "{:.4f}") {
    return shows_metrics(r.s) ? num(v, f) : "-";
  };
  if (json) {
    std::vector<std::string> axes;
    for (const auto& r : rows)
      for (const auto& a : r.s.axes)
        if (std::find(axes.begin(), axes.end(), a.first) == axes.end()) axes.push_back(a.first);
    fmt::print("{{\"source\": {}, \"axes\": [", json_string(where));
    for (size_t i = 0; i < axes.size(); ++i) fmt::print("{}{}", i ? ", " : "", json_string(axes[i]));
    fmt::print("], \"columns\": [");
    for (size_t i = 0; i < cols.size(); ++i) fmt::print("{}{}", i ? ", " : "", json_string(cols[i]));
    fmt::print("], \"runs\": [\n");
    for (size_t i = 0; i < rows.size(); ++i) {
      const auto& s = rows[i].s;
      std::string ax, cv;
      for (const auto& [k, v] : s.axes)
        ax += fmt::format("{}{}: {}", ax.empty() ? "" : ", ", json_string(k), json_string(v));
      for (const auto& k : cols)
        cv += fmt::format("{}{}: {}", cv.empty() ? "" : ", ", json_string(k), json_string(value(rows[i], k)));
      auto jm = [&](double v) { return shows_metrics(s) ? json_num(v) : "null"; };
      fmt::print(
          "  {{\"run_id\": {}, \"status\": {}, \"live\": {}, \"axes\": {{{}}}, \"columns\": {{{}}}, \"steps\": {}, "
          "\"total_steps\": {}, \"train_loss\": {}, \"train_acc\": {}, \"test_loss\": {}, \"test_acc\": {}, "
          "\"wall_seconds\": {}, \"peak_mib\": {}, \"error\": {}, \"path\": {}}}{}\n",
          json_string(s.run_id), json_string(s.status), s.live ? "true" : "false", ax, cv, s.steps, s.total_steps,
          jm(s.train_loss), jm(s.train_acc), jm(s.test_loss), jm(s.test_acc), json_num(s.wall_seconds),
          json_num(rows[i].peak_mib), json_string(s.error), json_string(s.path), i + 1 < rows.size() ? "," : "");
    }
    fmt::print("], \"unreadable\": [");
    for (size_t i = 0; i < bad.size(); ++i) fmt::print("{}{}", i ? ", " : "", json_string(bad[i]));
    fmt::print("]}}\n");
  } else if (csv) {
    std::vector<std::string> head = {"run_id", "status"};
    for (const auto& a : cols) head.push_back(csv_cell(a));
    for (const char* c : {"steps", "total_steps", store::col::kTrainLoss, store::col::kTrainAcc, store::col::kTestLoss,
                          store::col::kTestAcc, "wall_seconds", "peak_mib", "error"})
      head.push_back(c);
    fmt::print("{}\n", fmt::join(head, ","));
    for (const auto& r : rows) {
      const auto& s = r.s;
      std::vector<std::string> row = {csv_cell(s.run_id), csv_cell(s.status)};
      for (const auto& a : cols) row.push_back(csv_cell(value(r, a)));
      for (double v : {double(s.steps), double(s.total_steps)}) row.push_back(fmt::format("{}", v));
      for (double v : {s.train_loss, s.train_acc, s.test_loss, s.test_acc})
        row.push_back(shows_metrics(s) && std::isfinite(v) ? fmt::format("{}", v) : "");
      for (double v : {s.wall_seconds, r.peak_mib}) row.push_back(std::isfinite(v) ? fmt::format("{}", v) : "");
      row.push_back(csv_cell(s.error));
      fmt::print("{}\n", fmt::join(row, ","));
    }
  } else {
    size_t idw = 6;
    for (const auto& r : rows) idw = std::max(idw, text(r.s.run_id).size());
    std::vector<size_t> aw;
    for (const auto& a : cols) {
      size_t w = a.size();
      for (const auto& r : rows) w = std::max(w, text(value(r, a)).size());
      aw.push_back(std::min<size_t>(w, 40));
    }
    std::string head = fmt::format("{:<{}}  {:<10}", "run_id", idw, "status");
    for (size_t i = 0; i < cols.size(); ++i) head += fmt::format("  {:>{}}", text(cols[i]), aw[i]);
    head += fmt::format("  {:>20}  {:>10} {:>9} {:>10} {:>9} {:>8} {:>9}", "progress", store::col::kTrainLoss,
                        store::col::kTrainAcc, store::col::kTestLoss, store::col::kTestAcc, "time_s", "peak_MiB");
    fmt::print("# {}: {} run(s)\n{}\n", text(where), rows.size(), head);
    int done = 0, interrupted = 0;
    for (const auto& r : rows) {
      const auto& s = r.s;
      std::string line = fmt::format("{:<{}}  {:<10}", text(s.run_id), idw, text(s.status));
      for (size_t i = 0; i < cols.size(); ++i) {
        std::string v = text(value(r, cols[i]));
        if (v.size() > aw[i]) v = v.substr(0, aw[i] - 1) + "~";
        line += fmt::format("  {:>{}}", v.empty() ? "-" : v, aw[i]);
      }
      line += fmt::format("  {:>20}  {:>10} {:>9} {:>10} {:>9} {:>8} {:>9}", progress(s), metric(r, s.train_loss),
                          metric(r, s.train_acc), metric(r, s.test_loss), metric(r, s.test_acc),
                          num(s.wall_seconds, "{:.1f}"), num(r.peak_mib, "{:.1f}"));
      fmt::print("{}\n", line);
      done += s.status == "completed";
      interrupted += s.status == "running" || s.status == "preempted";
    }
    fmt::print("# {} completed, {} running or interrupted, {} other\n", done, interrupted,
               rows.size() - size_t(done) - size_t(interrupted));
    for (const auto& r : rows)
      if (!r.s.error.empty()) fmt::print("# {}: {}\n", text(r.s.run_id), text(r.s.error));
  }
  for (const auto& b : bad) std::cerr << "xpand: unreadable run file: " << text(b) << "\n";
  return bad.empty() ? kExitOk : kExitFailure;
}

// The run file of DIR whose id is `id` or starts with it (one run only); ConfigError otherwise.
std::string run_by_prefix(const std::string& dir, const std::string& id, const std::string& flag) {
  const fs::path exact = fs::path(dir) / "runs" / (id + ".h5");
  std::error_code ec;
  if (fs::is_regular_file(exact, ec)) return exact.string();
  std::vector<std::string> hits;
  for (const auto& f : store::run_files(dir))
    if (fs::path(f).stem().string().rfind(id, 0) == 0) hits.push_back(fs::path(f).stem().string());
  if (hits.size() == 1) return (fs::path(dir) / "runs" / (hits[0] + ".h5")).string();
  if (hits.empty()) throw DataError(fmt::format("{} {}: no run of {} has this id or starts with it", flag, id, dir));
  if (hits.size() > 5) hits.resize(5), hits.push_back("...");
  throw ConfigError(
      fmt::format("{} {}: several runs start with it ({}); give more of the id", flag, id, fmt::join(hits, ", ")));
}

// `inspect --diff A B`: the config keys whose values differ between two runs.
int print_diff(const std::string& a, const std::string& b) {
  auto cfg = [](const std::string& f) {
    ReadWatchdog wd(f, kReadSeconds);
    store::RunReader r(f);
    if (!r.has_attr("config")) throw DataError(fmt::format("{}: has no config attribute", f));
    return std::make_pair(r.has_attr("run_id") ? r.attr_string("run_id") : f, flat_config(r.attr_string("config")));
  };
  const auto [ida, ca] = cfg(a);
  const auto [idb, cb] = cfg(b);
  std::set<std::string> keys;
  for (const auto& [k, v] : ca) keys.insert(k);
  for (const auto& [k, v] : cb) keys.insert(k);
  size_t kw = 3, vw = text(ida).size();
  std::vector<std::array<std::string, 3>> out;
  for (const auto& k : keys) {
    const std::string x = ca.count(k) ? ca.at(k) : "(absent)", y = cb.count(k) ? cb.at(k) : "(absent)";
    if (x == y) continue;
    out.push_back({k, x, y});
    kw = std::max(kw, k.size()), vw = std::max(vw, text(x).size());
  }
  fmt::print("{:<{}}  {:<{}}  {}\n", "key", kw, text(ida), vw, text(idb));
  for (const auto& [k, x, y] : out) fmt::print("{:<{}}  {:<{}}  {}\n", text(k), kw, text(x), vw, text(y));
  fmt::print("# {} key(s) differ{}\n", out.size(), out.empty() ? ": the two runs have the same config" : "");
  return kExitOk;
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
    for (const auto& layer : store::snapshot_layers(r, last.group)) {
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
    const std::string net = last.group + "/" + store::kSnapshotNetwork;
    if (r.has_object(net)) fmt::print("network tensors: {}\n", fmt::join(r.children(net), ", "));
  }
  return kExitOk;
}

}  // namespace

int print_run_table(const std::vector<std::string>& files, const std::string& where) {
  return print_runs(files, where, false, false, TableOptions());
}

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
  cmd->add_option("--run", *run, "with a directory: show this run (its id or a unique prefix of it)");
  auto table = std::make_shared<TableOptions>();
  auto diff = std::make_shared<std::vector<std::string>>();
  cmd->add_option("--sort", table->sort, "order the runs by this config key, axis or column (test_acc, ...)");
  cmd->add_flag("--reverse", table->reverse, "the runs in reverse order");
  cmd->add_option("--filter", table->filters, "only the runs whose KEY is VALUE (KEY=VALUE), repeatable");
  cmd->add_option("--diff", *diff,
                  "the config keys that differ between two runs (run files, or ids or prefixes "
                  "in the directory)")
      ->expected(2);
  cmd->add_option("--tail", *tail, "metric rows shown per table")->capture_default_str();
  auto* c = cmd->add_flag("--csv", *csv, "comma-separated output");
  cmd->add_flag("--json", *json, "JSON output")->excludes(c);
  return [=]() {
    std::error_code ec;
    require_input(*path, "", InputKind::FileOrDirectory);
    for (const auto& f : table->filters)
      if (f.find('=') == std::string::npos || f.front() == '=')
        throw ConfigError(fmt::format("--filter {}: expected KEY=VALUE", f));
    const bool dir = fs::is_directory(*path, ec);
    if (dir && !fs::is_directory(fs::path(*path) / "runs", ec))
      throw ConfigError(fmt::format("{}: not an xpand output directory (no runs/ inside)", *path));
    try {
      if (!diff->empty()) {
        std::vector<std::string> files;
        for (const auto& d : *diff)
          files.push_back(fs::is_regular_file(d, ec) || !dir ? d : run_by_prefix(*path, d, "--diff"));
        for (const auto& f : files) require_input(f, "--diff");
        return print_diff(files[0], files[1]);
      }
      if (dir) {
        if (!run->empty()) return print_run(run_by_prefix(*path, *run, "--run"), *tail, *csv, *json);
        return print_runs(store::run_files(*path), *path, *csv, *json, *table);
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
        return print_runs(files, *path, *csv, *json, *table);
      }
      return print_run(*path, *tail, *csv, *json);
    } catch (const store::StoreError& e) {
      throw DataError(e.what());
    }
  };
}

}  // namespace xpand::cli
