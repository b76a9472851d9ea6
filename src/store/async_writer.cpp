// The background writer thread of a run file (see async_writer.h).
#include "store/async_writer.h"

#include <hdf5.h>

#include <chrono>

namespace xpand::store {

using Clock = std::chrono::steady_clock;

AsyncRunWriter::AsyncRunWriter(std::unique_ptr<RunWriter> writer, size_t max_queue_bytes, double flush_seconds)
    : writer_(std::move(writer)), max_bytes_(max_queue_bytes), flush_seconds_(flush_seconds > 0 ? flush_seconds : 1) {
  if (!writer_) throw StoreError("xpand store: AsyncRunWriter needs a writer");
  // HDF5 calls from two threads need a thread-safe build (Debian's is); without one every job runs
  // on the posting thread instead.
  inline_ = !hdf5_threadsafe();
  if (!inline_) thread_ = std::thread([this] { loop(); });
}

AsyncRunWriter::~AsyncRunWriter() {
  try {
    close();
  } catch (...) {
  }
  if (thread_.joinable()) {  // close() threw before joining
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_work_.notify_all();
    thread_.join();
  }
}

void AsyncRunWriter::rethrow_locked() {
  if (error_) std::rethrow_exception(error_);
}

void AsyncRunWriter::post(Job job, size_t bytes, bool urgent) {
  std::unique_lock<std::mutex> lk(mu_);
  rethrow_locked();
  if (closed_) throw StoreError("xpand store: " + writer_->path() + ": write after close");
  if (inline_) {
    try {
      job(*writer_);
    } catch (...) {
      error_ = std::current_exception();
      throw;
    }
    return;
  }
  if (queued_bytes_ > 0 && queued_bytes_ + bytes > max_bytes_) {
    auto t0 = Clock::now();
    cv_work_.notify_one();  // the writer may be waiting for a batch to fill
    cv_space_.wait(lk, [&] { return error_ || queued_bytes_ == 0 || queued_bytes_ + bytes <= max_bytes_; });
    blocked_seconds_ += std::chrono::duration<double>(Clock::now() - t0).count();
    rethrow_locked();
  }
  queue_.push_back({std::move(job), bytes});
  queued_bytes_ += bytes;
  // Small jobs (a metrics row per step) are not worth a wake-up each: waking the writer thread on a
  // busy machine costs the trainer tens of microseconds. The writer runs them in batches, when the
  // queue has grown, at flush_async()/sync(), or when its flush period comes.
  const bool wake = urgent || queued_bytes_ >= kWakeBytes || queue_.size() >= kWakeJobs;
  lk.unlock();
  if (wake) cv_work_.notify_one();
}

void AsyncRunWriter::flush_async() {
  post([](RunWriter& w) { w.flush(); }, 0, true);
}

void AsyncRunWriter::sync() {
  post([](RunWriter& w) { w.flush(); }, 0, true);
  if (inline_) return;
  std::unique_lock<std::mutex> lk(mu_);
  cv_idle_.wait(lk, [&] { return error_ || (queue_.empty() && !busy_); });
  rethrow_locked();
}

void AsyncRunWriter::close() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (closed_) {
      rethrow_locked();
      return;
    }
  }
  std::exception_ptr err;
  try {
    sync();
  } catch (...) {
    err = std::current_exception();
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    closed_ = true;
    stop_ = true;
  }
  cv_work_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (!err) {
    try {
      writer_->close();
    } catch (...) {
      err = std::current_exception();
    }
  }
  if (err) std::rethrow_exception(err);
}

double AsyncRunWriter::blocked_seconds() const {
  std::lock_guard<std::mutex> lk(mu_);
  return blocked_seconds_;
}

void AsyncRunWriter::loop() {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // per thread: failures surface as exceptions only
  auto last_flush = Clock::now();
  const auto period = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(flush_seconds_));
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    cv_work_.wait_until(lk, last_flush + period, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) {
      if (stop_) break;
      // Idle past the flush period with rows written but not flushed: flush them.
      if (dirty_ && !error_ && Clock::now() >= last_flush + period) {
        busy_ = true;
        lk.unlock();
        std::exception_ptr e;
        try {
          writer_->flush();
        } catch (...) {
          e = std::current_exception();
        }
        lk.lock();
        busy_ = false;
        dirty_ = false;
        if (e && !error_) error_ = e;
        cv_idle_.notify_all();
      }
      if (Clock::now() >= last_flush + period) last_flush = Clock::now();
      continue;
    }
    Item item = std::move(queue_.front());
    queue_.pop_front();
    busy_ = true;
    const bool skip = static_cast<bool>(error_);  // after a failure nothing more is written
    lk.unlock();
    std::exception_ptr e;
    if (!skip) {
      try {
        item.job(*writer_);
        // A job that ran past the flush period (or a queue that never empties) still flushes on time.
        if (Clock::now() >= last_flush + period) {
          writer_->flush();
          last_flush = Clock::now();
        }
      } catch (...) {
        e = std::current_exception();
      }
    }
    item.job = nullptr;  // release captured data outside the lock
    lk.lock();
    busy_ = false;
    dirty_ = true;
    queued_bytes_ -= item.bytes;
    if (e && !error_) error_ = e;
    cv_space_.notify_all();
    if (queue_.empty()) cv_idle_.notify_all();
  }
  busy_ = false;
  cv_idle_.notify_all();
}

}  // namespace xpand::store
