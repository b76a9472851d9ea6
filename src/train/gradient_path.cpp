// The gradient path and its two cuts (see gradient_path.h).
#include "train/gradient_path.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <unordered_map>
#include <unordered_set>

#include "core/log.h"
#include "core/timer.h"
#include "train/cut_chooser.h"
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
  if (world() > 1) reduced(stats);
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

void log_choice(const std::vector<CutDecision>& d, const LinkModel& link, double seconds, int rank) {
  if (rank != 0) return;
  int64_t weight = 0, raw = 0;
  std::string mixed;
  for (const auto& x : d) {
    if (x.choice == "weight") ++weight;
    if (x.choice == "raw") ++raw;
    if (x.choice != "none")
      log::debug("dist.cut auto: {} -> {} (predicted raw {:.3g} s, cut {:.3g} s per step; compute {})", x.name,
                 x.choice, x.raw_cost_s, x.cut_cost_s, x.compute_source);
  }
  log::info(
      "dist.cut auto: {} layer(s) cut at W_eff, {} raw (link {:.3g} GB/s, latency {:.3g} us, overlap {:.2f}, {}; "
      "calibrated in {:.2f} s)",
      weight, raw, link.bytes_per_s * 1e-9, link.latency_s * 1e6, link.overlap, link.source, seconds);
}

// dist.cut on the layers: auto = per layer, the cheaper of the cut at W_eff and the raw tensors
// (train/cut_chooser.h); narrowest = every layer at its narrowest cut (W_eff of an expanded layer, the
// factors of a low-rank one); planned = only layers the planner runs weight-first (W_eff is computed
// anyway, so the cut costs no extra FLOPs); raw = every raw tensor.
class LayerCut : public GradientPath {
 public:
  LayerCut(model::Network& net, std::vector<torch::Tensor> params, std::string mode, CalibrationOptions calib,
           dist::CommPtr comm, const TrainSettings& s)
      : GradientPath(comm, s),
        net_(net),
        params_(std::move(params)),
        mode_(std::move(mode)),
        calib_(std::move(calib)),
        comm_(std::move(comm)),
        first_bucket_mb_(s.first_bucket_mb),
        bucket_mb_(s.bucket_mb) {
    const size_t n = net_.slots().size();
    use_cut_.assign(n, mode_ != "raw");
    bytes_.assign(n, 0), sum_bytes_.assign(n, 0), sum_comm_.assign(n, 0), sum_exposed_.assign(n, 0);
    sum_cut_.assign(n, 0);
  }
  std::string cut_mode() const override { return mode_; }

  void calibrate() override {
    if (mode_ == "raw" || !decisions_.empty()) return;
    const int64_t elem = net_.parameters().front().element_size();
    auto layers = layer_costs_from_flops(net_, calib_.micro_rows, 1.0, calib_.grad_accum, elem);
    const bool choice = std::any_of(layers.begin(), layers.end(),
                                    [](const LayerCosts& l) { return l.has_choice && l.compute_source != "planned"; });
    if (mode_ == "auto" && choice) {
      Timer t;
      Calibration c = calibrate_cuts(net_, comm_, calib_);
      c.link.first_bucket_mb = first_bucket_mb_, c.link.bucket_mb = bucket_mb_;
      decisions_ = choose_cuts(c.layers, c.link);
      link_ = c.link;
      log_choice(decisions_, link_, t.seconds(), comm_->rank());
    } else {  // nothing to price: every layer that has a cut uses it (planned: where it is free)
      link_.source = mode_ == "auto" ? "none needed" : "-";
      link_.bytes_per_s = std::numeric_limits<double>::infinity();
      link_.latency_s = link_.overlap = std::nan("");
      decisions_ = fixed_cuts(layers, link_, mode_ == "auto" ? "narrowest" : mode_);
      for (auto& d : decisions_) d.raw_cost_s = d.cut_cost_s = d.comm_s = d.compute_s = std::nan("");
    }
    for (size_t i = 0; i < decisions_.size() && i < use_cut_.size(); ++i) use_cut_[i] = decisions_[i].choice != "raw";
  }

  void describe(RunInfo& info) const override {
    if (decisions_.empty()) return;
    info.cut_mode = mode_;
    info.link_source = link_.source;
    info.link_latency_s = link_.latency_s, info.link_bytes_per_s = link_.bytes_per_s, info.link_overlap = link_.overlap;
    const bool predicted = mode_ == "auto" && link_.source != "none needed";
    auto slots = net_.slots();
    for (size_t i = 0; i < decisions_.size(); ++i) {
      const auto& d = decisions_[i];
      RunInfo::CutLayer l;
      l.name = d.name, l.choice = d.choice, l.compute_source = predicted ? d.compute_source : "-";
      const int64_t elem = slots[i].param->parameters().front().element_size();
      l.raw_bytes = slots[i].param->trainable_count() * elem;
      l.cut_bytes = slots[i].param->cut_numel() * elem;
      l.bytes = d.bytes;
      if (predicted)
        l.raw_cost_s = d.raw_cost_s, l.cut_cost_s = d.cut_cost_s, l.comm_s = d.comm_s, l.compute_s = d.compute_s;
      info.cut_layers.push_back(l);
    }
  }
  CutMeasured measured() const override {
    CutMeasured m;
    if (decisions_.empty() || steps_ == 0) return m;
    m.steps = steps_;
    for (size_t i = 0; i < sum_bytes_.size(); ++i) {
      m.bytes.push_back(sum_bytes_[i] / double(steps_));
      m.comm_s.push_back(sum_comm_[i] / double(steps_));
      m.exposed_s.push_back(sum_exposed_[i] / double(steps_));
      m.cut_s.push_back(sum_cut_[i] / double(steps_));
    }
    return m;
  }

