// `xpand train CONFIG... [--set key=value]... [--out DIR] [--force] [--ranks-per-run K]`: each
// configuration is one run file. Under mpirun/srun the world splits into groups of K consecutive
// ranks (default: one group of all ranks); each group trains data-parallel, and the groups share
// the configurations (group g takes configs g, g+G, g+2G, ...).
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>

#include "cli/commands.h"
#include "config/config.h"
#include "core/error.h"
#include "core/log.h"
#include "core/signals.h"
#include "dist/context.h"
#include "sweep/spec.h"
#include "train/trainer.h"

namespace xpand::cli {

Runner train_command(CLI::App& app) {
  auto* cmd =
      app.add_subcommand("train",
                         "train configurations; results go to <out>/runs/<run_id>.h5 (run under mpirun or srun for "
                         "data-parallel training)");
  auto paths = std::make_shared<std::vector<std::string>>();
  auto overrides = std::make_shared<std::vector<std::string>>();
  auto out = std::make_shared<std::string>();
  auto force = std::make_shared<bool>(false);
  auto ranks_per_run = std::make_shared<int>(0);
  auto axes = std::make_shared<std::vector<std::string>>();
  auto no_resume = std::make_shared<bool>(false);
  cmd->add_option("config", *paths, "configuration file(s) (YAML)")->required();
  cmd->add_option("--set", *overrides, "override a config key in every config: --set train.lr=0.01 (repeatable)")
      ->type_name("KEY=VALUE");
  cmd->add_option("--out", *out, "output directory (overrides output.dir)");
  cmd->add_flag("--force", *force,
                "train from scratch even if the run already completed (or has a checkpoint) in the output directory; "
                "the old files are kept as .prev-N");
  cmd->add_flag("--no-resume", *no_resume, "start over instead of continuing an unfinished run from its checkpoint");
  cmd->add_option("--axes", *axes,
                  "config keys recorded as sweep axes: root attributes of the run file and columns of index.h5 "
                  "(comma-separated, e.g. param.factor,param.depth)")
      ->delimiter(',');
  cmd->add_option("--ranks-per-run", *ranks_per_run,
                  "ranks per data-parallel run: the world splits into groups of K consecutive ranks "
                  "(K divides the world size; default: all ranks train each run together)")
      ->check(CLI::NonNegativeNumber);
  return [=]() {
    auto extra = *overrides;
    if (!out->empty()) extra.push_back("output.dir=" + *out);
    // Every config is validated before any rank trains or joins a collective.
    std::vector<config::Config> cfgs;
    for (const auto& p : *paths) {
      require_input(p);
      if (sweep::is_sweep_file(p))
        throw ConfigError(
            fmt::format("{}: a sweep file (base, grid, zip or seeds), not a config: run it with `xpand "
                        "sweep {}` (or `xpand plan {}` to list its points)",
                        p, p, p));
      cfgs.push_back(config::Config::load_file(p, extra));
    }
    std::vector<std::vector<std::pair<std::string, std::string>>> axis_values;
    for (const auto& c : cfgs) {
      axis_values.emplace_back();
      for (const auto& a : *axes) {
        if (!c.has(a)) throw ConfigError(fmt::format("--axes {}: not a key of the resolved configuration", a));
        axis_values.back().emplace_back(a, c.value_yaml(a));
      }
    }
    signals::install_preemption_handlers();
    dist::Context& ctx = *dist::Context::get();
    dist::Group group = ctx.split(*ranks_per_run);
    if (group.count > int(cfgs.size()) && ctx.world_rank() == 0)
      log::warn("{} groups of {} rank(s) but {} config(s): groups {}..{} have nothing to train", group.count,
                group.comm->size(), cfgs.size(), cfgs.size(), group.count - 1);
    std::vector<train::RunResult> results;
    int code = kExitOk;
    for (size_t i = size_t(group.index); i < cfgs.size(); i += size_t(group.count)) {
      train::RunOptions opts;
      opts.force = *force;
      opts.resume = !*no_resume;
      opts.axes = axis_values[i];
      opts.comm = group.comm;
      opts.console = group.comm->rank() == 0;
      opts.bar = opts.console;
      train::RunResult r;
      if (group.count > 1 && group.comm->size() == 1) {
        // A one-rank group fails alone: the other groups' runs go on (the run file says "failed").
        try {
          r = train::run_train(cfgs[i], opts);
        } catch (const Error& e) {
          std::fprintf(stderr, "xpand: error: group %d, %s: %s\n", group.index, (*paths)[i].c_str(), e.what());
          code = std::max(code, e.exit_code());
          continue;
        } catch (const std::exception& e) {
          std::fprintf(stderr, "xpand: error: group %d, %s: %s\n", group.index, (*paths)[i].c_str(), e.what());
          code = std::max(code, int(kExitFailure));
          continue;
        }
      } else {
        r = train::run_train(cfgs[i], opts);
      }
      if (r.status == store::RunStatus::Diverged) code = std::max(code, int(kExitDiverged));
      if (r.status == store::RunStatus::Preempted) {  // the remaining configs wait for the resubmission
        if (group.comm->rank() == 0) results.push_back(std::move(r));
        code = kExitPreempted;
        break;
      }
      if (group.comm->rank() == 0) results.push_back(std::move(r));
    }
    if (group.comm->rank() == 0 && !results.empty()) train::print_summary(results);
    if (group.comm->rank() == 0 && !results.empty() && group.count > 1)
      std::fprintf(stdout, "(group %d of %d; the other groups print their own runs)\n", group.index, group.count);
    return code;
  };
}

}  // namespace xpand::cli
