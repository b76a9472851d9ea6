// The `nccl` communicator (see nccl_comm.h): unique id over MPI, one CUDA stream, events between
// compute and communication, and a watchdog thread that aborts a hung communicator.
#include "dist/nccl_comm.h"

#include <cuda_runtime_api.h>
#include <fmt/format.h>
#include <nccl.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>

#include "core/error.h"
#include "core/timer.h"
#include "dist/context.h"

namespace xpand::dist {

namespace {

void cuda_check(cudaError_t rc, const char* call, const char* file, int line) {
  if (rc != cudaSuccess) throw Error(fmt::format("{} failed at {}:{}: {}", call, file, line, cudaGetErrorString(rc)));
}
void nccl_check(ncclResult_t rc, const char* call, const char* file, int line) {
  if (rc != ncclSuccess)
    throw Error(fmt::format("{} failed at {}:{}: {} (set NCCL_DEBUG=WARN for details)", call, file, line,
                            ncclGetErrorString(rc)));
}
#define XPAND_CUDA(call) cuda_check((call), #call, __FILE__, __LINE__)
#define XPAND_NCCL(call) nccl_check((call), #call, __FILE__, __LINE__)

ncclDataType_t nccl_type(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat:
      return ncclFloat32;
    case torch::kDouble:
      return ncclFloat64;
    case torch::kHalf:
      return ncclFloat16;
    case torch::kBFloat16:
      return ncclBfloat16;
    case torch::kInt64:
      return ncclInt64;
    case torch::kInt32:
      return ncclInt32;
    case torch::kUInt8:
      return ncclUint8;
    default:
      throw Error(fmt::format("the nccl communicator does not reduce {} tensors", c10::toString(t)));
  }
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Avg:
      return ncclAvg;
    case ReduceOp::Max:
      return ncclMax;
    case ReduceOp::Min:
      return ncclMin;
    default:
      return ncclSum;
  }
}

// One collective in flight: events around it on the communication stream. The events live as
// long as the last holder (the watchdog's queue or the Work handle), never shorter.
struct Pending {
  cudaEvent_t start = nullptr, done = nullptr;
  std::string what;
  std::chrono::steady_clock::time_point issued;
  torch::Tensor keep, keep2;  // keep the buffers alive until the collective finished
  Pending() {
    XPAND_CUDA(cudaEventCreate(&start));
    XPAND_CUDA(cudaEventCreate(&done));
  }
  ~Pending() {
    cudaEventDestroy(start);
    cudaEventDestroy(done);
  }
  Pending(const Pending&) = delete;
  Pending& operator=(const Pending&) = delete;
};

// cudaEventQuery's "not ready" also sets the thread's last error, which libtorch's next launch
// check would report as a failure: query and clear.
bool event_done(cudaEvent_t e) {
  cudaError_t rc = cudaEventQuery(e);
  if (rc == cudaSuccess) return true;
  cudaGetLastError();
  return false;
}

class NcclWork : public Work {
 public:
  explicit NcclWork(std::shared_ptr<Pending> p) : p_(std::move(p)) {}
  void wait() override {
    // The compute stream waits for the collective; the host does not.
    XPAND_CUDA(cudaStreamWaitEvent(cudaStreamLegacy, p_->done, 0));
  }
  double seconds() const override {
    float ms = 0;
    if (!event_done(p_->done)) return 0;  // not finished yet: unknown
    if (cudaEventElapsedTime(&ms, p_->start, p_->done) != cudaSuccess) {
      cudaGetLastError();
      return 0;
    }
    return double(ms) * 1e-3;
  }

 private:
  std::shared_ptr<Pending> p_;
};

class NcclComm : public Communicator {
 public:
  NcclComm(const CommPtr& group, torch::Device device, double timeout_s)
      : rank_(group->rank()), size_(group->size()), device_(device), timeout_s_(timeout_s) {
    XPAND_CHECK(device.is_cuda(), "the nccl communicator needs a CUDA device");
    XPAND_CUDA(cudaSetDevice(device.index()));
    ncclUniqueId id;
    if (rank_ == 0) XPAND_NCCL(ncclGetUniqueId(&id));
    std::string bytes = group->broadcast_string(
        rank_ == 0 ? std::string(reinterpret_cast<const char*>(&id), sizeof id) : std::string(), 0, "NCCL unique id");
    XPAND_CHECK(bytes.size() == sizeof id, "NCCL unique id of {} bytes", bytes.size());
    std::memcpy(&id, bytes.data(), sizeof id);
    XPAND_NCCL(ncclCommInitRank(&comm_, size_, id, rank_));
    XPAND_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    watchdog_ = std::thread([this] { watch(); });
  }

  ~NcclComm() override {
    {
      std::lock_guard<std::mutex> lock(m_);
      stop_ = true;
    }
    cv_.notify_all();
    watchdog_.join();
    if (std::uncaught_exceptions() > 0) {
      ncclCommAbort(comm_);  // unwinding after an error: peers may never complete what is queued
    } else {
      cudaStreamSynchronize(stream_);
      ncclCommDestroy(comm_);
    }
    cudaStreamDestroy(stream_);
  }

