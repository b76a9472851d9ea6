// `xpand collapse RUN.h5 [--step N] -o MODEL.h5|MODEL.pt [--force]`: the collapsed network of one
// snapshot as a model file (train/model_file.h, docs/FORMAT.md): every tensor under its PyTorch
// state_dict name, with the architecture and input normalisation. Written to a temporary file and
// renamed, so a failure leaves nothing half-written.
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "cli/commands.h"
#include "cli/watchdog.h"
#include "core/error.h"
#include "store/index.h"
#include "store/run_file.h"
#include "train/model_file.h"

namespace xpand::cli {

Runner collapse_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "collapse", "export the collapsed network of a run's snapshot as a model file (.h5, or .pt for torch.load)");
  auto file = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto step = std::make_shared<int64_t>(-1);
  auto force = std::make_shared<bool>(false);
  cmd->add_option("run", *file, "run file (.h5)")->required();
  auto* step_opt = cmd->add_option("--step", *step, "snapshot step (default: the last complete snapshot)");
  cmd->add_option("-o,--output", *out, "model file to write: MODEL.h5 (HDF5) or MODEL.pt (torch.load)")->required();
  cmd->add_flag("--force", *force, "overwrite the model file if it exists");
  return [=]() {
    namespace fs = std::filesystem;
    std::error_code ec;
    require_input(*file);
    if (fs::exists(*out, ec) && !*force)
      throw ConfigError(fmt::format("-o {}: the file exists (use --force to overwrite it)", *out));
    const std::string ext = fs::path(*out).extension().string();
    if (ext != ".h5" && ext != ".pt")
      throw ConfigError(fmt::format("-o {}: a model file is MODEL.h5 (HDF5) or MODEL.pt (torch.load)", *out));
    if (fs::exists(*out, ec) && fs::equivalent(*file, *out, ec))
      throw ConfigError(fmt::format("-o {}: that is the run file itself", *out));
    const fs::path parent = fs::path(*out).parent_path();
    if (!parent.empty() && !fs::is_directory(parent, ec))
      throw ConfigError(fmt::format("-o {}: directory {} does not exist", *out, parent.string()));
    ReadWatchdog wd(*file, 20);
    store::RunSummary s;
    std::vector<store::SnapshotRef> snaps;
    try {
      s = store::summary_read(*file);  // an xpand run file of a known schema
      snaps = store::snapshot_list(store::RunReader(*file));
    } catch (const store::StoreError& e) {
      throw DataError(e.what());
    }
    if (snaps.empty()) throw DataError(fmt::format("{}: no snapshots (status '{}')", *file, s.status));
    const store::SnapshotRef snap = pick_snapshot(snaps, *file, step_opt->count() > 0, *step);
    if (!snap.complete)
      throw DataError(fmt::format("{}: the snapshot at step {} is incomplete (its run did not finish writing it)",
                                  *file, snap.step));
    const train::ModelFile m = train::model_from_run(*file, snap.group, snap.step);
    train::model_write(m, *out);
    int64_t params = 0;
    for (const auto& t : m.tensors) params += int64_t(t.data.size());
    fmt::print("{}: {} model, {} tensors, {} values, snapshot at step {} of {}\n", *out, m.kind, m.tensors.size(),
               params, snap.step, s.run_id);
    return kExitOk;
  };
}

}  // namespace xpand::cli
