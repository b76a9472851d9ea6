// Knowledge distillation (see distill.h).
#include "train/distill.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <filesystem>

#include "core/error.h"
#include "store/index.h"
#include "store/run_file.h"
#include "train/evaluation.h"
#include "train/model_file.h"

namespace xpand::train {

namespace {

// The model a teacher path holds: a model file, or the last complete snapshot of a run file.
ModelFile teacher_model(const config::Config& cfg, const std::string& path) {
  if (!std::filesystem::is_regular_file(path))
    cfg.fail("train.distill.from",
             fmt::format("{}: no such file (a model file from xpand collapse, or a run file)", path));
  if (is_model_file(path)) return model_read(path);
  std::vector<store::SnapshotRef> snaps;
  try {
    snaps = store::snapshot_list(store::RunReader(path));
  } catch (const store::StoreError& e) {
    throw DataError(
        fmt::format("train.distill.from: {} (neither a model file from xpand collapse nor a run file)", e.what()));
  }
  while (!snaps.empty() && !snaps.back().complete) snaps.pop_back();
  if (snaps.empty()) throw DataError(fmt::format("train.distill.from: {}: has no complete snapshot", path));
  return model_from_run(path, snaps.back().group, snaps.back().step);
}

}  // namespace

std::unique_ptr<Teacher> Teacher::from_config(const config::Config& cfg, const data::Dataset& ds,
                                              torch::Device device) {
  const std::string path = cfg.get_string("train.distill.from");
  if (path.empty()) {
    for (const char* key : {"train.distill.temperature", "train.distill.alpha"})  // never silently unused
      if (!cfg.at_default(key)) cfg.fail(key, "is set but train.distill.from is empty: there is no teacher");
    return nullptr;
  }
  const ModelFile m = teacher_model(cfg, path);
  const config::Config mcfg = model_config(m);
  const data::Dataset shapes = model_dataset_shapes(m, mcfg);
  if (shapes.sample_shape != ds.sample_shape || shapes.num_classes != ds.num_classes)
    cfg.fail("train.distill.from",
             fmt::format("{}: the teacher takes inputs {} and {} classes, this run's data has {} and {}", path,
                         fmt::join(shapes.sample_shape, "x"), shapes.num_classes, fmt::join(ds.sample_shape, "x"),
                         ds.num_classes));
  if (ds.task == data::Task::LanguageModel && shapes.vocab != ds.vocab)
    cfg.fail("train.distill.from", fmt::format("{}: the teacher's vocabulary is not this run's ({} tokens vs {})", path,
                                               shapes.vocab.size(), ds.vocab.size()));
  auto t = std::unique_ptr<Teacher>(new Teacher());
  t->net_ = model_network(m, mcfg, shapes, device);
  t->net_->eval();
  for (auto& p : t->net_->parameters()) p.requires_grad_(false);
  t->t_ = cfg.get_float("train.distill.temperature");
  t->alpha_ = cfg.get_float("train.distill.alpha");
  t->tokens_ = ds.task == data::Task::LanguageModel;
  t->dtype_ = m.dtype == "float64" ? torch::kFloat64 : torch::kFloat32;
  if (!t->tokens_) {
    // Student x = (raw / d_s - m_s) / s_s; the teacher wants (raw / d_t - m_t) / s_t of the same raw.
    const double r = ds.input_div / m.input_div;
    t->scale_ = ds.input_std * r / m.input_std;
    t->shift_ = (ds.input_mean * r - m.input_mean) / m.input_std;
  }
  t->what_ = fmt::format("{} (run {}, step {})", path, m.run_id, m.step);
  return t;
}

torch::Tensor Teacher::logits(const torch::Tensor& x) const {
  torch::NoGradGuard ng;
  torch::Tensor in = x;
  if (!tokens_) {
    in = x.detach().to(dtype_);
    if (scale_ != 1 || shift_ != 0) in = in.mul(scale_).add_(shift_);
  }
  return net_->forward(in);
}

torch::Tensor distill_kl(const torch::Tensor& student, const torch::Tensor& teacher, double temperature) {
  const int64_t classes = student.size(-1);
  // In float32 at least (a bf16 student's logits are widened), float64 when the student is.
  const auto dtype = student.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
  auto s = torch::log_softmax(student.reshape({-1, classes}).to(dtype) / temperature, 1);
  auto lt = torch::log_softmax(teacher.reshape({-1, classes}).to(dtype) / temperature, 1);
  // KL(p_t ‖ p_s) = Σ p_t (log p_t - log p_s), summed over classes, averaged over rows.
  auto kl = (lt.exp() * (lt - s)).sum(1).mean();
  return kl * (temperature * temperature);
}

torch::Tensor Teacher::loss(const data::Dataset& ds, const torch::Tensor& logits, const torch::Tensor& y,
                            const torch::Tensor& teacher_logits) const {
  auto ce = loss_of(ds, logits, y);
  if (alpha_ == 0) return ce;
  return ce * (1 - alpha_) + distill_kl(logits, teacher_logits, t_) * alpha_;
}

}  // namespace xpand::train
