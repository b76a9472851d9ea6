// What a run file's metric tables hold and the states a run can be in, defined once: the HDF5 sink
// creates its tables from these columns (each dataset carries its units and description as
// attributes), the trainer fills rows in this order, the index and `inspect` read them by these
// names, and docs/FORMAT.md lists them (a test checks that every column is documented).
#pragma once
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace xpand::store {

// The `status` attribute of a run file (skipped: a run found completed and not trained again; it is
// never written).
enum class RunStatus { Running, Completed, Diverged, Preempted, Failed, Skipped };
std::string_view status_name(RunStatus s);
// The status a file's text names; nullopt for anything else (a damaged or foreign file).
std::optional<RunStatus> status_parse(std::string_view text);
inline bool operator==(RunStatus s, std::string_view name) { return status_name(s) == name; }
inline bool operator!=(RunStatus s, std::string_view name) { return !(s == name); }
std::ostream& operator<<(std::ostream& os, RunStatus s);

// Names of the eval columns that the index, `inspect` and the resume check read back (the same names
// head the index's /summary datasets).
namespace col {
inline constexpr const char* kTrainLoss = "train_loss";
inline constexpr const char* kTrainAcc = "train_acc";
inline constexpr const char* kTestLoss = "test_loss";
inline constexpr const char* kTestAcc = "test_acc";
inline constexpr const char* kCollapseError = "collapse_error";
}  // namespace col

struct Column {
  std::string name, units, description;
  bool integer = false;  // stored as int64 (else float64)
};

// /metrics/train: one row per optimizer step, in this order.
const std::vector<Column>& train_columns();
// /metrics/eval: one row per evaluation; bits per character for language models, the focus-class
// accuracies with data.focus_classes.
std::vector<Column> eval_columns(bool language_model, bool focus);
// Every column either table may hold (the docs list these).
std::vector<Column> all_metric_columns();

}  // namespace xpand::store
