// A run file written from a background thread: the trainer posts jobs (metric rows, snapshots)
// into a bounded queue and goes on; one writer thread runs them in order against the RunWriter,
// flushes at least every `flush_seconds`, and reports its first failure on the trainer's next call.
// A full queue blocks the poster (back-pressure), so memory stays bounded when the disk is slow.
#pragma once
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "store/run_file.h"

namespace xpand::store {

class AsyncRunWriter {
 public:
  using Job = std::function<void(RunWriter&)>;

  // Takes ownership of the writer. max_queue_bytes bounds the bytes of queued jobs (as declared
  // by post); a single job larger than the bound is still accepted once the queue is empty.
  AsyncRunWriter(std::unique_ptr<RunWriter> writer, size_t max_queue_bytes, double flush_seconds);
  // Runs what is queued, flushes and closes the file; never throws (call close() to see errors).
  ~AsyncRunWriter();
  AsyncRunWriter(const AsyncRunWriter&) = delete;
  AsyncRunWriter& operator=(const AsyncRunWriter&) = delete;

  // Queues a job; blocks while the queue is over its bound. Throws the writer thread's first
  // error (a StoreError or whatever a job threw), after which nothing more is written. Small jobs
  // wait for a batch (64 KiB or 256 jobs), a flush or the flush period unless `urgent`.
  void post(Job job, size_t bytes = 0, bool urgent = false);
  // Queues a flush (metrics reach the disk and SWMR readers see them) without waiting.
  void flush_async();
  // Waits until every queued job ran and the file is flushed; throws the writer's error.
  void sync();
  // sync(), then closes the file and stops the thread. Idempotent.
  void close();

  // Seconds the posting threads spent blocked on a full queue (back-pressure), for benchmarks.
  double blocked_seconds() const;

 private:
  static constexpr size_t kWakeBytes = 64 << 10, kWakeJobs = 256;
  struct Item {
    Job job;
    size_t bytes;
  };
  void loop();
  void rethrow_locked();

  std::unique_ptr<RunWriter> writer_;
  const size_t max_bytes_;
  const double flush_seconds_;
  mutable std::mutex mu_;
  std::condition_variable cv_work_, cv_space_, cv_idle_;
  std::deque<Item> queue_;
  size_t queued_bytes_ = 0;
  bool busy_ = false, stop_ = false, closed_ = false, dirty_ = false;
  bool inline_ = false;  // HDF5 is not thread-safe: jobs run in post()
  std::exception_ptr error_;
  double blocked_seconds_ = 0;
  std::thread thread_;
};

}  // namespace xpand::store
