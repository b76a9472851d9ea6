// `xpand index DIR`: rebuilds DIR/index.h5 (external links to every run file and the /summary
// table) from DIR/runs; the trainer does the same whenever a run finishes.
#include <fmt/format.h>

#include <filesystem>

#include "cli/commands.h"
#include "cli/watchdog.h"
#include "core/error.h"
#include "core/log.h"
#include "store/index.h"
#include "store/run_file.h"

namespace xpand::cli {

Runner index_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("index", "rebuild DIR/index.h5 from the run files in DIR/runs");
  auto dir = std::make_shared<std::string>();
  cmd->add_option("dir", *dir, "output directory")->required();
  return [=]() {
    std::error_code ec;
    require_input(*dir, "", InputKind::Directory);
    if (!std::filesystem::is_directory(std::filesystem::path(*dir) / "runs", ec))
      throw ConfigError(fmt::format("{}: not an xpand output directory (no runs/ inside)", *dir));
    store::IndexResult res;
    try {
      ReadWatchdog wd(*dir, unsigned(150 + 20 * store::run_files(*dir).size()));
      store::IndexOptions io;
      io.incremental = false;  // the explicit command reads every run file again
      io.lock_seconds = 120;
      res = store::index_rebuild(*dir, io);
    } catch (const store::StoreError& e) {
      throw Error(e.what());
    }
    for (const auto& s : res.skipped) log::warn("skipped: {}", s);
    fmt::print("{}: {} run(s){}\n", res.path, res.runs,
               res.skipped.empty() ? "" : fmt::format(", {} unreadable file(s) skipped", res.skipped.size()));
    return res.skipped.empty() ? kExitOk : kExitFailure;
  };
}

}  // namespace xpand::cli
