// The gradient path and its two cuts (see gradient_path.h).
#include "train/gradient_path.h"

#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include "train/model_file.h"
#include "train/subspace.h"
#include "train/trainer.h"

namespace xpand::train {

GradientPath::GradientPath(dist::CommPtr comm, const TrainSettings& s)
    : comm_(comm), reducer_(comm, {s.bucket_mb, s.first_bucket_mb}) {}

void GradientPath::before_last_backward() {
  if (world() > 1) reducer_.arm(tensors());
}

dist::ReduceStats GradientPath::reduce() {
  prepare();
  dist::ReduceStats stats;
  if (world() > 1) stats = reducer_.finish();
  finish();
  return stats;
}

int64_t Trainables::count() const {
  int64_t n = 0;
  for (const auto& p : params) n += p.numel();
  return n;
}

namespace {

// Gradients start undefined (libtorch's zero_grad() zeroes them): backward then hands each tensor
// the buffer it computed instead of adding it to zeros, one pass over memory less.
void clear_grads(const std::vector<torch::Tensor>& tensors) {
  for (auto p : tensors) p.mutable_grad() = torch::Tensor();
}

// dist.cut on the layers: auto = every layer at its narrowest cut (W_eff of an expanded layer, the
// factors of a low-rank one); planned = only layers the planner runs weight-first (W_eff is computed
// anyway, so the cut costs no extra FLOPs); raw = every raw tensor.
class LayerCut : public GradientPath {
 public:
  LayerCut(model::Network& net, std::vector<torch::Tensor> params, std::string mode, dist::CommPtr comm,
           const TrainSettings& s)
      : GradientPath(std::move(comm), s), net_(net), params_(std::move(params)), mode_(std::move(mode)) {}
  std::string cut_mode() const override { return mode_; }

 protected:
  void begin(int64_t micro_rows) override {
    clear_grads(params_);
    if (mode_ == "raw") return;
    for (auto& slot : net_.slots())  // the same choice on every rank
      if (mode_ == "auto" || slot.param->plan(slot.rows_per_sample * micro_rows, slot.input_grad).order == "weight")
        slot.param->cut_begin();
  }
  // For each slot, its cut tensors (the leaves of W_eff when the cut is active, else its raw
  // trainable tensors), then every other trainable tensor; last layers first.
  std::vector<torch::Tensor> tensors() override {
    std::unordered_map<const c10::TensorImpl*, param::Parameterization*> owner;
    for (auto& slot : net_.slots())
      for (auto& p : slot.param->parameters()) owner[p.unsafeGetTensorImpl()] = slot.param.get();
    std::vector<torch::Tensor> list;
    std::unordered_set<param::Parameterization*> done;
    const bool cut = mode_ != "raw";
    for (auto& p : net_.parameters()) {
      if (!p.requires_grad()) continue;
      auto it = owner.find(p.unsafeGetTensorImpl());
      if (cut && it != owner.end()) {
        if (done.insert(it->second).second)
          for (auto& t : it->second->cut_tensors()) list.push_back(t);
      } else {
        list.push_back(p);
      }
    }
    std::reverse(list.begin(), list.end());
    return list;
  }
  void finish() override {  // cut gradients -> raw tensors
    if (mode_ == "raw") return;
    for (auto& slot : net_.slots()) slot.param->cut_finish();
  }

 private:
  model::Network& net_;
  std::vector<torch::Tensor> params_;
  std::string mode_;
};

// The subspace: backward yields dL/dtheta, pull_grad() turns it into dL/domega = P^T dL/dtheta, and
// the group sums omega's d numbers with the gradients of the tensors outside the subspace.
class SubspaceCut : public GradientPath {
 public:
  SubspaceCut(model::Network& net, std::unique_ptr<Subspace> subspace, std::vector<torch::Tensor> rest,
              std::vector<torch::Tensor> params, dist::CommPtr comm, const TrainSettings& s)
      : GradientPath(std::move(comm), s),
        net_(net),
        subspace_(std::move(subspace)),
        rest_(std::move(rest)),
        params_(std::move(params)) {}
  std::string cut_mode() const override { return "raw"; }
  void after_optimizer_step() override { subspace_->push(); }  // theta = theta0 + P omega

 protected:
  void begin(int64_t) override {
    clear_grads(params_);
    net_.zero_grad(/*set_to_none=*/true);  // theta's gradients are not the optimizer's
  }
  std::vector<torch::Tensor> tensors() override {
    std::vector<torch::Tensor> list = {subspace_->omega()};  // first: no bucket leaves before pull_grad
    list.insert(list.end(), rest_.begin(), rest_.end());
    return list;
  }
  void prepare() override { subspace_->pull_grad(); }

 private:
  model::Network& net_;
  std::unique_ptr<Subspace> subspace_;
  std::vector<torch::Tensor> rest_, params_;
};

}  // namespace

Trainables make_trainables(const config::Config& cfg, model::Network& net, const TrainSettings& s,
                           const dist::CommPtr& comm) {
  freeze_parameters(cfg, net);
  Trainables t;
  SubspaceSplit split = subspace_split(cfg, net);
  if (split.theta.empty()) {
    for (auto& p : net.parameters())
      if (p.requires_grad()) t.params.push_back(p);
    t.path = std::make_unique<LayerCut>(net, t.params, comm->size() > 1 ? s.cut : "raw", comm, s);
    return t;
  }
  // theta0 (and P, with anchor: column) come from the initial network: a resumed run rebuilds them,
  // so they must not depend on which snapshot is the source run's last one at the time.
  if (!s.init_from.empty() && s.init_step == 0 && !is_model_file(s.init_from))  // a model file is one step
    cfg.fail("model.init_step",
             "subspace layers started from model.init_from need the snapshot step named "
             "(model.init_step > 0): a resumed run rebuilds theta0 from it");
  auto subspace = std::make_unique<Subspace>(cfg, split.theta, s.seed);
  t.params = {subspace->omega()};
  t.params.insert(t.params.end(), split.rest.begin(), split.rest.end());
  t.extra.emplace_back("omega", subspace->omega());
  t.path = std::make_unique<SubspaceCut>(net, std::move(subspace), split.rest, t.params, comm, s);
  return t;
}

}  // namespace xpand::train
