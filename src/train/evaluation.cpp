// Evaluation and snapshots (see evaluation.h).
#include "train/evaluation.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "model/slots.h"
#include "param/form.h"
#include "train/collapse_check.h"

namespace xpand::train {

namespace {

// Mean loss and accuracy of `net` over evaluation batches (no gradients). The ranks of a group
// share the batches (batch i on rank i mod size) and sum their partial results. With `focus` (a bool
// per class) also the accuracy on samples of the focus classes and on the others (NaN when none).
struct EvalResult {
  double loss = 0, acc = 0;
  double focus_acc = std::nan(""), rest_acc = std::nan("");
};
EvalResult evaluate(model::Network& net, const data::Dataset& ds, const std::vector<data::Batch>& batches,
                    dist::Communicator& comm, const torch::Tensor& focus = {}) {
  auto sums = torch::zeros({7}, torch::kFloat64);  // loss·n, correct, n, focus correct, focus n, rest correct, rest n
  auto acc = sums.accessor<double, 1>();
  for (size_t i = size_t(comm.rank()); i < batches.size(); i += size_t(comm.size())) {
    const auto& b = batches[i];
    auto logits = net.forward(b.x);
    double n = double(b.y.numel());
    acc[0] += loss_of(ds, logits, b.y).item<double>() * n;
    auto correct = logits.argmax(-1).eq(b.y);
    acc[1] += correct.sum().item<double>();
    acc[2] += n;
    if (focus.defined()) {
      auto in = focus.index_select(0, b.y.reshape(-1)).view_as(b.y);
      acc[3] += correct.logical_and(in).sum().item<double>();
      acc[4] += in.sum().item<double>();
      acc[5] += correct.logical_and(in.logical_not()).sum().item<double>();
      acc[6] += n - in.sum().item<double>();
    }
  }
  if (comm.size() > 1) {
    auto t = sums.to(comm.device());  // CPU for mpi (the same tensor), the GPU for nccl
    comm.allreduce(t, dist::ReduceOp::Sum, "evaluation sums");
    sums = t.cpu();
  }
  auto v = [&](int i) { return sums[i].item<double>(); };
  EvalResult r{v(0) / v(2), v(1) / v(2)};
  if (focus.defined()) {
    if (v(4) > 0) r.focus_acc = v(3) / v(4);
    if (v(6) > 0) r.rest_acc = v(5) / v(6);
  }
  return r;
}

}  // namespace

double collapse_error(model::Network& net, model::Network& collapsed, const torch::Tensor& x) {
  XPAND_CHECK(!net.is_training() && !collapsed.is_training(),
              "the collapse check compares networks in evaluation mode (batch norm with running statistics)");
  torch::NoGradGuard ng;
  torch::Tensor a;
  {
    param::ExpandedFormScope form;
    a = net.forward(x);
  }
  auto b = collapsed.forward(x);
  return (a - b).abs().max().item<double>() / std::max(1e-300, a.abs().max().item<double>());
}

torch::Tensor loss_of(const data::Dataset& ds, const torch::Tensor& logits, const torch::Tensor& y) {
  if (ds.task == data::Task::LanguageModel)
    return torch::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}), y.reshape(-1));
  return torch::cross_entropy_loss(logits, y);
}

Evaluator::Evaluator(const config::Config& cfg, const data::Dataset& ds, const TrainSettings& s, torch::Device device)
    : cfg_(cfg), ds_(ds), s_(s) {
  if (s.focus_classes.empty()) return;
  focus_ = torch::zeros({ds.num_classes}, torch::kBool);
  for (int64_t c : s.focus_classes) focus_[c] = true;
  focus_ = focus_.to(device);  // where the labels are, once
}

EvalMetrics Evaluator::run(model::Network& net, dist::Communicator& comm, int64_t step) const {
  EvalMetrics e;
  e.step = step;
  torch::NoGradGuard ng;
  net.eval();
  // Evaluation runs on the collapsed network; its distance to the trained one is recorded.
  auto dense = model::network_collapse(cfg_, ds_, net);
  dense->eval();
  auto batches = [&](const char* split) {
    return ds_.eval_batches(split, s_.eval_batch_size, s_.eval_max_samples, s_.eval_lm_batches);
  };
  auto test_batches = batches("test");
  auto tr = evaluate(*dense, ds_, batches("train"), comm);
  auto te = evaluate(*dense, ds_, test_batches, comm, focus_);
  e.train_loss = tr.loss, e.train_acc = tr.acc, e.test_loss = te.loss, e.test_acc = te.acc;
  e.test_focus_acc = te.focus_acc, e.test_rest_acc = te.rest_acc;
  e.collapse_error = collapse_error(net, *dense, test_batches.front().x);
  net.train();
  return e;
}

std::vector<MetricSink::Tensor> snapshot_of(model::Network& net, bool factors) {
  std::vector<MetricSink::Tensor> out;
  torch::NoGradGuard ng;
  auto as_array = [](const torch::Tensor& t) {
    auto c = t.detach().to(torch::kCPU, torch::kFloat64).contiguous();
    return MetricSink::Array{c.sizes().vec(),
                             std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel())};
  };
  auto named = net.named_parameters();
  for (auto& s : net.slots()) {
    if (!s.param->collapsible()) {  // a nonlinear expansion has no weight: its raw tensors stand for it
      MetricSink::Tensor t{s.name, {}, {}, {}, {}};
      for (auto& p : s.param->parameters())
        if (p.numel() > 0) t.factors.push_back(as_array(p));
      if (auto* b = named.find(s.name + "_bias"); b && b->defined()) t.bias = as_array(*b);  // the network's
      out.push_back(std::move(t));
      continue;
    }
    auto w = as_array(s.param->weight());
    MetricSink::Tensor t{s.name, std::move(w.shape), std::move(w.data), {}, {}};
    // The collapsed layer's bias: the network's bias of the layer plus the one the parameterization
    // contributes (factor biases, batch norm folded with its running statistics).
    torch::Tensor bias;
    if (auto* b = named.find(s.name + "_bias"); b && b->defined()) bias = *b;
    if (s.param->has_bias()) bias = bias.defined() ? bias + s.param->bias() : s.param->bias();
    if (bias.defined()) t.bias = as_array(bias);
    if (factors)
      for (auto& p : s.param->parameters())
        if (p.numel() > 0) t.factors.push_back(as_array(p));
    out.push_back(std::move(t));
  }
  // The tensors outside the layers (norms, embeddings, batch-norm statistics; not the layers'
  // biases, folded into each layer's above), so a snapshot holds the whole network.
  const model::OutsideSlots outside(net);
  auto add = [&](const std::string& name, const torch::Tensor& v) {
    if (!outside(name) || !v.defined()) return;
    auto a = as_array(v);
    MetricSink::Tensor t{name, std::move(a.shape), std::move(a.data), {}, {}};
    t.network = true;
    out.push_back(std::move(t));
  };
  for (auto& kv : named) add(kv.key(), kv.value());
  for (auto& kv : net.named_buffers()) add(kv.key(), kv.value());
  return out;
}

}  // namespace xpand::train
