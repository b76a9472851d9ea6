// `xpand sweep SPEC [--out DIR] [--ranks-per-run K] [--set key=value]... [--force]`: runs every point
// of a sweep file (sweep/spec.h) with the world's ranks split into groups; rerunning the same command
// skips completed points and resumes interrupted ones from their checkpoints.
#include <fmt/format.h>

#include <cstdio>
#include <filesystem>
#include <map>

#include "cli/commands.h"
#include "core/error.h"
#include "core/signals.h"
#include "dist/context.h"
#include "sweep/runner.h"
#include "sweep/spec.h"

namespace xpand::cli {

Runner sweep_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "sweep",
      "train every point of a sweep file (grid, zip, seeds over config keys); resumable, shareable by "
      "several jobs through the output directory");
  auto spec_path = std::make_shared<std::string>();
  auto overrides = std::make_shared<std::vector<std::string>>();
  auto out = std::make_shared<std::string>();
  auto opts = std::make_shared<sweep::RunnerOptions>();
  cmd->add_option("spec", *spec_path, "sweep file (YAML)")->required();
  cmd->add_option("--set", *overrides, "override a config key in every point: --set train.epochs=1 (repeatable)")
      ->type_name("KEY=VALUE");
  cmd->add_option("--out", *out, "output directory (overrides output.dir)");
  cmd->add_option("--ranks-per-run", opts->ranks_per_run,
                  "ranks per point: the world splits into groups of K consecutive ranks (K divides the world size)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--lease", opts->lease_seconds,
                  "seconds after which a point whose owner stopped renewing its claim is taken over")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--progress", opts->progress_seconds,
                  "seconds between progress lines when stderr is not a terminal (a terminal shows a live bar); 0: "
                  "neither")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_flag("--force", opts->force, "train completed points again (old files kept as .prev-N)");
  return [=]() {
    auto extra = *overrides;
    if (!out->empty()) extra.push_back("output.dir=" + *out);
    // Every point is expanded and validated before any rank trains or joins a collective.
    require_input(*spec_path);
    sweep::Spec spec = sweep::spec_load(*spec_path, extra);
    signals::install_preemption_handlers();
    const int code = sweep::sweep_run(spec, *opts);
    // The sweep's runs as `xpand inspect` shows them, on stdout (world rank 0, not after a signal).
    if (code != kExitPreempted && dist::Context::get()->world_rank() == 0) {
      namespace fs = std::filesystem;
      std::map<std::string, std::vector<std::string>> by_dir;
      for (const auto& p : spec.points) {
        const std::string dir = p.cfg.get_string("output.dir");
        const std::string f = (fs::path(dir) / "runs" / (p.run_id + ".h5")).string();
        std::error_code ec;
        if (fs::is_regular_file(f, ec)) by_dir[dir].push_back(f);
      }
      for (const auto& [dir, files] : by_dir) print_run_table(files, dir);
      std::fflush(stdout);
    }
    return code;
  };
}

}  // namespace xpand::cli
