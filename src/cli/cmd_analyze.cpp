// `xpand analyze RUN.h5 [--step N] [--ranks 8,32,128] [--gd-steps 200] [--error-threshold E] [--json]`:
// the low-rank questions about one snapshot of a run's weights: per layer the spectrum (numerical,
// entropy and stable rank, with --error-threshold the low-rank notebook's threshold rank, top
// singular values) and how well rank-r products fit it (truncated SVD vs gradient descent; relative
// and absolute Frobenius errors).
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <memory>

#include "cli/commands.h"
#include "config/config.h"
#include "core/error.h"
#include "core/log.h"
#include "param/analysis.h"
#include "store/index.h"
#include "store/run_file.h"

namespace xpand::cli {

namespace {

namespace fs = std::filesystem;

std::string dims_str(const std::vector<int64_t>& d) { return fmt::format("{}", fmt::join(d, "x")); }

struct LayerResult {
  std::string name;
  std::vector<int64_t> shape;  // as stored: (out, in) or (out, in, kh, kw)
  int64_t m = 0, n = 0;        // the analysed matrix: (out, in) or (out, in·kh·kw)
  param::Spectrum spec;
  std::vector<double> top;           // up to 5 largest singular values
  std::vector<param::RankFit> fits;  // requested ranks ≤ min(m, n)
  std::vector<int64_t> skipped;      // requested ranks > min(m, n)
  int64_t threshold_rank = -1;       // with --error-threshold: smallest r with ‖W − W_r‖_F <= it
};

using Snapshot = store::SnapshotRef;

// The dtype the run trained in (config key `dtype`): snapshots are float64 copies, but the
// numerical rank must judge small singular values at the precision the weights were held in, or a
// float32 weight would always look full-rank (its rounding noise is far above float64's tolerance).
torch::ScalarType run_dtype(const store::RunReader& r, std::string* name) {
  try {
    auto cfg = config::Config::load_string(r.attr_string("config"), r.path() + " (config attribute)");
    *name = cfg.get_string("dtype");
    if (*name == "float32") return torch::kFloat32;
    if (*name == "float64") return torch::kFloat64;
  } catch (const std::exception& e) {
    log::warn("{}: cannot read the run's dtype from its config ({}); judging numerical rank at float64", r.path(),
              e.what());
  }
  *name = "float64";
  return torch::kFloat64;
}

LayerResult analyze_layer(const store::RunReader& r, const Snapshot& snap, const std::string& layer,
                          torch::ScalarType dtype, const std::vector<int64_t>& ranks, int64_t gd_steps,
                          double threshold) {
  LayerResult out;
  out.name = layer;
  const std::string path = snap.group + "/" + layer + "/weight";
  if (!r.has_object(path))
    throw DataError(
        fmt::format("{}: snapshot {} layer '{}' has no weight dataset ({})", r.path(), snap.step, layer, path));
  auto data = r.read_array(path, &out.shape);
  if (out.shape.size() != 2 && out.shape.size() != 4)
    throw DataError(fmt::format("{}: {} has shape {}: expected (out, in) or (out, in, kh, kw)", r.path(), path,
                                out.shape.empty() ? "scalar" : dims_str(out.shape)));
  // from_blob borrows `data`; to(dtype) copies (clone for float64 so nothing outlives the vector).
  auto w = torch::from_blob(data.data(), out.shape, torch::kFloat64).clone().to(dtype);
  out.m = out.shape[0];
  out.n = w.numel() / std::max<int64_t>(out.m, 1);
  const int64_t k = std::min(out.m, out.n);
  std::vector<int64_t> fit_ranks;
  for (int64_t rk : ranks) (rk <= k ? fit_ranks : out.skipped).push_back(rk);
  try {
    out.spec = param::spectrum(w);
    out.fits = param::rank_fits(w, fit_ranks, gd_steps, 0);
    if (threshold >= 0) out.threshold_rank = param::threshold_rank(w, threshold);
  } catch (const DataError& e) {
    throw DataError(
        fmt::format("{}: snapshot {} layer '{}': {} (try an earlier --step)", r.path(), snap.step, layer, e.what()));
  }
  auto sv = out.spec.singular_values;
  for (int64_t i = 0; i < std::min<int64_t>(5, sv.numel()); ++i) out.top.push_back(sv[i].item<double>());
  return out;
}

std::string shape_cell(const LayerResult& l) {
  return l.shape.size() == 4 ? fmt::format("{} ({}x{})", dims_str(l.shape), l.m, l.n) : dims_str(l.shape);
}

void print_table(const std::string& file, const std::string& run_id, const Snapshot& snap,
                 const std::vector<Snapshot>& snaps, const std::string& dtype, int64_t gd_steps, double threshold,
                 const std::vector<LayerResult>& layers) {
  fmt::print("# {} ({}): snapshot at step {} (snapshots: {})\n", run_id, file, snap.step,
             store::snapshot_steps_str(snaps));
  fmt::print(
      "# spectrum: numerical rank at {} precision (tol = max(m,n)·eps·σ_max); entropy rank = exp(entropy "
      "of σ/Σσ); stable rank = ‖W‖_F²/‖W‖_2²{}\n",
      dtype,
      threshold >= 0
          ? fmt::format("; threshold rank = smallest r with ‖W − W_r‖_F <= {:g} (the low-rank notebook's)", threshold)
          : "");
  fmt::print("{:<24} {:<22} {:>8} {:>8} {:>9} {:>9} {:>9}  {}\n", "layer", "shape", "rank", "min(m,n)", "ent.rank",
             "stable", "thr.rank", "top-5 singular values");
  for (const auto& l : layers) {
    std::vector<std::string> top;
    for (double s : l.top) top.push_back(fmt::format("{:.4g}", s));
    fmt::print("{:<24} {:<22} {:>8} {:>8} {:>9.2f} {:>9.2f} {:>9}  {}\n", l.name, shape_cell(l), l.spec.numerical_rank,
               std::min(l.m, l.n), l.spec.effective_rank, l.spec.stable_rank,
               l.threshold_rank >= 0 ? std::to_string(l.threshold_rank) : "-", fmt::join(top, " "));
  }
  fmt::print(
      "\n# rank-r fits: Frobenius error ‖W − W_r‖_F, relative (/‖W‖_F) and absolute, of the truncated SVD (the "
      "optimum) and of {} alternating gradient steps on B·C (seed 0); compression = m·n / (r·(m+n))\n",
      gd_steps);
  fmt::print("{:<24} {:<22} {:>6} {:>11} {:>11} {:>12} {:>12} {:>11}\n", "layer", "shape", "r", "svd_error", "gd_error",
             "svd_abs", "gd_abs", "compression");
  for (const auto& l : layers) {
    for (const auto& f : l.fits)
      fmt::print("{:<24} {:<22} {:>6} {:>11.6f} {:>11.6f} {:>12.6g} {:>12.6g} {:>11.3f}\n", l.name, shape_cell(l),
                 f.rank, f.svd_error, f.gd_error, f.svd_abs_error, f.gd_abs_error, f.compression);
    for (int64_t r : l.skipped)
      fmt::print("{:<24} {:<22} {:>6}  skipped: r > min(m,n) = {}\n", l.name, shape_cell(l), r, std::min(l.m, l.n));
  }
}

void print_json(const std::string& file, const std::string& run_id, const Snapshot& snap,
                const std::vector<Snapshot>& snaps, const std::string& dtype, const std::vector<int64_t>& ranks,
                int64_t gd_steps, double threshold, const std::vector<LayerResult>& layers) {
  std::vector<int64_t> steps;
  for (const auto& s : snaps) steps.push_back(s.step);
  fmt::print(
      "{{\n  \"file\": {},\n  \"run_id\": {},\n  \"step\": {},\n  \"snapshot_steps\": [{}],\n"
      "  \"rank_dtype\": {},\n  \"ranks\": [{}],\n  \"gd_steps\": {},\n  \"gd_seed\": 0,\n"
      "  \"error_threshold\": {},\n  \"layers\": [\n",
      json_string(file), json_string(run_id), snap.step, fmt::join(steps, ", "), json_string(dtype),
      fmt::join(ranks, ", "), gd_steps, threshold >= 0 ? fmt::format("{}", threshold) : "null");
  for (size_t i = 0; i < layers.size(); ++i) {
    const auto& l = layers[i];
    std::vector<std::string> fits;
    for (const auto& f : l.fits)
      fits.push_back(fmt::format(
          "{{\"rank\": {}, \"svd_error\": {}, \"gd_error\": {}, \"svd_abs_error\": {}, \"gd_abs_error\": {}, "
          "\"compression\": {}}}",
          f.rank, f.svd_error, f.gd_error, f.svd_abs_error, f.gd_abs_error, f.compression));
    fmt::print(
        "    {{\"name\": {}, \"shape\": [{}], \"matrix\": [{}, {}], \"numerical_rank\": {}, \"min_dim\": {}, "
        "\"entropy_rank\": {}, \"effective_rank\": {}, \"threshold_rank\": {}, \"stable_rank\": {}, "
        "\"top_singular_values\": [{}], \"fits\": [{}], \"skipped_ranks\": [{}]}}{}\n",
        json_string(l.name), fmt::join(l.shape, ", "), l.m, l.n, l.spec.numerical_rank, std::min(l.m, l.n),
        l.spec.effective_rank, l.spec.effective_rank, l.threshold_rank >= 0 ? std::to_string(l.threshold_rank) : "null",
        l.spec.stable_rank, fmt::join(l.top, ", "), fmt::join(fits, ", "), fmt::join(l.skipped, ", "),
        i + 1 < layers.size() ? "," : "");
  }
  fmt::print("  ]\n}}\n");
}

}  // namespace

Runner analyze_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("analyze", "low-rank analysis of a run's snapshot: spectra and rank-r fits");
  auto file = std::make_shared<std::string>();
  auto step = std::make_shared<int64_t>(-1);
  auto ranks = std::make_shared<std::vector<int64_t>>(std::vector<int64_t>{8, 32, 128});
  auto gd_steps = std::make_shared<int64_t>(200);
  auto json = std::make_shared<bool>(false);
  auto threshold = std::make_shared<double>(-1);
  cmd->add_option("run", *file, "run file (.h5) written by xpand train")->required();
  auto* step_opt = cmd->add_option("--step", *step, "snapshot step (default: the last complete snapshot)");
  cmd->add_option("--ranks", *ranks, "ranks r to fit, comma-separated")->delimiter(',')->capture_default_str();
  cmd->add_option("--gd-steps", *gd_steps, "alternating gradient steps of the B·C fit")->capture_default_str();
  auto* thr_opt =
      cmd->add_option("--error-threshold", *threshold,
                      "also the threshold rank: the smallest r whose truncated SVD has ‖W − W_r‖_F <= this (absolute)");
  cmd->add_flag("--json", *json, "machine-readable output");
  return [=]() {
    if (thr_opt->count() > 0 && !(*threshold >= 0 && std::isfinite(*threshold)))
      throw ConfigError(fmt::format("--error-threshold: {} must be a finite number >= 0", *threshold));
    for (int64_t r : *ranks)
      if (r < 1) throw ConfigError(fmt::format("--ranks: rank {} must be >= 1", r));
    if (*gd_steps < 0) throw ConfigError(fmt::format("--gd-steps: {} must be >= 0", *gd_steps));
    std::vector<int64_t> rs = *ranks;
    std::sort(rs.begin(), rs.end());
    rs.erase(std::unique(rs.begin(), rs.end()), rs.end());

    // A missing path: exit 1 with the words every subcommand uses (require_input).
    require_input(*file);
    std::unique_ptr<store::RunReader> reader;
    try {
      reader = std::make_unique<store::RunReader>(*file);
    } catch (const store::StoreError& e) {
      throw DataError(fmt::format("{} (expected an xpand run file)", e.what()));  // names the path
    }
    const auto& r = *reader;
    if (!r.has_attr("schema_version"))
      throw DataError(fmt::format("{}: not an xpand run file (no schema_version attribute)", *file));
    const std::string run_id = r.has_attr("run_id") ? r.attr_string("run_id") : fs::path(*file).stem().string();
    auto snaps = store::snapshot_list(r);
    if (snaps.empty())
      throw DataError(
          fmt::format("{}: no snapshots in this run (status '{}'; a run writes one at its last step and "
                      "every output.snapshot_every steps)",
                      *file, r.has_attr("status") ? r.attr_string("status") : "unknown"));
    const Snapshot snap = pick_snapshot(snaps, *file, step_opt->count() > 0, *step);
    std::string dtype_name;
    auto dtype = run_dtype(r, &dtype_name);

    auto names = store::snapshot_layers(r, snap.group);
    if (names.empty()) throw DataError(fmt::format("{}: snapshot {} holds no layers", *file, snap.step));
    std::vector<LayerResult> layers;
    torch::NoGradGuard no_grad;
    for (const auto& name : names) {
      if (r.has_attr_at(snap.group + "/" + name, "nonlinear")) {
        log::warn("analyze: layer {} is a nonlinear expansion (no single weight); left out", name);
        continue;
      }
      log::debug("analyze: step {} layer {}", snap.step, name);
      layers.push_back(analyze_layer(r, snap, name, dtype, rs, *gd_steps, *threshold));
    }
    if (*json)
      print_json(*file, run_id, snap, snaps, dtype_name, rs, *gd_steps, *threshold, layers);
    else
      print_table(*file, run_id, snap, snaps, dtype_name, *gd_steps, *threshold, layers);
    return 0;
  };
}

}  // namespace xpand::cli