  std::string backend() const override { return "nccl"; }
  torch::Device device() const override { return device_; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  std::shared_ptr<Work> allreduce_async(torch::Tensor t, ReduceOp op, const std::string& what) override {
    XPAND_CHECK(t.is_cuda() && t.is_contiguous(), "nccl all-reduce needs a contiguous CUDA tensor ({})", what);
    auto p = begin(what, t);
    XPAND_NCCL(ncclAllReduce(t.data_ptr(), t.data_ptr(), size_t(t.numel()), nccl_type(t.scalar_type()), nccl_op(op),
                             comm_, stream_));
    return end(p);
  }

  void broadcast(torch::Tensor t, int root, const std::string& what) override {
    auto dev = t.is_cuda() ? t : t.to(device_);
    auto p = begin(what, dev);
    XPAND_NCCL(ncclBroadcast(dev.data_ptr(), dev.data_ptr(), size_t(dev.numel()), nccl_type(dev.scalar_type()), root,
                             comm_, stream_));
    end(p)->wait();
    if (!t.is_cuda()) t.copy_(dev);  // synchronous copy back on the compute stream
  }

  torch::Tensor allgather(const torch::Tensor& mine, const std::string& what) override {
    auto dev = (mine.is_cuda() ? mine : mine.to(device_)).contiguous();
    std::vector<int64_t> shape = {size_};
    for (int64_t d : mine.sizes()) shape.push_back(d);
    auto all = torch::empty(shape, dev.options());
    auto p = begin(what, dev);
    p->keep2 = all;
    XPAND_NCCL(ncclAllGather(dev.data_ptr(), all.data_ptr(), size_t(dev.numel()), nccl_type(dev.scalar_type()), comm_,
                             stream_));
    end(p)->wait();
    return mine.is_cuda() ? all : all.to(mine.device());
  }

  void barrier(const std::string& what) override {
    auto one = torch::zeros({1}, torch::TensorOptions().device(device_));
    allreduce(one, ReduceOp::Sum, "barrier (" + what + ")");
    XPAND_CUDA(cudaStreamSynchronize(cudaStreamLegacy));
  }

 private:
  std::shared_ptr<Pending> begin(const std::string& what, const torch::Tensor& t) {
    auto p = std::make_shared<Pending>();
    p->what = what;
    p->keep = t;
    p->issued = std::chrono::steady_clock::now();
    // Communication waits for the compute that produced the buffer.
    XPAND_CUDA(cudaEventRecord(p->start, cudaStreamLegacy));
    XPAND_CUDA(cudaStreamWaitEvent(stream_, p->start, 0));
    return p;
  }

  std::shared_ptr<Work> end(const std::shared_ptr<Pending>& p) {
    XPAND_CUDA(cudaEventRecord(p->done, stream_));
    {
      std::lock_guard<std::mutex> lock(m_);
      inflight_.push_back(p);
    }
    cv_.notify_one();
    return std::make_shared<NcclWork>(p);
  }

  // Retires finished collectives; aborts the communicator and the job when one exceeds the timeout
  // or NCCL reports an asynchronous error (a peer lost, a network failure).
  void watch() {
    cudaSetDevice(device_.index());  // a new thread starts on device 0: no stray context there
    std::unique_lock<std::mutex> lock(m_);
    while (!stop_) {
      cv_.wait_for(lock, std::chrono::milliseconds(100));
      while (!inflight_.empty() && event_done(inflight_.front()->done)) inflight_.pop_front();
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm_, &async);
      std::string problem;
      if (async != ncclSuccess && async != ncclInProgress)
        problem = fmt::format("NCCL reported an asynchronous error: {}", ncclGetErrorString(async));
      else if (!inflight_.empty()) {
        double waited =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - inflight_.front()->issued).count();
        if (waited > timeout_s_)
          problem = fmt::format(
              "{} did not complete within {:.0f} s (dist.timeout_s); a rank of the group did not "
              "arrive (hung, busy, or dead)",
              inflight_.front()->what, waited);
      }
      if (!problem.empty()) {
        ncclCommAbort(comm_);
        Context* c = Context::get();
        if (c) c->abort(kExitFailure, "nccl: " + problem);
        std::fprintf(stderr, "xpand: fatal: nccl: %s\n", problem.c_str());
        std::_Exit(kExitFailure);
      }
    }
  }

  int rank_, size_;
  torch::Device device_;
  double timeout_s_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Pending>> inflight_;
  bool stop_ = false;
  std::thread watchdog_;
};

}  // namespace

std::string nccl_version_string() {
  int v = 0;
  if (ncclGetVersion(&v) != ncclSuccess) return "unknown";
  // NCCL >= 2.9 encodes major*10000 + minor*100 + patch.
  return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." + std::to_string(v % 100);
}

CommPtr comm_nccl(const CommPtr& group, torch::Device device, double timeout_s) {
  return std::make_shared<NcclComm>(group, device, timeout_s);
}

}  // namespace xpand::dist
