// Metric columns and run states (see columns.h).
#include "store/columns.h"

namespace xpand::store {

namespace {
constexpr std::string_view kStatusNames[] = {"running", "completed", "diverged", "preempted", "failed", "skipped"};
}

std::string_view status_name(RunStatus s) { return kStatusNames[int(s)]; }

std::optional<RunStatus> status_parse(std::string_view text) {
  for (int i = 0; i < int(std::size(kStatusNames)); ++i)
    if (kStatusNames[i] == text) return RunStatus(i);
  return std::nullopt;
}

std::ostream& operator<<(std::ostream& os, RunStatus s) { return os << status_name(s); }

const std::vector<Column>& train_columns() {
  static const std::vector<Column> cols = {
      {"step", "steps", "optimizer steps taken (1-based)", true},
      {"epoch", "epochs", "fractional epochs completed"},
      {"samples", "samples", "training samples seen, over every rank", true},
      {"loss", "nats",
       "training loss of the step's global batch (mean cross-entropy; with train.distill.from the distillation "
       "objective)"},
      {"lr", "1", "learning rate of the step"},
      {"grad_norm", "1", "L2 norm of the gradient before clipping"},
      {"time_step", "s", "wall time of the step: data, forward, backward, communication, optimizer"},
      {"mem_peak", "bytes", "peak resident set size of the process since training started", true},
      {"time_compute", "s", "time_step minus the communication the step waited for"},
      {"time_comm", "s", "summed in-flight time of the step's gradient all-reduces (0 on one rank)"},
      {"time_comm_exposed", "s", "time the step waited for communication (not hidden behind backward)"},
      {"comm_bytes", "bytes", "gradient bytes all-reduced per rank in the step", true},
  };
  return cols;
}

std::vector<Column> eval_columns(bool language_model, bool focus) {
  std::vector<Column> cols = {
      {"step", "steps", "optimizer steps taken when evaluated", true},
      {col::kTrainLoss, "nats", "mean loss of the collapsed network on the training split"},
      {col::kTrainAcc, "1", "accuracy (fraction correct) of the collapsed network on the training split"},
      {col::kTestLoss, "nats", "mean loss of the collapsed network on the test split"},
      {col::kTestAcc, "1", "accuracy of the collapsed network on the test split"},
      {col::kCollapseError, "1",
       "max |f_expanded - f_collapsed| / max |f_expanded| on the first test batch (attribute compares: the two forms)"},
  };
  if (language_model) {
    cols.push_back({"train_bpc", "bits", "train_loss in bits per character"});
    cols.push_back({"test_bpc", "bits", "test_loss in bits per character"});
  }
  if (focus) {
    cols.push_back({"test_focus_acc", "1", "test accuracy on the data.focus_classes samples"});
    cols.push_back({"test_rest_acc", "1", "test accuracy on the other samples"});
  }
  return cols;
}

std::vector<Column> all_metric_columns() {
  std::vector<Column> out = train_columns();
  for (const auto& c : eval_columns(true, true))
    if (c.name != "step") out.push_back(c);
  return out;
}

}  // namespace xpand::store
