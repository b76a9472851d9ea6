// `xpand plan CONFIG [--set ...] [--json]`: the resolved config, per-layer parameter counts
// (trainable and collapsed), the evaluation order and FLOPs per training step, without training.
#include <fmt/format.h>

#include "cli/commands.h"
#include "config/config.h"
#include "data/dataset.h"
#include "model/network.h"
#include "train/trainer.h"

namespace xpand::cli {

Runner plan_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("plan", "show what a configuration would train: parameters, FLOPs, order");
  auto args = std::make_shared<ConfigArgs>();
  auto json = std::make_shared<bool>(false);
  add_config_args(cmd, args.get());
  cmd->add_flag("--json", *json, "machine-readable output");
  return [=]() {
    auto cfg = config::Config::load_file(args->path, args->overrides);
    torch::manual_seed(cfg.get_int("seed"));
    auto ds = data::dataset_load(cfg, torch::kCPU);
    auto net = model::network_build(cfg, ds, param::factory_from_config(cfg));
    int64_t batch = cfg.get_int("data.batch_size");
    auto rep = model::network_report(*net, batch);
    if (*json) {
      fmt::print("{{\n  \"run_id\": {},\n  \"config\": {},\n  \"batch_size\": {},\n  \"layers\": [\n",
                 json_string(train::run_id(cfg)), json_string(cfg.to_yaml()), batch);
      for (size_t i = 0; i < rep.layers.size(); ++i) {
        const auto& l = rep.layers[i];
        fmt::print("    {{\"name\": {}, \"kind\": {}, \"shape\": {}, \"order\": {}, \"trainable\": {}, "
                   "\"collapsed\": {}, \"flops_per_step\": {:.0f}, \"act_first_flops_per_step\": {:.0f}, "
                   "\"activation_memory_bytes\": {:.0f}, \"cut_elements\": {}}}{}\n",
                   json_string(l.name), json_string(l.kind), json_string(l.shape), json_string(l.order), l.trainable,
                   l.collapsed, l.flops, l.act_first_flops, l.memory_bytes, l.cut, i + 1 < rep.layers.size() ? "," : "");
      }
      fmt::print("  ],\n  \"trainable\": {},\n  \"collapsed\": {},\n  \"flops_per_step\": {:.0f},\n"
                 "  \"act_first_flops_per_step\": {:.0f},\n  \"cut_elements\": {}\n}}\n",
                 rep.trainable, rep.collapsed, rep.flops, rep.act_first_flops, rep.cut);
      return 0;
    }
    fmt::print("# resolved config ({})\n{}\n", train::run_id(cfg), cfg.to_yaml());
    fmt::print("# layers at batch {} ({} on {}); FLOPs are forward+backward per step; cut = elements all-reduced\n",
               batch, cfg.get_string("model.kind"), ds.name);
    const char* row = "{:<22} {:<8} {:<22} {:<10} {:>11} {:>11} {:>11} {:>11} {:>10} {:>11}\n";
    fmt::print(row, "layer", "kind", "shape", "order", "trainable", "collapsed", "FLOPs", "act-first", "act mem",
               "cut");
    auto mib = [](double b) { return b > 0 ? fmt::format("{:.2f}MiB", b / 1048576.0) : std::string("-"); };
    for (const auto& l : rep.layers)
      fmt::print(row, l.name, l.kind, l.shape, l.order, l.trainable, l.collapsed, fmt::format("{:.4g}", l.flops),
                 fmt::format("{:.4g}", l.act_first_flops), mib(l.memory_bytes), l.cut);
    fmt::print(row, "total", "", "", "", rep.trainable, rep.collapsed, fmt::format("{:.4g}", rep.flops),
               fmt::format("{:.4g}", rep.act_first_flops), "", rep.cut);
    return 0;
  };
}

}  // namespace xpand::cli
