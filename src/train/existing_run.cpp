// Examining a run's existing files and locking the run (see existing_run.h).
#include "train/existing_run.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "core/log.h"
#include "store/columns.h"
#include "store/run_file.h"
#include "train/trainer.h"

namespace fs = std::filesystem;

namespace xpand::train {

namespace {

// Moves a file aside to <path>.prev-N (nothing is deleted).
void move_aside(const std::string& path, const std::string& why) {
  std::string aside;
  for (int i = 1;; ++i)
    if (!fs::exists(aside = fmt::format("{}.prev-{}", path, i))) break;
  fs::rename(path, aside);
  log::warn("{} {}; moved it to {}", path, why, aside);
}

// Removes the temporaries a killed process leaves: <file>.part (a run file being set up) and
// <file>.tmp-<pid> (a checkpoint being written).
void remove_temporaries(const std::string& file) {
  std::error_code ec;
  fs::remove(file + ".part", ec);
  const fs::path dir = fs::path(file).parent_path();
  const std::string prefix = fs::path(file).filename().string() + ".tmp-";
  if (!fs::is_directory(dir, ec)) return;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.path().filename().string().rfind(prefix, 0) == 0) fs::remove(e.path(), ec);
}

std::string status_of(const std::string& path, const std::string& unreadable) {
  try {
    return store::RunReader(path).attr_string("status");
  } catch (const store::StoreError&) {
    return unreadable;
  }
}

// Whether the run file exists and says its run completed (a final state: only --force trains again).
bool run_completed(const std::string& path) {
  std::error_code ec;
  return fs::exists(path, ec) && store::status_parse(status_of(path, "")) == store::RunStatus::Completed;
}

Existing examine_files(const std::string& path, const std::string& ckpt, const std::string& run_id, int64_t total,
                       bool force, bool resume, const std::vector<std::string>& expected) {
  Existing ex;
  remove_temporaries(path);
  remove_temporaries(ckpt);
  if (!fs::exists(path)) {
    if (fs::exists(ckpt)) move_aside(ckpt, "has no run file");
    return ex;
  }
  const std::string status = status_of(path, "unreadable");
  const auto state = store::status_parse(status);
  if (state == store::RunStatus::Completed && !force) {
    ex.action = Existing::Skip;
    return ex;
  }
  const bool resumable =
      state == store::RunStatus::Running || state == store::RunStatus::Preempted || state == store::RunStatus::Failed;
  if (!force && resume && resumable && fs::exists(ckpt)) {
    try {
      CheckpointInfo c = checkpoint_peek(ckpt);
      if (c.run_id == run_id && c.step > 0 && c.step <= total) {
        checkpoint_verify(ckpt, expected);  // every array's checksum: a damaged checkpoint must not resume
        ex.action = Existing::Resume;
        ex.resume_step = c.step;
        return ex;
      }
      log::warn("{}: checkpoint of run {} at step {} does not fit run {} of {} steps; starting over", ckpt, c.run_id,
                c.step, run_id, total);
    } catch (const std::exception& e) {
      // Kept for inspection, out of the way of every later rerun.
      log::warn("{}: the checkpoint is damaged ({}); starting the run over", ckpt, e.what());
      move_aside(ckpt, "is damaged");
    }
  }
  move_aside(path, fmt::format("existed with status '{}'", status));
  if (fs::exists(ckpt)) move_aside(ckpt, "belongs to the run moved aside");
  return ex;
}

}  // namespace

RunLock::RunLock(const std::string& run_path)
    : path_((fs::path(run_path).parent_path().parent_path() / "locks" / fs::path(run_path).stem()).string() + ".lock") {
  fs::create_directories(fs::path(path_).parent_path());
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT, 0644);
  if (fd_ < 0) throw Error(fmt::format("cannot open {}: {}", path_, std::strerror(errno)));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd_);
    throw RunBusyError(fmt::format(
        "{} is locked: another xpand process is training this run now (wait for it, or stop it first)", path_));
  }
}

RunLock::~RunLock() {
  ::flock(fd_, LOCK_UN);
  ::close(fd_);
}

Existing examine_run(const std::string& path, const std::string& ckpt, const std::string& run_id, int64_t total,
                     bool force, bool resume, const std::vector<std::string>& expected, dist::Communicator& group,
                     std::unique_ptr<RunLock>& lock) {
  Existing existing;
  std::string busy_message;
  if (group.rank() == 0) {
    if (!force && run_completed(path)) {
      existing.action = Existing::Skip;  // read-only: no lock, nothing written (a read-only directory is fine)
    } else {
      fs::create_directories(fs::path(path).parent_path());
      try {
        lock = std::make_unique<RunLock>(path);
        existing = examine_files(path, ckpt, run_id, total, force, resume, expected);
      } catch (const RunBusyError& e) {
        busy_message = e.what();
        existing.action = Existing::Busy;  // decided with the group below, so every rank stops together
      }
    }
  }
  if (group.size() > 1) {
    existing.action = Existing::Action(
        int(group.allreduce_scalar(double(existing.action), dist::ReduceOp::Max, "existing run decision")));
    existing.resume_step =
        int64_t(group.allreduce_scalar(double(existing.resume_step), dist::ReduceOp::Max, "resume step"));
  }
  if (existing.action == Existing::Busy)
    throw RunBusyError(group.rank() == 0 ? busy_message
                                         : fmt::format("run {} is being trained by another process", run_id));
  return existing;
}

std::vector<std::string> checkpoint_datasets(model::Network& net, const NamedTensors& extra) {
  std::vector<std::string> out;
  for (const auto& p : net.named_parameters()) out.push_back("/params/" + p.key());
  for (const auto& b : net.named_buffers()) out.push_back("/buffers/" + b.key());
  for (const auto& e : extra) out.push_back("/extra/" + e.first);
  return out;
}

EvalMetrics last_eval(const std::string& path) {
  store::RunReader r(path);
  auto last = [&](const char* col) {
    auto v = r.has_object(std::string("/metrics/eval/") + col) ? r.column("eval", col) : std::vector<double>{};
    return v.empty() ? NAN : v.back();
  };
  const double step = last("step");
  return {std::isfinite(step) ? int64_t(step) : 0,
          last(store::col::kTrainLoss),
          last(store::col::kTrainAcc),
          last(store::col::kTestLoss),
          last(store::col::kTestAcc),
          last(store::col::kCollapseError)};
}

FileId file_id(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return {};
  return {st.st_dev, st.st_ino};
}

}  // namespace xpand::train
