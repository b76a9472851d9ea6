// Bucketed, overlapped gradient all-reduce (see reducer.h). Readiness comes from a post-hook on
// each tensor's gradient accumulator, which runs right after autograd has added the tensor's
// gradient into .grad() (so micro-batch accumulation is already included).
#include "dist/reducer.h"

#include <fmt/format.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include "core/error.h"
#include "core/timer.h"

namespace xpand::dist {

std::vector<BucketSpan> bucket_layout(const std::vector<int64_t>& numels, int64_t elem_bytes, int64_t first_cap_bytes,
                                      int64_t cap_bytes) {
  std::vector<BucketSpan> out;
  if (numels.empty()) return out;
  out.push_back(BucketSpan{0, 0, 0});
  for (size_t i = 0; i < numels.size(); ++i) {
    BucketSpan& b = out.back();
    const int64_t cap = out.size() == 1 ? first_cap_bytes : cap_bytes;
    if (b.numel > 0 && (b.numel + numels[i]) * elem_bytes > cap) out.push_back(BucketSpan{i, i, 0});
    out.back().end = i + 1;
    out.back().numel += numels[i];
  }
  return out;
}

struct Reducer::Hook {
  std::shared_ptr<torch::autograd::Node> accumulator;
  uintptr_t key = 0;
};

Reducer::Reducer(CommPtr comm, const ReducerOptions& opts) : comm_(std::move(comm)), opts_(opts) {}

Reducer::~Reducer() {
  for (auto& h : hooks_) h->accumulator->del_post_hook(h->key);
}

void Reducer::arm(const std::vector<torch::Tensor>& tensors) {
  XPAND_CHECK(!armed_, "Reducer::arm called twice without finish()");
  std::vector<int64_t> numels;
  for (const auto& t : tensors) {
    XPAND_CHECK(t.is_leaf() && t.requires_grad(), "the reducer needs leaf tensors that require grad");
    XPAND_CHECK(t.scalar_type() == tensors.front().scalar_type() && t.device() == tensors.front().device(),
                "reduced tensors must share one dtype and device");
    numels.push_back(t.numel());
  }
  if (numels != numels_ || flat_.empty() != layout_.empty() ||
      (!flat_.empty() && (flat_.front().scalar_type() != tensors.front().scalar_type() ||
                          flat_.front().device() != tensors.front().device()))) {
    numels_ = numels;
    const int64_t elem = tensors.empty() ? 4 : int64_t(tensors.front().element_size());
    layout_ =
        bucket_layout(numels_, elem, int64_t(opts_.first_bucket_mb * 1048576.0), int64_t(opts_.bucket_mb * 1048576.0));
    bucket_of_.assign(numels_.size(), 0);
    offset_.assign(numels_.size(), 0);
    flat_.clear();
    for (size_t b = 0; b < layout_.size(); ++b) {
      int64_t off = 0;
      for (size_t i = layout_[b].begin; i < layout_[b].end; ++i) {
        bucket_of_[i] = b;
        offset_[i] = off;
        off += numels_[i];
      }
      flat_.push_back(torch::empty({layout_[b].numel}, tensors.front().options().requires_grad(false)));
    }
  }
  std::lock_guard<std::mutex> lock(m_);
  tensors_ = tensors;
  ready_.assign(tensors.size(), 0);
  pending_.clear();
  for (const auto& b : layout_) pending_.push_back(b.end - b.begin);
  next_ = 0;
  works_.assign(layout_.size(), nullptr);
  stats_ = ReduceStats{};
  armed_ = true;
  // The hooks stay registered while the list holds the same tensors (every step of a run; the
  // rotate schedule detach()es them when it switches layers): registered once, they ignore the
  // backward passes of unarmed micro-batches.
  std::vector<const void*> ids;
  for (const auto& t : tensors) ids.push_back(t.unsafeGetTensorImpl());
  if (ids == attached_) return;
  for (auto& h : hooks_) h->accumulator->del_post_hook(h->key);
  hooks_.clear();
  attached_ = ids;
  for (size_t i = 0; i < tensors.size(); ++i) {
    auto h = std::make_unique<Hook>();
    h->accumulator = torch::autograd::impl::grad_accumulator(tensors[i]);
    XPAND_CHECK(h->accumulator, "tensor {} of the reduced list has no gradient accumulator", i);
    h->key = h->accumulator->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
        [this, i](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) {
          on_ready(i);
          return outputs;
        }));
    hooks_.push_back(std::move(h));
    ++registrations_;
  }
}

void Reducer::detach() {
  std::lock_guard<std::mutex> lock(m_);
  XPAND_CHECK(!armed_, "Reducer::detach called while armed");
  for (auto& h : hooks_) h->accumulator->del_post_hook(h->key);
  hooks_.clear();
  attached_.clear();
}

void Reducer::on_ready(size_t i) {
  std::lock_guard<std::mutex> lock(m_);
  if (!armed_ || i >= ready_.size() || ready_[i]) return;
  const torch::Tensor& g = tensors_[i].grad();
  auto dst = flat_[bucket_of_[i]].narrow(0, offset_[i], numels_[i]);
  if (g.defined())
    dst.copy_(g.reshape(-1));
  else
    dst.zero_();
  ready_[i] = 1;
  if (--pending_[bucket_of_[i]] == 0) launch_in_order();
}

// Buckets start strictly in index order, so every rank issues the same sequence of collectives
// even if autograd finished the buckets in a different order.
void Reducer::launch_in_order() {
  while (next_ < layout_.size() && pending_[next_] == 0) {
    const size_t b = next_++;
    if (layout_[b].numel == 0) continue;
    works_[b] =
        comm_->allreduce_async(flat_[b], ReduceOp::Sum, fmt::format("gradient bucket {}/{}", b + 1, layout_.size()));
    stats_.bytes += int64_t(flat_[b].nbytes());
    stats_.collectives += 1;
  }
}

ReduceStats Reducer::finish() {
  XPAND_CHECK(armed_, "Reducer::finish called without arm()");
  Timer exposed;
  {
    std::lock_guard<std::mutex> lock(m_);
    for (size_t i = 0; i < tensors_.size(); ++i) {
      if (ready_[i]) continue;
      // No gradient reached this tensor in this step (unused parameter): it contributes zeros (or
      // what earlier micro-batches accumulated).
      const torch::Tensor& g = tensors_[i].grad();
      auto dst = flat_[bucket_of_[i]].narrow(0, offset_[i], numels_[i]);
      if (g.defined())
        dst.copy_(g.reshape(-1));
      else
        dst.zero_();
      ready_[i] = 1;
      --pending_[bucket_of_[i]];
    }
    launch_in_order();
    armed_ = false;
  }
  for (auto& w : works_)
    if (w) {
      w->wait();
      stats_.comm_seconds += w->seconds();
    }
  stats_.exposed_seconds = exposed.seconds();
  for (size_t i = 0; i < tensors_.size(); ++i) {
    auto src = flat_[bucket_of_[i]].narrow(0, offset_[i], numels_[i]).view(tensors_[i].sizes());
    torch::Tensor& g = tensors_[i].mutable_grad();
    if (g.defined())
      g.copy_(src);
    else
      g = src.clone();
  }
  tensors_.clear();
  return stats_;
}

}  // namespace xpand::dist
