// The `mpi` communicator: every collective runs on one communication thread per communicator, in
// issue order, as a non-blocking MPI call polled to completion. The thread is what lets a bucket's
// all-reduce progress while backward keeps computing (Open MPI has no asynchronous progress of its
// own). A collective still incomplete after the timeout triggers a short exchange on a second
// communicator that tells which ranks reached the same operation, then aborts the job.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "core/error.h"
#include "core/log.h"
#include "core/timer.h"
#include "dist/context.h"
#include "dist/mpi_internal.h"

namespace xpand::dist {

void mpi_check(int rc, const char* call, const char* file, int line) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  throw Error(fmt::format("{} failed at {}:{}: {}", call, file, line, std::string(msg, size_t(len))));
}

namespace {

MPI_Datatype mpi_type(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat:
      return MPI_FLOAT;
    case torch::kDouble:
      return MPI_DOUBLE;
    case torch::kInt64:
      return MPI_INT64_T;
    case torch::kInt32:
      return MPI_INT32_T;
    case torch::kUInt8:
      return MPI_UINT8_T;
    default:
      throw Error(
          fmt::format("the mpi communicator does not reduce {} tensors (float32, float64 and integer "
                      "types only); use dist.backend: nccl for half precision on GPUs",
                      c10::toString(t)));
  }
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Max:
      return MPI_MAX;
    case ReduceOp::Min:
      return MPI_MIN;
    default:
      return MPI_SUM;  // Avg = Sum, then divided by the group size
  }
}

struct State {
  std::mutex m;
  std::condition_variable cv;
  bool done = false;
  double seconds = 0;
};

class MpiWork : public Work {
 public:
  explicit MpiWork(std::shared_ptr<State> s) : s_(std::move(s)) {}
  void wait() override {
    std::unique_lock<std::mutex> lock(s_->m);
    s_->cv.wait(lock, [&] { return s_->done; });
  }
  double seconds() const override { return s_->seconds; }

 private:
  std::shared_ptr<State> s_;
};

// What a rank reports about itself when a collective times out.
struct Note {
  int64_t seq = -1;
  char what[112] = {0};
};

class MpiComm : public Communicator {
 public:
  MpiComm(MPI_Comm comm, std::string label, std::vector<int> world_ranks, double timeout_s)
      : comm_(comm), label_(std::move(label)), world_ranks_(std::move(world_ranks)), timeout_s_(timeout_s) {
    XPAND_MPI(MPI_Comm_rank(comm_, &rank_));
    XPAND_MPI(MPI_Comm_size(comm_, &size_));
    XPAND_MPI(MPI_Comm_dup(comm_, &monitor_));
    worker_ = std::thread([this] { loop(); });
  }

