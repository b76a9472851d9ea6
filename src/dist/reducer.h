// Bucketed, overlapped gradient all-reduce. The gradients of a fixed list of tensors (identical
// order on every rank; the trainer passes them in the order backward produces them) are packed into
// buckets (first bucket small so communication starts early, then dist.bucket_mb). A bucket's
// all-reduce starts the moment its last gradient has been accumulated during backward; finish()
// waits only for what is still in flight and writes the sums back into each tensor's .grad().
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "dist/comm.h"

namespace xpand::dist {

struct ReducerOptions {
  double bucket_mb = 25;       // bucket capacity (MiB)
  double first_bucket_mb = 1;  // capacity of the first bucket (MiB)
};

// Tensors [begin, end) of the list form one bucket of `numel` elements.
struct BucketSpan {
  size_t begin = 0, end = 0;
  int64_t numel = 0;
};

// Packs tensors in order: a bucket closes before a tensor that would take it past its capacity,
// unless the bucket is still empty (a tensor larger than a bucket gets a bucket of its own).
// Zero-size tensors join the current bucket; a list of only empty tensors gives empty buckets,
// which are never communicated.
std::vector<BucketSpan> bucket_layout(const std::vector<int64_t>& numels, int64_t elem_bytes, int64_t first_cap_bytes,
                                      int64_t cap_bytes);

// One step's communication.
struct ReduceStats {
  int64_t bytes = 0;           // bytes all-reduced (payload, per rank)
  int64_t collectives = 0;     // all-reduce calls
  double comm_seconds = 0;     // summed in-flight time of the step's all-reduces
  double exposed_seconds = 0;  // time finish() waited: communication not hidden behind backward
};

class Reducer {
 public:
  Reducer(CommPtr comm, const ReducerOptions& opts);
  ~Reducer();

  // Collect this step's gradients of `tensors` (leaves requiring grad, one dtype and device). The
  // layout is (re)built when the tensors' sizes change, the hooks only when the tensors change. Call before the
  // backward pass whose gradients complete the step (the last micro-batch); earlier micro-batches only accumulate.
  void arm(const std::vector<torch::Tensor>& tensors);
  // Starts the buckets still pending (a tensor that got no gradient counts as zero), waits for all,
  // and stores each sum in the tensor's .grad().
  ReduceStats finish();

  const std::vector<BucketSpan>& layout() const { return layout_; }
  const CommPtr& comm() const { return comm_; }
  // Drops the hooks: the next arm() registers them again. For tensors whose shape changed in place
  // (set_data: the rotate schedule collapsing and re-expanding a layer), whose gradient
  // accumulators must not outlive the step (autograd would keep their old shape).
  void detach();
  // Autograd hooks registered so far: one per tensor when a list is first armed, none for later
  // steps over the same tensors.
  int64_t hook_registrations() const { return registrations_; }

 private:
  void on_ready(size_t index);
  void launch_in_order();

  CommPtr comm_;
  ReducerOptions opts_;
  std::vector<int64_t> numels_;
  std::vector<BucketSpan> layout_;
  std::vector<size_t> bucket_of_;
  std::vector<int64_t> offset_;  // element offset of each tensor in its bucket
  std::vector<torch::Tensor> flat_;

  // Per armed step.
  std::mutex m_;
  bool armed_ = false;
  std::vector<torch::Tensor> tensors_;
  std::vector<char> ready_;
  std::vector<size_t> pending_;  // tensors of each bucket not yet ready
  size_t next_ = 0;              // next bucket to launch (buckets launch in index order)
  std::vector<std::shared_ptr<Work>> works_;
  ReduceStats stats_;
  struct Hook;
  std::vector<std::unique_ptr<Hook>> hooks_;  // on the accumulators of attached_, kept across steps
  std::vector<const void*> attached_;         // the tensors the hooks are registered on
  int64_t registrations_ = 0;
};

}  // namespace xpand::dist
