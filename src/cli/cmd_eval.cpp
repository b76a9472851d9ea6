// `xpand eval MODEL.h5|RUN.h5 [--step N] [--split test|train] [--data DIR] [--set key=value]
// [--all] [--json] [--predictions OUT.h5]`: the loss and accuracy of an exported model, or of a
// run's snapshot collapsed the same way, on a split of its dataset. By default on the samples the
// run's evaluations used (data.eval_max_samples; for chars the data.eval_batches fixed windows),
// so the numbers are the run's recorded test_loss / test_acc at that step.
//   OUT.h5: /pred   argmax of the logits per sample (N) or per position (N, T)
//           /label  the true class or next token, same shape
//           /loss   the mean cross-entropy of each sample (mean over its positions for chars)
//           /input  the token windows (chars only; images are the split's first N in file order)
#include <fmt/format.h>

#include <cmath>
#include <filesystem>

#include "cli/commands.h"
#include "core/error.h"
#include "core/log.h"
#include "data/dataset.h"
#include "store/index.h"
#include "store/run_file.h"
#include "train/evaluation.h"
#include "train/model_file.h"

namespace xpand::cli {

namespace {

train::ModelFile load(const std::string& file, bool step_given, int64_t step) {
  if (train::is_model_file(file)) {
    if (step_given) throw ConfigError(fmt::format("--step: {} is a model file (one step), not a run file", file));
    return train::model_read(file);
  }
  std::vector<store::SnapshotRef> snaps;
  try {
    store::summary_read(file);  // an xpand run file of a known schema
    snaps = store::snapshot_list(store::RunReader(file));
  } catch (const store::StoreError& e) {
    throw DataError(fmt::format("{} (neither a model file from xpand collapse nor a run file)", e.what()));
  }
  if (snaps.empty()) throw DataError(fmt::format("{}: no snapshots to evaluate", file));
  const store::SnapshotRef snap = pick_snapshot(snaps, file, step_given, step);
  if (!snap.complete)
    throw DataError(
        fmt::format("{}: the snapshot at step {} is incomplete (its run did not finish writing it)", file, snap.step));
  return train::model_from_run(file, snap.group, snap.step);
}

}  // namespace

Runner eval_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("eval", "loss and accuracy of a model file or a run's snapshot on its dataset");
  struct Args {
    std::string file, split = "test", data, predictions;
    std::vector<std::string> overrides;
    int64_t step = -1;
    bool all = false, json = false, force = false;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("model", a->file, "model file (xpand collapse) or run file (.h5)")->required();
  auto* step_opt = cmd->add_option("--step", a->step, "run file: snapshot step (default: the last complete one)");
  cmd->add_option("--split", a->split, "dataset split: test (default) or train")
      ->check(CLI::IsMember({"test", "train"}));
  cmd->add_option("--data", a->data, "dataset directory or text file (data.root) instead of the run's");
  cmd->add_option("--set", a->overrides, "override a data key of the model's config (key=value), repeatable");
  cmd->add_flag("--all", a->all,
                "images: the whole split (default: the samples the run's evaluations used; chars always use its "
                "fixed validation windows)");
  cmd->add_flag("--json", a->json, "print the result as JSON");
  cmd->add_option("--predictions", a->predictions, "write per-sample predictions, labels and losses to this .h5");
  cmd->add_flag("--force", a->force, "overwrite the --predictions file if it exists");
  return [=]() {
    namespace fs = std::filesystem;
    require_input(a->file);
    std::error_code ec;
    if (!a->predictions.empty() && fs::exists(a->predictions, ec) && !a->force)
      throw ConfigError(fmt::format("--predictions {}: the file exists (use --force to overwrite it)", a->predictions));
    for (const auto& o : a->overrides)
      if (o.rfind("data.", 0) != 0)
        throw ConfigError(fmt::format("--set {}: eval changes data keys only (the model is what the file holds)", o));
    const train::ModelFile m = load(a->file, step_opt->count() > 0, a->step);
    std::vector<std::string> overrides = a->overrides;
    if (!a->data.empty()) {
      require_input(a->data, "--data", InputKind::FileOrDirectory);
      overrides.push_back("data.root=" + a->data);
    }
    // Images are read raw (divided by 255) and normalised with the model's constants, exactly as
    // its run did, whatever the data at hand would give.
    const config::Config model_cfg = train::model_config(m, overrides);
    const bool images = model_cfg.has("data.normalize") && m.kind != "gpt";
    if (images) overrides.push_back("data.normalize=unit");
    const config::Config cfg = train::model_config(m, overrides);
    const torch::Device device(torch::kCPU);
    data::Dataset ds = data::dataset_load(cfg, device);
    const data::Dataset shapes = train::model_dataset_shapes(m, cfg);
    if (ds.sample_shape != shapes.sample_shape || ds.num_classes != shapes.num_classes)
      throw DataError(fmt::format("{}: the dataset has samples {} and {} classes, the model takes {} and {}", ds.source,
                                  fmt::join(ds.sample_shape, "x"), ds.num_classes, fmt::join(shapes.sample_shape, "x"),
                                  shapes.num_classes));
    if (ds.task == data::Task::LanguageModel && ds.vocab != shapes.vocab)
      throw DataError(
          fmt::format("{}: its characters are not the model's vocabulary ({} tokens)", ds.source, shapes.vocab.size()));
    auto net = train::model_network(m, cfg, ds, device);
    const auto dtype = m.dtype == "float64" ? torch::kFloat64 : torch::kFloat32;
    auto batches = ds.eval_batches(a->split, cfg.get_int("data.eval_batch_size"),
                                   a->all ? 0 : cfg.get_int("data.eval_max_samples"),
                                   ds.task == data::Task::LanguageModel ? cfg.get_int("data.eval_batches") : 0);
    // Same sums in the same order as the run's evaluation (train/evaluation.cpp), one rank.
    double loss_sum = 0, correct = 0, n = 0;
    std::vector<torch::Tensor> preds, labels, losses, inputs;
    torch::NoGradGuard ng;
    for (auto& b : batches) {
      torch::Tensor x = b.x;
      if (ds.task == data::Task::Classification) {
        if (images && (m.input_mean != 0 || m.input_std != 1)) x = x.sub(m.input_mean).div_(m.input_std);
        x = x.to(dtype);
      }
      auto logits = net->forward(x);
      const double k = double(b.y.numel());
      loss_sum += train::loss_of(ds, logits, b.y).item<double>() * k;
      auto p = logits.argmax(-1);
      correct += p.eq(b.y).sum().item<double>();
      n += k;
      if (!a->predictions.empty()) {
        preds.push_back(p);
        labels.push_back(b.y);
        auto l =
            torch::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}), b.y.reshape(-1), {}, at::Reduction::None);
        losses.push_back(l.view(b.y.sizes()).to(torch::kFloat64));
        if (ds.task == data::Task::LanguageModel) inputs.push_back(b.x);
      }
    }
    const double loss = loss_sum / n, acc = correct / n;
    if (!a->predictions.empty()) {
      const std::string tmp = a->predictions + ".part";
      try {
        store::RunWriter w(tmp);
        auto put = [&](const std::string& name, const std::vector<torch::Tensor>& v) {
          auto t = torch::cat(v).contiguous();
          if (t.scalar_type() == torch::kInt64)
            w.write_array("/" + name, t.sizes().vec(), t.data_ptr<int64_t>());
          else
            w.write_array("/" + name, t.sizes().vec(), t.to(torch::kFloat64).contiguous().data_ptr<double>());
        };
        put("pred", preds);
        put("label", labels);
        if (ds.task == data::Task::LanguageModel) {
          auto per_sample = torch::cat(losses).mean(1);
          w.write_array("/loss", {per_sample.numel()}, per_sample.contiguous().data_ptr<double>());
          put("input", inputs);
        } else {
          put("loss", losses);
        }
        w.set_attr("model", fs::absolute(a->file).string());
        w.set_attr("split", a->split);
        w.set_attr("loss", loss);
        w.set_attr("acc", acc);
        w.close();
        fs::rename(tmp, a->predictions);  // throws filesystem_error (removed below)
      } catch (const store::StoreError& e) {
        fs::remove(tmp, ec);
        throw DataError(e.what());
      } catch (...) {
        fs::remove(tmp, ec);
        throw;
      }
    }
    const bool lm = ds.task == data::Task::LanguageModel;
    if (a->json) {
      fmt::print(
          "{{\"file\": {}, \"run_id\": {}, \"step\": {}, \"split\": {}, \"samples\": {}, \"loss\": {}, \"acc\": "
          "{}{}}}\n",
          json_string(a->file), json_string(m.run_id), m.step, json_string(a->split), int64_t(n),
          fmt::format("{:.17g}", loss), fmt::format("{:.17g}", acc),
          lm ? fmt::format(", \"bpc\": {:.17g}", loss / std::log(2.0)) : "");
    } else {
      fmt::print("{} (step {} of {}), {} split, {} {}: loss {:.6f}{}, accuracy {:.4f}\n", a->file, m.step, m.run_id,
                 a->split, int64_t(n), lm ? "predicted characters" : "samples", loss,
                 lm ? fmt::format(" ({:.4f} bits per character)", loss / std::log(2.0)) : "", acc);
    }
    return kExitOk;
  };
}

}  // namespace xpand::cli