 protected:
  void begin(int64_t micro_rows) override {
    clear_grads(params_);
    if (mode_ == "raw") return;
    auto slots = net_.slots();
    for (size_t i = 0; i < slots.size(); ++i) {  // the same choice on every rank
      auto& slot = slots[i];
      const bool cut = mode_ == "planned"
                           ? slot.param->plan(slot.rows_per_sample * micro_rows, slot.input_grad).order == "weight"
                           : use_cut_[i];
      if (!cut) continue;
      Timer t;
      slot.param->cut_begin();
      if (slot.param->cut_active()) sum_cut_[i] += t.seconds();
    }
  }
  // For each slot, its cut tensors (the leaves of W_eff when the cut is active, else its raw
  // trainable tensors), then every other trainable tensor; last layers first.
  std::vector<torch::Tensor> tensors() override {
    std::unordered_map<const c10::TensorImpl*, size_t> owner;
    auto slots = net_.slots();
    for (size_t i = 0; i < slots.size(); ++i)
      for (auto& p : slots[i].param->parameters()) owner[p.unsafeGetTensorImpl()] = i;
    std::vector<torch::Tensor> list;
    std::unordered_set<size_t> done;
    const bool cut = mode_ != "raw";
    std::fill(bytes_.begin(), bytes_.end(), 0);
    for (auto& p : net_.parameters()) {
      if (!p.requires_grad()) continue;
      auto it = owner.find(p.unsafeGetTensorImpl());
      // A slot whose cut is active sends its leaves, in its place; every other tensor travels as
      // under raw, in the same order (a layer auto leaves raw costs what raw costs).
      const bool grouped = cut && it != owner.end() && slots[it->second].param->cut_active();
      if (it != owner.end() && !grouped) bytes_[it->second] += p.numel() * p.element_size();
      if (grouped) {
        if (done.insert(it->second).second)
          for (auto& t : slots[it->second].param->cut_tensors()) {
            list.push_back(t);
            bytes_[it->second] += t.numel() * t.element_size();
          }
      } else {
        list.push_back(p);
      }
    }
    std::reverse(list.begin(), list.end());
    return list;
  }
  void finish() override {  // cut gradients -> raw tensors
    if (mode_ == "raw") return;
    auto slots = net_.slots();
    for (size_t i = 0; i < slots.size(); ++i) {
      if (!slots[i].param->cut_active()) continue;
      Timer t;
      slots[i].param->cut_finish();
      sum_cut_[i] += t.seconds();
    }
  }
  // The step's all-reduce and exposed time, shared out over the layers by their bytes.
  void reduced(const dist::ReduceStats& stats) override {
    ++steps_;
    if (stats.bytes <= 0) return;
    for (size_t i = 0; i < bytes_.size(); ++i) {
      const double share = double(bytes_[i]) / double(stats.bytes);
      sum_bytes_[i] += double(bytes_[i]);
      sum_comm_[i] += share * stats.comm_seconds;
      sum_exposed_[i] += share * stats.exposed_seconds;
    }
  }

 private:
  model::Network& net_;
  std::vector<torch::Tensor> params_;
  std::string mode_;
  CalibrationOptions calib_;
  dist::CommPtr comm_;
  double first_bucket_mb_, bucket_mb_;
  std::vector<CutDecision> decisions_;  // per slot (ranks > 1), once calibrate() ran
  LinkModel link_;
  std::vector<char> use_cut_;   // per slot: cut at W_eff when the layer has one
  std::vector<int64_t> bytes_;  // per slot: bytes of this step's all-reduce
  std::vector<double> sum_bytes_, sum_comm_, sum_exposed_, sum_cut_;
  int64_t steps_ = 0;
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
    const std::string mode = comm->size() > 1 ? s.cut : "raw";
    CalibrationOptions o;
    o.micro_rows = std::max<int64_t>(1, s.batch / comm->size() / s.grad_accum);
    o.grad_accum = s.grad_accum;
    o.threads = s.threads;
    o.cache_dir = s.out_dir;
    o.precision = s.precision;
    o.link_gbps = s.link_gbps, o.latency_us = s.latency_us, o.gemm_gflops = s.gemm_gflops;
    t.path = std::make_unique<LayerCut>(net, t.params, mode, std::move(o), comm, s);
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