  ~MpiComm() override {
    {
      std::lock_guard<std::mutex> lock(m_);
      stop_ = true;
    }
    cv_.notify_all();
    worker_.join();
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) {
      MPI_Comm_free(&monitor_);
      MPI_Comm_free(&comm_);
    }
  }

  std::string backend() const override { return "mpi"; }
  void set_timeout(double seconds) override { timeout_s_ = seconds; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  std::shared_ptr<Work> allreduce_async(torch::Tensor t, ReduceOp op, const std::string& what) override {
    XPAND_CHECK(t.is_contiguous(), "all-reduce of a non-contiguous tensor ({})", what);
    XPAND_CHECK(t.numel() <= INT32_MAX, "{}: {} elements exceed MPI's int count; lower dist.bucket_mb", what,
                t.numel());
    // CUDA tensors are staged through pinned host memory (the nccl backend avoids the copies).
    auto host = t.is_cuda() ? t.to(torch::TensorOptions().device(torch::kCPU).pinned_memory(true)) : t;
    MPI_Datatype type = mpi_type(t.scalar_type());
    int n = int(t.numel());
    auto start = [=](MPI_Request* r) {
      XPAND_MPI(MPI_Iallreduce(MPI_IN_PLACE, host.data_ptr(), n, type, mpi_op(op), comm_, r));
    };
    auto finish = [=]() mutable {
      if (op == ReduceOp::Avg) host.div_(size_);
      if (t.is_cuda()) t.copy_(host);
    };
    return submit(fmt::format("all-reduce of {} ({} bytes)", what, t.nbytes()), start, finish);
  }

  void broadcast(torch::Tensor t, int root, const std::string& what) override {
    XPAND_CHECK(t.is_contiguous(), "broadcast of a non-contiguous tensor ({})", what);
    auto host = t.is_cuda() ? t.to(torch::kCPU) : t;
    MPI_Datatype type = mpi_type(t.scalar_type());
    int n = int(t.numel());
    auto start = [=](MPI_Request* r) { XPAND_MPI(MPI_Ibcast(host.data_ptr(), n, type, root, comm_, r)); };
    auto finish = [=]() mutable {
      if (t.is_cuda()) t.copy_(host);
    };
    submit(fmt::format("broadcast of {} from rank {}", what, root), start, finish)->wait();
  }

  torch::Tensor allgather(const torch::Tensor& mine, const std::string& what) override {
    XPAND_CHECK(mine.is_contiguous(), "allgather of a non-contiguous tensor ({})", what);
    auto host = mine.is_cuda() ? mine.to(torch::kCPU) : mine;
    std::vector<int64_t> shape = {size_};
    for (int64_t d : mine.sizes()) shape.push_back(d);
    auto all = torch::empty(shape, host.options());
    MPI_Datatype type = mpi_type(mine.scalar_type());
    XPAND_CHECK(mine.numel() * int64_t(size_) <= INT32_MAX, "{}: too many elements for MPI's int count", what);
    int n = int(mine.numel());
    auto start = [=](MPI_Request* r) {
      XPAND_MPI(MPI_Iallgather(host.data_ptr(), n, type, all.data_ptr(), n, type, comm_, r));
    };
    if (size_ == 1) all[0].copy_(host);
    submit(fmt::format("allgather of {} ({} bytes per rank)", what, mine.nbytes()), start, [] {})->wait();
    return mine.is_cuda() ? all.to(mine.device()) : all;
  }

  void barrier(const std::string& what) override {
    submit(
        fmt::format("barrier ({})", what), [=](MPI_Request* r) { XPAND_MPI(MPI_Ibarrier(comm_, r)); }, [] {})
        ->wait();
  }

 private:
  struct Task {
    std::string what;
    std::function<void(MPI_Request*)> start;
    std::function<void()> finish;
    std::shared_ptr<State> state;
  };

  std::shared_ptr<Work> submit(std::string what, std::function<void(MPI_Request*)> start,
                               std::function<void()> finish) {
    auto state = std::make_shared<State>();
    if (size_ == 1) {  // nothing to exchange; keep the Avg division / staging semantics
      finish();
      state->done = true;
      return std::make_shared<MpiWork>(state);
    }
    {
      std::lock_guard<std::mutex> lock(m_);
      queue_.push_back(Task{std::move(what), std::move(start), std::move(finish), state});
    }
    cv_.notify_one();
    return std::make_shared<MpiWork>(state);
  }

  void loop() {
    for (int64_t seq = 0;; ++seq) {
      Task task;
      {
        std::unique_lock<std::mutex> lock(m_);
        cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stop_ and drained
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      Timer t;
      try {
        MPI_Request req = MPI_REQUEST_NULL;
        task.start(&req);
        int flag = 0;
        for (int polls = 0;; ++polls) {
          XPAND_MPI(MPI_Test(&req, &flag, MPI_STATUS_IGNORE));
          if (flag) break;
          if (t.seconds() > timeout_s_) diagnose_and_abort(seq, task.what, t.seconds());
          // Spin briefly (latency of small messages), then back off so the compute threads keep
          // the cores; the back-off caps at 200 us.
          if (polls < 200)
            std::this_thread::yield();
          else
            std::this_thread::sleep_for(std::chrono::microseconds(std::min(200, (polls - 200) / 10 + 5)));
        }
        task.finish();
      } catch (const std::exception& e) {
        abort_job_if_distributed(kExitFailure, fmt::format("{} on {}: {}", task.what, label_, e.what()));
        std::abort();  // unreachable: a group of one rank never queues, so the world has several
      }
      {
        std::lock_guard<std::mutex> lock(task.state->m);
        task.state->seconds = t.seconds();
        task.state->done = true;
      }
      task.state->cv.notify_all();
    }
  }

  // Every rank that also timed out answers with the operation it is waiting in; ranks that do not
  // answer within the grace period never reached a collective (busy, hung or dead).
  [[noreturn]] void diagnose_and_abort(int64_t seq, const std::string& what, double waited) {
    Note mine;
    mine.seq = seq;
    std::strncpy(mine.what, what.c_str(), sizeof mine.what - 1);
    std::vector<Note> theirs(size_t(size_), Note{});
    std::vector<MPI_Request> reqs;
    const int tag = 7301;
    for (int p = 0; p < size_; ++p) {
      if (p == rank_) continue;
      MPI_Request s, r;
      MPI_Isend(&mine, sizeof mine, MPI_BYTE, p, tag, monitor_, &s);
      MPI_Irecv(&theirs[size_t(p)], sizeof(Note), MPI_BYTE, p, tag, monitor_, &r);
      reqs.push_back(r);
      (void)s;  // left pending: the job ends below
    }
    const double grace = std::clamp(timeout_s_.load() / 2, 2.0, 30.0);
    Timer g;
    std::vector<int> answered(reqs.size(), 0);
    while (g.seconds() < grace) {
      bool all = true;
      for (size_t i = 0; i < reqs.size(); ++i) {
        if (!answered[i]) MPI_Test(&reqs[i], &answered[i], MPI_STATUS_IGNORE);
        all &= answered[i] != 0;
      }
      if (all) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    std::vector<int> arrived = {world_ranks_[size_t(rank_)]}, missing;
    std::vector<std::string> elsewhere;
    for (int p = 0, i = 0; p < size_; ++p) {
      if (p == rank_) continue;
      const int w = world_ranks_[size_t(p)];
      if (!answered[size_t(i++)])
        missing.push_back(w);
      else if (theirs[size_t(p)].seq == seq)
        arrived.push_back(w);
      else
        elsewhere.push_back(
            fmt::format("rank {} is in operation #{} ({})", w, theirs[size_t(p)].seq, theirs[size_t(p)].what));
    }
    std::sort(arrived.begin(), arrived.end());
    std::string msg = fmt::format(
        "collective timeout: {} (operation #{} on {}) did not complete within {:.0f} s (dist.timeout_s). "
        "Ranks that arrived: {}. Ranks that did not arrive: {}",
        what, seq, label_, waited, fmt::join(arrived, ", "),
        missing.empty() ? std::string("none")
                        : fmt::format("{} (no answer within {:.0f} s: busy outside "
                                      "communication, hung or dead)",
                                      fmt::join(missing, ", "), grace));
    if (!elsewhere.empty()) msg += fmt::format("; waiting in a different operation: {}", fmt::join(elsewhere, "; "));
    Context::get()->abort(kExitFailure, msg);
  }

  MPI_Comm comm_, monitor_;
  std::string label_;
  std::vector<int> world_ranks_;
  std::atomic<double> timeout_s_;
  int rank_ = 0, size_ = 1;
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<Task> queue_;
  bool stop_ = false;
  std::thread worker_;
};

}  // namespace

CommPtr comm_mpi(MPI_Comm comm, const std::string& label, std::vector<int> world_ranks, double timeout_s) {
  return std::make_shared<MpiComm>(comm, label, std::move(world_ranks), timeout_s);
}

}  // namespace xpand::dist
