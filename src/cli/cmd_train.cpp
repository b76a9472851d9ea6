// `xpand train CONFIG [--set key=value]... [--out DIR] [--force]`: one configuration, one run file.
#include "cli/commands.h"
#include "config/config.h"
#include "core/error.h"
#include "train/trainer.h"

namespace xpand::cli {

Runner train_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("train", "train one configuration; results go to <out>/runs/<run_id>.h5");
  auto args = std::make_shared<ConfigArgs>();
  auto out = std::make_shared<std::string>();
  auto force = std::make_shared<bool>(false);
  add_config_args(cmd, args.get());
  cmd->add_option("--out", *out, "output directory (overrides output.dir)");
  cmd->add_flag("--force", *force, "train again even if this run already completed in the output directory");
  return [=]() {
    auto overrides = args->overrides;
    if (!out->empty()) overrides.push_back("output.dir=" + *out);
    auto cfg = config::Config::load_file(args->path, overrides);
    train::RunOptions opts;
    opts.force = *force;
    auto result = train::run_train(cfg, opts);
    train::print_summary({result});
    return result.status == "diverged" ? kExitDiverged : kExitOk;
  };
}

}  // namespace xpand::cli
