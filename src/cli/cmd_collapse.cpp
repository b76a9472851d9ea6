// `xpand collapse RUN.h5 [--step N] -o MODEL.h5 [--force]`: the collapsed dense weights of one
// snapshot as a small HDF5 file: /<layer>/weight (float64) with the run id, step and config as
// root attributes. Written to a temporary file and renamed, so a failure leaves nothing half-written.
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "cli/commands.h"
#include "cli/watchdog.h"
#include "core/error.h"
#include "store/index.h"
#include "store/run_file.h"

namespace xpand::cli {

Runner collapse_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("collapse", "write the collapsed dense weights of a run's snapshot to a model file");
  auto file = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto step = std::make_shared<int64_t>(-1);
  auto force = std::make_shared<bool>(false);
  cmd->add_option("run", *file, "run file (.h5)")->required();
  auto* step_opt = cmd->add_option("--step", *step, "snapshot step (default: the last complete snapshot)");
  cmd->add_option("-o,--output", *out, "model file to write")->required();
  cmd->add_flag("--force", *force, "overwrite the model file if it exists");
  return [=]() {
    namespace fs = std::filesystem;
    std::error_code ec;
    require_input(*file);
    if (fs::exists(*out, ec) && !*force)
      throw ConfigError(fmt::format("-o {}: the file exists (use --force to overwrite it)", *out));
    const fs::path parent = fs::path(*out).parent_path();
    if (!parent.empty() && !fs::is_directory(parent, ec))
      throw ConfigError(fmt::format("-o {}: directory {} does not exist", *out, parent.string()));
    const std::string tmp = fmt::format("{}.tmp-{}", *out, ::getpid());
    try {
      ReadWatchdog wd(*file, 20);
      store::RunSummary s = store::summary_read(*file);  // an xpand run file of a known schema
      store::RunReader r(*file);
      auto snaps = store::snapshot_list(r);
      if (snaps.empty()) throw DataError(fmt::format("{}: no snapshots (status '{}')", *file, s.status));
      const store::SnapshotRef snap = pick_snapshot(snaps, *file, step_opt->count() > 0, *step);
      auto layers = r.children(snap.group);
      if (layers.empty()) throw DataError(fmt::format("{}: snapshot {} holds no layers", *file, snap.step));
      store::RunWriter w(tmp);
      w.set_attr("kind", "xpand collapsed model");
      w.set_attr("run_id", s.run_id);
      w.set_attr("step", snap.step);
      w.set_attr("source", fs::absolute(*file).string());
      if (r.has_attr("config")) w.set_attr("config", r.attr_string("config"));
      int64_t params = 0;
      for (const auto& layer : layers) {
        const std::string src = snap.group + "/" + layer + "/weight";
        if (r.has_attr_at(snap.group + "/" + layer, "nonlinear"))
          throw DataError(
              fmt::format("{}: layer {} is a nonlinear expansion (ReLU between its factors): it is not one "
                          "linear map, so the network has no collapsed model",
                          *file, layer));
        if (!r.has_object(src)) throw DataError(fmt::format("{}: {} is missing", *file, src));
        std::vector<int64_t> shape;
        auto data = r.read_array(src, &shape);
        w.write_array("/" + layer + "/weight", shape, data.data());
        params += int64_t(data.size());
      }
      w.close();
      store::commit_file(tmp, *out);
      fmt::print("{}: {} layer(s), {} weights, snapshot at step {} of {}\n", *out, layers.size(), params, snap.step,
                 s.run_id);
      return kExitOk;
    } catch (...) {
      fs::remove(tmp, ec);
      try {
        throw;
      } catch (const store::StoreError& e) {
        throw DataError(e.what());
      }
    }
  };
}

}  // namespace xpand::cli
