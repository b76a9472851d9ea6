// What a run finds in its output directory before it trains: a completed run file (skip), an
// unfinished one with a checkpoint that fits (resume), another live process on the same run (busy),
// or nothing usable (start fresh, moving old files aside: nothing is deleted). Also the run lock
// and the run file's identity check at the end.
#pragma once
#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dist/comm.h"
#include "model/network.h"
#include "train/checkpoint.h"
#include "train/metrics.h"

namespace xpand::train {

struct Existing {
  // Busy: another live process trains the run (its lock is held); every rank of the group stops.
  enum Action { Fresh, Skip, Resume, Busy } action = Fresh;
  int64_t resume_step = 0;
};

// An exclusive flock on <out>/locks/<run_id>.lock, held while the run trains: a second process on the
// same run (the same command twice, a requeued job whose first incarnation still lives) stops with a
// message instead of resuming a file that is being written. Throws RunBusyError when it is held.
class RunLock {
 public:
  explicit RunLock(const std::string& run_path);
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

 private:
  std::string path_;
  int fd_ = -1;
};

// The decision for one run, agreed by every rank of `group` (collective). Group rank 0 examines the
// files and takes the lock (kept in `lock` for the whole run); a busy run throws RunBusyError on
// every rank. `expected`: the datasets a checkpoint of this network must hold (checkpoint_datasets).
Existing examine_run(const std::string& path, const std::string& ckpt, const std::string& run_id, int64_t total,
                     bool force, bool resume, const std::vector<std::string>& expected, dist::Communicator& group,
                     std::unique_ptr<RunLock>& lock);

// The datasets a checkpoint of this network must hold (checkpoint_verify).
std::vector<std::string> checkpoint_datasets(model::Network& net, const NamedTensors& extra);

// The last evaluation row of a run file (NaN where there is none).
EvalMetrics last_eval(const std::string& path);

// A file's device and inode (zeros when it does not exist): a run checks at its end that its path
// still names the file it wrote.
struct FileId {
  dev_t dev = 0;
  ino_t ino = 0;
  bool operator==(const FileId& o) const { return dev == o.dev && ino == o.ino; }
};
FileId file_id(const std::string& path);

}  // namespace xpand::train
