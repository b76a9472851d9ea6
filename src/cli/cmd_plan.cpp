// `xpand plan CONFIG [--set ...] [--json]`: the resolved config, per-layer parameter counts
// (trainable and collapsed), the evaluation order and FLOPs per training step, without training and
// from shapes only (the layers' tensors live on the meta device: nothing the size of a weight).
// `xpand plan CONFIG --ranks N [--link-gbps B]`: dist.cut auto's choice per layer for a job of N ranks.
// `xpand plan SWEEP.yaml`: every point of a sweep with its FLOPs, memory and bytes per step, and totals.
#include <fmt/format.h>

#include "cli/commands.h"
#include "config/config.h"
#include "data/dataset.h"
#include "model/network.h"
#include "sweep/runner.h"
#include "sweep/spec.h"
#include "train/cut_chooser.h"
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

struct CutArgs {
  int ranks = 0;
  double link_gbps = 100, latency_us = 5, gemm_gflops = 0, overlap = 0;
  double measured = 0;  // FLOP/s of a 1024^3 GEMM here, measured once when gemm_gflops is not given
};

// `xpand plan CONFIG --ranks N`: dist.cut auto's choice per layer for a job of N ranks that does not
// exist yet, from the planner's FLOPs at a GEMM rate and a ring all-reduce on links of B Gbit/s.
int plan_cut(const config::Config& cfg, model::Network& net, CutArgs& a, bool json) {
  const int64_t batch = cfg.get_int("data.batch_size"), accum = cfg.get_int("train.grad_accum");
  if (batch / a.ranks / accum < 1)
    throw ConfigError(
        fmt::format("--ranks {}: data.batch_size {} (the global batch) leaves no row for a rank's micro-batch with "
                    "train.grad_accum {}; raise data.batch_size (--set data.batch_size=...) for a weak-scaling job",
                    a.ranks, batch, accum));
  const int64_t micro = batch / a.ranks / accum;
  const std::string how = a.gemm_gflops > 0 ? "--gemm-gflops" : "measured here, 1024x1024x1024";
  if (a.gemm_gflops <= 0 && a.measured <= 0)
    a.measured = train::gemm_rate(
        1024, 1024, 1024,
        torch::TensorOptions(cfg.get_string("dtype") == "float64" ? torch::kFloat64 : torch::kFloat32));
  const double rate = a.gemm_gflops > 0 ? a.gemm_gflops * 1e9 : a.measured;
  const int64_t elem = cfg.get_string("dtype") == "float64" ? 8 : 4;
  auto layers = train::layer_costs_from_flops(net, micro, rate, accum, elem);
  train::LinkModel link = train::link_for_ranks(a.ranks, a.link_gbps, a.latency_us, a.overlap);
  link.first_bucket_mb = cfg.get_float("dist.first_bucket_mb"), link.bucket_mb = cfg.get_float("dist.bucket_mb");
  // Work outside the layers' choice: attention matmuls, and the tensors outside the slots.
  auto rep = model::network_report(net, micro);
  double other_flops = 0;
  int64_t other_bytes = 0;
  for (const auto& l : rep.layers) {
    if (l.name == "(other)") other_bytes = l.cut * elem;
    if (l.kind == "-" && l.name != "(other)") other_flops += l.flops;
  }
  const double other_s = other_flops * double(accum) / rate;
  const double first = cfg.get_float("dist.first_bucket_mb"), cap = cfg.get_float("dist.bucket_mb");
  auto decisions = train::choose_cuts(layers, link);
  struct Mode {
    std::string name;
    train::StepPrediction p;
  };
  std::vector<Mode> modes;
  modes.push_back({"auto", train::predict_step(decisions, other_s, other_bytes, link, first, cap)});
  for (const char* m : {"narrowest", "planned", "raw"})
    modes.push_back(
        {m, train::predict_step(train::fixed_cuts(layers, link, m), other_s, other_bytes, link, first, cap)});
  // One rank: no communication, the planner's order everywhere.
  const double t1 = train::predict_step(train::fixed_cuts(layers, link, "raw"), other_s, 0, link, first, cap).compute_s;
  if (json) {
    fmt::print(
        "{{\n  \"ranks\": {},\n  \"rows_per_rank\": {},\n  \"link_gbps\": {},\n  \"latency_us\": {},\n"
        "  \"overlap\": {},\n  \"gemm_gflops\": {:.6g},\n  \"layers\": [\n",
        a.ranks, micro, a.link_gbps, a.latency_us, a.overlap, rate * 1e-9);
    for (size_t i = 0; i < decisions.size(); ++i) {
      const auto& d = decisions[i];
      const auto& l = layers[i];
      fmt::print(
          "    {{\"name\": {}, \"choice\": {}, \"raw_bytes\": {}, \"cut_bytes\": {}, \"raw_s\": {:.6g}, "
          "\"cut_s\": {:.6g}}}{}\n",
          json_string(d.name), json_string(d.choice), l.raw.bytes, l.cut.bytes, d.raw_cost_s, d.cut_cost_s,
          i + 1 < decisions.size() ? "," : "");
    }
    fmt::print("  ],\n  \"one_rank_step_s\": {:.6g},\n  \"modes\": {{", t1);
    for (size_t i = 0; i < modes.size(); ++i) {
      const auto& p = modes[i].p;
      fmt::print(
          "{}\n    {}: {{\"step_s\": {:.6g}, \"compute_s\": {:.6g}, \"exposed_s\": {:.6g}, \"bytes\": {}, "
          "\"efficiency\": {:.6g}}}",
          i ? "," : "", json_string(modes[i].name), p.step_s, p.compute_s, p.exposed_s, p.bytes, t1 / p.step_s);
    }
    fmt::print("\n  }}\n}}\n");
    return 0;
  }
  fmt::print(
      "# dist.cut auto for {} ranks: {} sample(s) per rank and micro-batch; ring all-reduce on {} Gbit/s per rank, "
      "{} us per tree step, overlap {}; GEMM {:.4g} GFLOP/s ({})\n",
      a.ranks, micro, a.link_gbps, a.latency_us, a.overlap, rate * 1e-9, how);
  fmt::print("# cost = compute (planner FLOPs / GEMM rate) + exposed all-reduce time, per step\n");
  const char* row = "{:<24} {:<9} {:>11} {:>11} {:>12} {:>12}  {}\n";
  fmt::print(row, "layer", "kind", "raw MB", "cut MB", "raw ms", "cut ms", "choice");
  const auto slots = net.slots();
  for (size_t i = 0; i < decisions.size(); ++i) {
    const auto& d = decisions[i];
    const auto& l = layers[i];
    fmt::print(row, d.name, slots[i].param->kind(), fmt::format("{:.3f}", l.raw.bytes / 1e6),
               fmt::format("{:.3f}", l.cut.bytes / 1e6), fmt::format("{:.4g}", d.raw_cost_s * 1e3),
               fmt::format("{:.4g}", d.cut_cost_s * 1e3), d.choice);
  }
  fmt::print("# predicted step (layers and attention; the optimizer is not counted), one rank: {:.4g} ms\n", t1 * 1e3);
  for (const auto& m : modes)
    fmt::print(
        "#   {:<9} step {:>10.4g} ms = compute {:.4g} + exposed comm {:.4g} ({:.4g} MB in {} bucket(s)); "
        "efficiency {:.2f}\n",
        m.name, m.p.step_s * 1e3, m.p.compute_s * 1e3, m.p.exposed_s * 1e3, m.p.bytes / 1e6, m.p.buckets,
        t1 / m.p.step_s);
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
  auto cut = std::make_shared<CutArgs>();
  cmd->add_option("--ranks", cut->ranks,
                  "dist.cut auto's per-layer choice and predicted step time for a job of this many ranks "
                  "(data.batch_size is the global batch)")
      ->check(CLI::Range(1, 1 << 24));
  cmd->add_option("--link-gbps", cut->link_gbps, "with --ranks: link bandwidth per rank, Gbit/s")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--latency-us", cut->latency_us, "with --ranks: latency per tree step, microseconds")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--gemm-gflops", cut->gemm_gflops,
                  "with --ranks: GEMM rate of one rank, GFLOP/s (default: measured on this machine)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--overlap", cut->overlap, "with --ranks: fraction of communication hidden behind backward (0..1)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  return [=]() {
    require_input(args->path);
    if (cut->ranks == 0)
      for (const char* flag : {"--link-gbps", "--latency-us", "--gemm-gflops", "--overlap"})
        if (cmd->count(flag) > 0)
          throw ConfigError(fmt::format("{} prices a data-parallel job: give its size with --ranks N", flag));
    if (sweep::is_sweep_file(args->path) && cut->ranks > 0) {  // the choice for every point of the sweep
      sweep::Spec spec = sweep::spec_load(args->path, args->overrides);
      if (*json) fmt::print("[\n");
      for (size_t i = 0; i < spec.points.size(); ++i) {
        const auto& p = spec.points[i];
        torch::manual_seed(p.cfg.get_int("seed"));
        auto ds = data::dataset_load(p.cfg, torch::kCPU);
        model::network_check(p.cfg, ds, 1);
        model::NetworkPtr net = train::network_shapes(p.cfg, ds);
        if (*json && i) fmt::print(",\n");
        if (!*json) fmt::print("## {}\n", p.run_id);
        plan_cut(p.cfg, *net, *cut, *json);
      }
      if (*json) fmt::print("]\n");
      return 0;
    }
    if (sweep::is_sweep_file(args->path)) return plan_sweep(args->path, args->overrides, *json);
    auto cfg = config::Config::load_file(args->path, args->overrides);
    torch::manual_seed(cfg.get_int("seed"));
    auto ds = data::dataset_load(cfg, torch::kCPU);
    model::network_check(cfg, ds, 1);  // options and size from shapes, before the weights are allocated
    // The layers' tensors on the meta device: the plan comes from shapes, no weight is allocated
    // or drawn (biases, norms and embeddings, a few per layer, are still real).
    model::NetworkPtr net = train::network_shapes(cfg, ds);  // from shapes: no weight allocated
    int64_t batch = cfg.get_int("data.batch_size");
    if (cut->ranks > 0) return plan_cut(cfg, *net, *cut, *json);
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
