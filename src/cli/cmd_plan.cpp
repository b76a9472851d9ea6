// `xpand plan CONFIG [--set ...] [--json]`: the resolved config, per-layer parameter counts
// (trainable and collapsed), the evaluation order and FLOPs per training step, without training and
// from shapes only (the layers' tensors live on the meta device: nothing the size of a weight).
// `xpand plan SWEEP.yaml`: every point of a sweep with its FLOPs, memory and bytes per step, and totals.
#include <fmt/format.h>

#include "cli/commands.h"
#include "config/config.h"
#include "data/dataset.h"
#include "model/network.h"
#include "sweep/runner.h"
#include "sweep/spec.h"
#include "train/trainer.h"

namespace xpand::cli {

namespace {

int plan_sweep(const std::string& path, const std::vector<std::string>& overrides, bool json) {
  sweep::Spec spec = sweep::spec_load(path, overrides);
  auto costs = sweep::sweep_costs(spec);
  double flops = 0, bytes = 0;
  for (size_t i = 0; i < costs.size(); ++i) {
    flops += costs[i].total_flops;
    bytes += costs[i].comm_bytes * double(costs[i].steps);
  }
  if (json) {
    fmt::print("{{\n  \"sweep\": {},\n  \"axes\": [", json_string(path));
    for (size_t i = 0; i < spec.axis_keys.size(); ++i)
      fmt::print("{}{}", i ? ", " : "", json_string(spec.axis_keys[i]));
    fmt::print("],\n  \"points\": [\n");
    for (size_t i = 0; i < spec.points.size(); ++i) {
      const auto& p = spec.points[i];
      const auto& c = costs[i];
      std::string axes;
      for (const auto& [k, v] : p.axes)
        axes += fmt::format("{}{}: {}", axes.empty() ? "" : ", ", json_string(k), json_string(v));
      fmt::print(
          "    {{\"run_id\": {}, \"axes\": {{{}}}, \"batch_size\": {}, \"trainable\": {}, \"steps\": {}, "
          "\"flops_per_step\": {:.0f}, \"total_flops\": {:.0f}, \"activation_memory_bytes\": {:.0f}, "
          "\"comm_bytes_per_step\": {:.0f}}}{}\n",
          json_string(p.run_id), axes, p.cfg.get_int("data.batch_size"), c.trainable, c.steps, c.flops_per_step,
          c.total_flops, c.memory_bytes, c.comm_bytes, i + 1 < spec.points.size() ? "," : "");
    }
    fmt::print("  ],\n  \"total_flops\": {:.0f},\n  \"total_comm_bytes\": {:.0f}\n}}\n", flops, bytes);
    return 0;
  }
  fmt::print("# sweep {}: {} points over {}\n", path, spec.points.size(), fmt::join(spec.axis_keys, ", "));
  fmt::print(
      "# FLOPs are forward+backward at the configured batch; memory = activations kept for backward; "
      "bytes = gradient bytes all-reduced per step in data-parallel training\n");
  fmt::print("{:<28} {:<40} {:>11} {:>8} {:>11} {:>11} {:>10} {:>11}\n", "run_id", "axes", "trainable", "steps",
             "FLOPs/step", "FLOPs", "act mem", "bytes/step");
  for (size_t i = 0; i < spec.points.size(); ++i) {
    const auto& p = spec.points[i];
    const auto& c = costs[i];
    std::string axes;
    for (const auto& [k, v] : p.axes) axes += fmt::format("{}{}={}", axes.empty() ? "" : " ", k, v);
    fmt::print("{:<28} {:<40} {:>11} {:>8} {:>11.4g} {:>11.4g} {:>9.2f}M {:>11.4g}\n", p.run_id, axes, c.trainable,
               c.steps, c.flops_per_step, c.total_flops, c.memory_bytes / 1048576.0, c.comm_bytes);
  }
  fmt::print("{:<28} {:<40} {:>11} {:>8} {:>11} {:>11.4g} {:>10} {:>11.4g}\n", "total", "", "", "", "", flops, "",
             bytes);
  return 0;
}

}  // namespace

Runner plan_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "plan", "show what a configuration (or every point of a sweep file) would train: parameters, FLOPs, order");
  auto args = std::make_shared<ConfigArgs>();
  auto json = std::make_shared<bool>(false);
  add_config_args(cmd, args.get());
  cmd->add_flag("--json", *json, "machine-readable output");
  return [=]() {
    require_input(args->path);
    if (sweep::is_sweep_file(args->path)) return plan_sweep(args->path, args->overrides, *json);
    auto cfg = config::Config::load_file(args->path, args->overrides);
    torch::manual_seed(cfg.get_int("seed"));
    auto ds = data::dataset_load(cfg, torch::kCPU);
    model::network_check(cfg, ds, 1);  // options and size from shapes, before the weights are allocated
    // The layers' tensors on the meta device: the plan comes from shapes, no weight is allocated
    // or drawn (biases, norms and embeddings, a few per layer, are still real).
    model::NetworkPtr net = train::network_shapes(cfg, ds);  // from shapes: no weight allocated
    int64_t batch = cfg.get_int("data.batch_size");
    auto rep = model::network_report(*net, batch);
    if (*json) {
      fmt::print("{{\n  \"run_id\": {},\n  \"config\": {},\n  \"batch_size\": {},\n  \"layers\": [\n",
                 json_string(train::run_id(cfg)), json_string(cfg.to_yaml()), batch);
      for (size_t i = 0; i < rep.layers.size(); ++i) {
        const auto& l = rep.layers[i];
        fmt::print(
            "    {{\"name\": {}, \"kind\": {}, \"shape\": {}, \"order\": {}, \"trainable\": {}, "
            "\"collapsed\": {}, \"flops_per_step\": {:.0f}, \"act_first_flops_per_step\": {:.0f}, "
            "\"activation_memory_bytes\": {:.0f}, \"cut_elements\": {}}}{}\n",
            json_string(l.name), json_string(l.kind), json_string(l.shape), json_string(l.order), l.trainable,
            l.collapsed, l.flops, l.act_first_flops, l.memory_bytes, l.cut, i + 1 < rep.layers.size() ? "," : "");
      }
      fmt::print(
          "  ],\n  \"trainable\": {},\n  \"collapsed\": {},\n  \"flops_per_step\": {:.0f},\n"
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
