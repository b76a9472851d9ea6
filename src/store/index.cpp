// Run summaries and the index file (see index.h).
#include "store/index.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <thread>

#include "core/log.h"
#include "core/signals.h"
#include "store/columns.h"
#include "store/run_file.h"

namespace xpand::store {

namespace fs = std::filesystem;

namespace {

// Rows of a metrics table: its shortest column (a live file's columns may differ by the row being
// appended).
int64_t table_rows(const RunReader& r, const std::string& table) {
  if (!r.has_object("/metrics/" + table)) return 0;
  int64_t rows = -1;
  for (const auto& col : r.columns(table)) {
    auto e = r.extent("/metrics/" + table + "/" + col);
    if (e.size() != 1)
      throw StoreError("xpand store: " + r.path() + ": /metrics/" + table + "/" + col + " is not a 1-D column");
    rows = rows < 0 ? e[0] : std::min(rows, e[0]);
  }
  return std::max<int64_t>(rows, 0);
}

// The value of a column at the table's last complete row.
double last_of(const RunReader& r, const std::string& table, const std::string& col, int64_t rows) {
  if (rows <= 0 || !r.has_object("/metrics/" + table + "/" + col)) return RunSummary::kNaN;
  auto v = r.column(table, col);
  return int64_t(v.size()) < rows ? RunSummary::kNaN : v[size_t(rows - 1)];
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// An attribute's value as text, whatever its type (axis values are ints, floats or strings).
std::string attr_text(const RunReader& r, const std::string& name) {
  try {
    return r.attr_string(name);
  } catch (const StoreError&) {
  }
  double v = r.attr_double(name);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.12g", v);
  return buf;
}

}  // namespace

namespace {
// Whether the run file's status attribute is a string equal to value.
bool status_is(const RunReader& r, RunStatus value) {
  return r.has_attr("status") && r.dtype_attr("status") == "string" && status_parse(r.attr_string("status")) == value;
}
}  // namespace

std::vector<std::string> snapshot_layers(const RunReader& r, const std::string& group) {
  auto names = r.children(group);
  names.erase(std::remove(names.begin(), names.end(), std::string(kSnapshotNetwork)), names.end());
  return names;
}

namespace {

// A mapping-valued axis (`layers.fc1: {kind: expanded, factor: 2}`) also as one typed column per
// key, /summary/axis.<axis>.<key>: int64 when every run's value is an integer, float64 when every
// value is a number (NaN where a run lacks the key), strings otherwise.
void write_mapping_columns(RunWriter& w, const std::string& axis, const std::vector<std::string>& values) {
  std::vector<std::map<std::string, std::string>> rows(values.size());
  std::vector<std::string> keys;
  bool any = false;
  for (size_t i = 0; i < values.size(); ++i) {
    if (values[i].empty() || values[i].front() != '{') continue;
    try {
      const YAML::Node n = YAML::Load(values[i]);
      if (!n.IsMap()) continue;
      for (const auto& kv : n) {
        if (!kv.second.IsScalar()) continue;
        const std::string k = kv.first.Scalar();
        rows[i][k] = kv.second.Scalar();
        if (std::find(keys.begin(), keys.end(), k) == keys.end()) keys.push_back(k);
        any = true;
      }
    } catch (const YAML::Exception&) {
    }
  }
  if (!any) return;
  const int64_t n = int64_t(values.size());
  for (const auto& k : keys) {
    bool ints = true, nums = true, complete = true;
    std::vector<double> d(values.size(), std::nan(""));
    std::vector<std::string> text(values.size());
    for (size_t i = 0; i < rows.size(); ++i) {
      auto it = rows[i].find(k);
      if (it == rows[i].end()) {
        complete = false;
        continue;
      }
      text[i] = it->second;
      char* end = nullptr;
      errno = 0;
      const long long v = std::strtoll(it->second.c_str(), &end, 10);
      const bool is_int = !it->second.empty() && *end == '\0' && errno == 0;
      const double x = std::strtod(it->second.c_str(), &end);
      const bool is_num = !it->second.empty() && *end == '\0';
      ints = ints && is_int, nums = nums && is_num;
      if (is_num) d[i] = is_int ? double(v) : x;
    }
    const std::string path = "/summary/axis." + axis + "." + k;
    if (ints && complete) {
      std::vector<int64_t> v(d.begin(), d.end());
      w.write_array(path, {n}, v.data());
    } else if (nums) {
      w.write_array(path, {n}, d.data());
    } else {
      w.write_strings(path, text);
    }
  }
}

}  // namespace

std::vector<SnapshotRef> snapshot_list(const RunReader& r) {
  std::vector<SnapshotRef> out;
  if (!r.has_object("/snapshots")) return out;
  for (const auto& name : r.children("/snapshots")) {
    if (name.empty() || name.size() > 18 ||
        !std::all_of(name.begin(), name.end(), [](unsigned char c) { return std::isdigit(c); }))
      continue;
    out.push_back({std::stoll(name), "/snapshots/" + name});
  }
  std::sort(out.begin(), out.end(), [](const SnapshotRef& a, const SnapshotRef& b) { return a.step < b.step; });
  // Snapshots are written one after another, so only the newest can be half-written, and only in a
  // run that did not complete. The writer sets the group's `layers` attribute (the number of layer
  // groups) after its last layer; files without it are judged by their contents.
  if (!out.empty() && !status_is(r, RunStatus::Completed)) {
    SnapshotRef& last = out.back();
    try {
      const auto layers = snapshot_layers(r, last.group);
      if (r.has_attr_at(last.group, "layers")) {
        last.complete = !layers.empty() && double(layers.size()) == r.attr_double_at(last.group, "layers");
      } else {
        last.complete = !layers.empty();
        if (out.size() > 1 && layers.size() < snapshot_layers(r, out[out.size() - 2].group).size())
          last.complete = false;
      }
      for (const auto& layer : layers) {
        const std::string g = last.group + "/" + layer;
        // weight first, the spectrum (or its error) last: docs/FORMAT.md
        if (r.has_attr_at(g, "nonlinear")) continue;  // factors only (docs/FORMAT.md)
        if (!r.has_object(g + "/weight") ||
            (!r.has_object(g + "/singular_values") && !r.has_attr_at(g, "spectrum_error")))
          last.complete = false;
      }
    } catch (const StoreError&) {
      last.complete = false;
    }
  }
  return out;
}

std::string snapshot_steps_str(const std::vector<SnapshotRef>& snaps) {
  std::string s;
  for (size_t i = 0; i < snaps.size(); ++i) {
    if (snaps.size() > 10 && i == 5) {
      s += ", ... (" + std::to_string(snaps.size() - 8) + " more)";
      i = snaps.size() - 4;
      continue;
    }
    s += (s.empty() ? "" : ", ") + std::to_string(snaps[i].step);
  }
  return s;
}

// The structure every xpand run file has, checked from metadata alone (no data is read): a file
// that fails here is damaged or not xpand's, and the reading commands refuse it with the reason.
void run_validate(const RunReader& r, const std::string& path) {
  auto bad = [&](const std::string& what) { throw StoreError("xpand store: " + path + ": " + what); };
  // A live file's columns are extended one after another (and a killed writer may stop between
  // two): a running run's tables may be ragged, and readers use their common length.
  const bool live = status_is(r, RunStatus::Running);
  if (r.dtype_attr("schema_version") != "int")
    bad("attribute schema_version is not an integer (not an xpand run file?)");
  const double version = r.attr_double("schema_version");
  if (version < 1) bad("schema_version " + std::to_string(int64_t(version)) + " is not a valid version");
  for (const char* a : {"run_id", "status", "config"})
    if (r.has_attr(a) && r.dtype_attr(a) != "string") bad(std::string("attribute ") + a + " is not a string");
  for (const auto& link : r.children("/"))
    if ((link == "metrics" || link == "snapshots") && !r.has_object("/" + link))
      bad("/" + link + " is a link to nothing (a missing file or object)");
  if (r.has_object("/metrics")) {
    for (const auto& table : r.tables()) {
      int64_t rows = -1;
      for (const auto& col : r.columns(table)) {
        const std::string p = "/metrics/" + table + "/" + col;
        const std::string t = r.dtype(p);
        if (t.rfind("int", 0) != 0 && t.rfind("uint", 0) != 0 && t.rfind("float", 0) != 0)
          bad(p + " holds " + t + ", not numbers");
        auto e = r.extent(p);
        if (e.size() != 1) bad(p + " is not a 1-D column");
        if (rows >= 0 && e[0] != rows && !live)
          bad("/metrics/" + table + " columns differ in length (" + std::to_string(rows) + " and " +
              std::to_string(e[0]) + " rows at " + col + ")");
        rows = rows < 0 ? e[0] : std::min(rows, e[0]);
      }
    }
  }
  if (r.has_object("/snapshots")) {
    // The newest snapshot of a run that did not complete may be half-written: its layers appear one
    // after another (a live reader sees them come), and a killed or failed writer may stop between two.
    const bool completed = status_is(r, RunStatus::Completed);
    const std::vector<std::string> snapshots = r.children("/snapshots");
    for (const auto& name : snapshots) {
      const bool may_be_partial = !completed && name == snapshots.back();
      const std::string g = "/snapshots/" + name;
      if (name.size() != 8 || !std::all_of(name.begin(), name.end(), [](unsigned char c) { return std::isdigit(c); }))
        bad(g + ": snapshot names are 8-digit steps");
      std::vector<std::string> layers;
      try {
        layers = snapshot_layers(r, g);
      } catch (const StoreError& e) {
        bad(g + " is not a snapshot group");
      }
      if (layers.empty() && !may_be_partial) bad(g + " holds no layers");
      for (const auto& layer : layers) {
        const std::string w = g + "/" + layer + "/weight";
        if (!r.has_object(w) && may_be_partial) continue;
        if (!r.has_object(w) && r.has_attr_at(g + "/" + layer, "nonlinear")) continue;  // factors only
        if (!r.has_object(w)) bad(w + " is missing");
        const std::string t = r.dtype(w);
        if (t.rfind("float", 0) != 0) bad(w + " holds " + t + ", not floats");
        auto e = r.extent(w);
        if (e.size() != 2 && e.size() != 4) bad(w + " is neither (out, in) nor (out, in, kh, kw)");
        double n = 1;
        for (int64_t d : e) n *= double(d);
        if (n > double(int64_t(1) << 27))
          bad(w + " is implausibly large (" + std::to_string(int64_t(n)) + " elements)");
      }
    }
  }
}

RunSummary summary_read(const std::string& run_path) {
  RunReader r(run_path);
  RunSummary s;
  s.path = run_path;
  if (!r.has_attr("schema_version") || !r.has_attr("run_id") || !r.has_attr("status"))
    throw StoreError("xpand store: " + run_path +
                     ": not an xpand run file (no schema_version, run_id and status attributes)");
  run_validate(r, run_path);
  const double version = r.attr_double("schema_version");
  if (version > double(kRunSchemaVersion))
    throw StoreError("xpand store: " + run_path + ": schema_version " + std::to_string(int64_t(version)) +
                     " is newer than this xpand reads (" + std::to_string(kRunSchemaVersion) + "); update xpand");
  s.run_id = r.attr_string("run_id");
  s.status = r.attr_string("status");
  s.live = status_parse(s.status) == RunStatus::Running;
  s.name = r.has_attr("name") ? r.attr_string("name") : "";
  s.error = r.has_attr("error") ? r.attr_string("error") : "";
  if (r.has_attr("total_steps")) s.total_steps = int64_t(r.attr_double("total_steps"));
  if (r.has_attr("wall_seconds")) {
    try {
      s.wall_seconds = r.attr_double("wall_seconds");
    } catch (const StoreError&) {
      s.wall_seconds = std::atof(r.attr_string("wall_seconds").c_str());
    }
  }
  if (r.has_attr("axes"))
    for (const auto& a : r.attr_strings("axes"))
      if (!a.empty()) s.axes.emplace_back(a, r.has_attr(a) ? attr_text(r, a) : "");
  if (r.has_object("/metrics/train/step")) s.steps = table_rows(r, "train");
  const int64_t eval_rows = table_rows(r, "eval");
  s.train_loss = last_of(r, "eval", col::kTrainLoss, eval_rows);
  s.train_acc = last_of(r, "eval", col::kTrainAcc, eval_rows);
  s.test_loss = last_of(r, "eval", col::kTestLoss, eval_rows);
  s.test_acc = last_of(r, "eval", col::kTestAcc, eval_rows);
  return s;
}

std::vector<std::string> run_files(const std::string& out_dir) {
  std::vector<std::string> files;
  std::error_code ec;
  const fs::path dir = fs::path(out_dir) / "runs";
  if (!fs::is_directory(dir, ec)) return files;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (!e.is_regular_file(ec) || !ends_with(name, ".h5")) continue;
    files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

namespace {

// The exclusive lock on <out>/.index.lock, taken by polling so that the wait has a deadline and
// ends early on a stop signal: the index is a cache, and no run may hang on it (a process stopped
// while holding the lock, a hung NFS client).
class IndexLock {
 public:
  IndexLock(const std::string& path, double seconds) {
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) throw StoreError("xpand store: cannot open lock file " + path + ": " + std::strerror(errno));
    const auto start = std::chrono::steady_clock::now();
    bool said = false;
    for (;;) {
      if (::flock(fd_, LOCK_EX | LOCK_NB) == 0) return;
      if (errno != EWOULDBLOCK && errno != EINTR) {
        // A file system without flock (some NFS and Lustre mounts): best effort, as the index is
        // still replaced atomically by rename.
        log::warn("cannot lock {} ({}); updating the index without the lock", path, std::strerror(errno));
        return;
      }
      const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (seconds >= 0 && waited >= seconds) break;
      if (signals::preempt_requested() != 0) break;
      if (!said && waited >= 2) {
        log::info("waiting for {} (another xpand process is updating the index{})", path,
                  seconds >= 0 ? fmt::format("; giving up after {:.0f} s", seconds) : "");
        said = true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ::close(fd_);
    fd_ = -1;
  }
  ~IndexLock() {
    if (fd_ >= 0) ::close(fd_);  // closing releases the flock
  }
  IndexLock(const IndexLock&) = delete;
  IndexLock& operator=(const IndexLock&) = delete;
  bool held() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

struct FileStamp {
  int64_t mtime_ns = -1, size = -1;
  bool operator==(const FileStamp& o) const { return mtime_ns == o.mtime_ns && size == o.size; }
};

FileStamp stamp_of(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return {};
  return {int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec, int64_t(st.st_size)};
}

// The rows of an existing index, by the run file's path as the index names it, with the stamp the
// file had when its row was made. Empty when there is no usable index (then everything is read).
std::map<std::string, std::pair<FileStamp, RunSummary>> previous_rows(const std::string& index_path) {
  std::map<std::string, std::pair<FileStamp, RunSummary>> rows;
  std::error_code ec;
  if (!fs::exists(index_path, ec)) return rows;
  try {
    RunReader r(index_path);
    if (!r.has_attr("kind") || r.attr_string("kind") != "xpand index" || !r.has_object("/summary/file_mtime_ns"))
      return rows;
    auto ids = r.read_strings("/summary/run_id"), status = r.read_strings("/summary/status"),
         paths = r.read_strings("/summary/path"), errors = r.read_strings("/summary/error");
    auto num = [&](const char* c) { return r.read_array(std::string("/summary/") + c, nullptr); };
    auto mtime = num("file_mtime_ns"), size = num("file_size"), steps = num("steps"), total = num("total_steps"),
         trl = num(col::kTrainLoss), tra = num(col::kTrainAcc), tel = num(col::kTestLoss), tea = num(col::kTestAcc),
         wall = num("wall_seconds");
    const size_t n = ids.size();
    for (const auto* v : {&status, &paths, &errors})
      if (v->size() != n) return {};
    for (const auto* v : {&mtime, &size, &steps, &total, &trl, &tra, &tel, &tea, &wall})
      if (v->size() != n) return {};
    std::vector<std::pair<std::string, std::vector<std::string>>> axes;
    for (const auto& a : r.attr_strings("axes")) {
      if (a.empty()) continue;  // no axes: one empty string
      axes.emplace_back(a, r.read_strings("/summary/axis." + a));
      if (axes.back().second.size() != n) return {};
    }
    // Read back as doubles (RunReader's numeric reads), so the stamps are compared after that
    // rounding on both sides (about 0.25 us).
    for (size_t i = 0; i < n; ++i) {
      RunSummary s;
      s.run_id = ids[i], s.status = status[i], s.path = paths[i], s.error = errors[i];
      s.live = status_parse(s.status) == RunStatus::Running;
      s.steps = int64_t(steps[i]), s.total_steps = int64_t(total[i]);
      s.train_loss = trl[i], s.train_acc = tra[i], s.test_loss = tel[i], s.test_acc = tea[i];
      s.wall_seconds = wall[i];
      for (const auto& [a, col] : axes)
        if (!col[i].empty()) s.axes.emplace_back(a, col[i]);
      rows[paths[i]] = {FileStamp{int64_t(mtime[i]), int64_t(size[i])}, std::move(s)};
    }
  } catch (const std::exception&) {
    return {};  // a damaged or older index: rebuilt from the run files
  }
  return rows;
}

}  // namespace

IndexResult index_rebuild(const std::string& out_dir, const IndexOptions& options) {
  IndexResult res;
  const fs::path dir(out_dir);
  res.path = (dir / "index.h5").string();
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw StoreError("xpand store: " + out_dir + ": no such output directory");

  // One update at a time per directory: a later update always sees what an earlier one did.
  const std::string lock_path = (dir / ".index.lock").string();
  IndexLock lock(lock_path, options.lock_seconds);
  if (!lock.held())
    throw StoreError(
        fmt::format("xpand store: {} is held by another process{}; {} was not updated (the next "
                    "finished run or `xpand index {}` brings it up to date)",
                    lock_path,
                    signals::preempt_requested() != 0 ? " and a stop signal came"
                                                      : fmt::format(" for over {:.0f} s", options.lock_seconds),
                    res.path, out_dir));

  // Rows of files unchanged since the last update are reused: a finished run re-reads its own file
  // (and any other that changed), not the whole directory.
  auto previous = options.incremental ? previous_rows(res.path) : decltype(previous_rows(res.path)){};
  std::vector<RunSummary> runs;
  std::vector<FileStamp> stamps;
  const int64_t now_ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  for (const auto& f : run_files(out_dir)) {
    const std::string rel = fs::relative(f, dir, ec).string();
    const std::string key = rel.empty() ? f : rel;
    FileStamp st = stamp_of(f);
    const FileStamp rounded{int64_t(double(st.mtime_ns)), st.size};  // as previous_rows reads it back
    auto it = previous.find(key);
    // A file changed within the last two seconds may change again within its mtime's granularity
    // without changing its size: read it afresh.
    const bool settled = st.mtime_ns < now_ns - 2000000000LL;
    if (it != previous.end() && it->second.first == rounded && st.size >= 0 && settled) {
      RunSummary s = it->second.second;
      s.path = f;
      runs.push_back(std::move(s));
      stamps.push_back(st);
      ++res.reused;
      continue;
    }
    try {
      runs.push_back(summary_read(f));
      // A file changed within the last two seconds is read again next time (its row may be stale
      // within its mtime's granularity): a stamp that matches no file.
      stamps.push_back(settled ? st : FileStamp{-1, -1});
    } catch (const std::exception& e) {
      res.skipped.push_back(e.what());
    }
  }
  // Union of the axes, in order of first appearance.
  std::vector<std::string> axes;
  for (const auto& s : runs)
    for (const auto& a : s.axes)
      if (std::find(axes.begin(), axes.end(), a.first) == axes.end()) axes.push_back(a.first);

  const std::string tmp = res.path + ".tmp-" + std::to_string(::getpid());
  try {
    RunWriter w(tmp);
    w.set_attr("schema_version", int64_t(1));
    w.set_attr("kind", "xpand index");
    w.set_attr_at("/", "axes", axes);
    w.create_group("/runs");
    std::vector<std::string> ids, status, paths, errors;
    std::vector<double> steps, total, trl, tra, tel, tea, wall;
    std::vector<int64_t> mtimes, sizes;
    std::set<std::string> linked;
    for (size_t i = 0; i < runs.size(); ++i) {
      const auto& s = runs[i];
      const std::string rel = fs::relative(s.path, dir, ec).string();
      if (linked.insert(s.run_id).second) w.link_external("/runs/" + s.run_id, rel.empty() ? s.path : rel, "/");
      ids.push_back(s.run_id);
      status.push_back(s.status);
      paths.push_back(rel.empty() ? s.path : rel);
      errors.push_back(s.error);
      steps.push_back(double(s.steps));
      total.push_back(double(s.total_steps));
      trl.push_back(s.train_loss);
      tra.push_back(s.train_acc);
      tel.push_back(s.test_loss);
      tea.push_back(s.test_acc);
      wall.push_back(s.wall_seconds);
      mtimes.push_back(stamps[i].mtime_ns);
      sizes.push_back(stamps[i].size);
    }
    w.create_group("/summary");
    w.write_strings("/summary/run_id", ids);
    w.write_strings("/summary/status", status);
    w.write_strings("/summary/path", paths);
    w.write_strings("/summary/error", errors);
    for (const auto& a : axes) {
      std::vector<std::string> col;
      for (const auto& s : runs) {
        auto it = std::find_if(s.axes.begin(), s.axes.end(), [&](const auto& p) { return p.first == a; });
        col.push_back(it == s.axes.end() ? "" : it->second);
      }
      w.write_strings("/summary/axis." + a, col);
      write_mapping_columns(w, a, col);
    }
    const std::vector<int64_t> n = {int64_t(runs.size())};
    std::vector<int64_t> isteps(steps.begin(), steps.end()), itotal(total.begin(), total.end());
    w.write_array("/summary/steps", n, isteps.data());
    w.write_array("/summary/total_steps", n, itotal.data());
    w.write_array(std::string("/summary/") + col::kTrainLoss, n, trl.data());
    w.write_array(std::string("/summary/") + col::kTrainAcc, n, tra.data());
    w.write_array(std::string("/summary/") + col::kTestLoss, n, tel.data());
    w.write_array(std::string("/summary/") + col::kTestAcc, n, tea.data());
    w.write_array("/summary/wall_seconds", n, wall.data());
    // What each row was made from (the run file's modification time in ns, and its size): the next
    // update reuses the row while both are unchanged.
    w.write_array("/summary/file_mtime_ns", n, mtimes.data());
    w.write_array("/summary/file_size", n, sizes.data());
    w.close();
    commit_file(tmp, res.path);
  } catch (...) {
    fs::remove(tmp, ec);
    throw;
  }
  res.runs = int64_t(runs.size());
  return res;
}

}  // namespace xpand::store
