// The output directory's index and run summaries. <out>/index.h5 holds an external link
// /runs/<run_id> to every run file and a /summary table (one column per field, one row per run);
// it is brought up to date by whoever finishes a run and by `xpand index DIR` (re-reading only the run
// files changed since the last update), written to a
// temporary file and renamed over the old one under an flock, so readers never see half an index.
#pragma once
#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <vector>

namespace xpand::store {

// What `xpand inspect` and the index show of one run file.
struct RunSummary {
  std::string path, run_id, status, error, name;
  std::vector<std::pair<std::string, std::string>> axes;  // swept config keys and their values
  int64_t steps = 0, total_steps = 0;                     // rows of /metrics/train, planned steps
  static constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
  double train_loss = kNaN, train_acc = kNaN, test_loss = kNaN, test_acc = kNaN;
  double wall_seconds = kNaN;
  bool live = false;  // status running: the run is in progress, or its process died (resumable)
};

// The schema version of run files this xpand writes and the newest it reads.
constexpr int64_t kRunSchemaVersion = 2;

class RunReader;

// One snapshot group of a run file: /snapshots/<8-digit step>.
struct SnapshotRef {
  int64_t step;
  std::string group;  // "/snapshots/00001000"
  // False for a half-written newest snapshot (a live run writing it, or a writer that was killed or
  // failed in the middle): fewer layers than the snapshot before it, or a layer without its weight.
  bool complete = true;
};
// The snapshots of a run file, ascending (links whose names are not all digits are ignored).
std::vector<SnapshotRef> snapshot_list(const RunReader& r);
// The layer groups of a snapshot: its children but `network` (the tensors outside the layers).
std::vector<std::string> snapshot_layers(const RunReader& r, const std::string& group);
inline constexpr const char* kSnapshotNetwork = "network";
// "10, 20, 30" (at most ten steps, the middle elided).
std::string snapshot_steps_str(const std::vector<SnapshotRef>& snaps);

// Reads a run file's summary; throws StoreError for files that are not xpand run files.
RunSummary summary_read(const std::string& run_path);

// Run files of <out>/runs (*.h5; temporaries end otherwise), sorted.
std::vector<std::string> run_files(const std::string& out_dir);

struct IndexResult {
  std::string path;
  int64_t runs = 0;
  int64_t reused = 0;                // rows taken over from the previous index (their files unchanged)
  std::vector<std::string> skipped;  // "file: why" for run files that could not be read
};

struct IndexOptions {
  // How long to wait for <out>/.index.lock (another process updating the index); < 0: no limit.
  // A stop signal (signals.h) ends the wait too. Giving up throws StoreError: the index is a cache.
  double lock_seconds = 60;
  // Reuse the rows of the previous index whose run files are unchanged (same mtime and size);
  // false reads every run file.
  bool incremental = true;
};

// Brings <out>/index.h5 up to date with <out>/runs. Throws StoreError when the index cannot be
// written or its lock is not had in time.
IndexResult index_rebuild(const std::string& out_dir, const IndexOptions& options = {});

}  // namespace xpand::store
