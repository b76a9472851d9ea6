// Communicators: the collectives a data-parallel group needs (all-reduce of a flat buffer,
// broadcast, barrier, scalar reductions), with asynchronous handles. Backends: `local` (one rank,
// no MPI), `mpi` (CPU tensors; CUDA tensors staged through pinned host buffers) and `nccl` (CUDA
// tensors, its own stream). Callers never include mpi.h or nccl.h; those live in dist/*.cpp.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace xpand::dist {

enum class ReduceOp { Sum, Avg, Max, Min };

// An operation in flight. wait() returns once the result is in the tensor (for nccl: once the
// current compute stream is ordered after it; the host does not block). Fatal failures (timeout,
// lost rank) abort the job from inside the communicator; wait() never returns a wrong result.
class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;
  // Seconds the operation spent in flight (from issue to completion); valid after wait().
  virtual double seconds() const = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual std::string backend() const = 0;  // "local", "mpi" or "nccl"
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Where the communicator's own buffers live (CUDA device for nccl, CPU otherwise).
  virtual torch::Device device() const { return torch::kCPU; }
  // In-place all-reduce of a contiguous tensor. `what` names the operation in timeout messages.
  // Operations complete in the order they are issued; every rank must issue the same sequence.
  virtual std::shared_ptr<Work> allreduce_async(torch::Tensor t, ReduceOp op, const std::string& what) = 0;
  void allreduce(torch::Tensor t, ReduceOp op, const std::string& what) { allreduce_async(t, op, what)->wait(); }
  virtual void broadcast(torch::Tensor t, int root, const std::string& what) = 0;
  // Every rank's `mine` (contiguous, the same numel and dtype on every rank), on every rank: rows of
  // the result in group rank order, shaped (size(), mine's shape...).
  virtual torch::Tensor allgather(const torch::Tensor& mine, const std::string& what) = 0;
  virtual void barrier(const std::string& what) = 0;
  // Seconds after which an unfinished collective aborts the job (dist.timeout_s).
  virtual void set_timeout(double seconds) {}
  // Reduction of one number (through a float64 CPU tensor on the mpi backend).
  double allreduce_scalar(double v, ReduceOp op, const std::string& what);
  // Root's string on every rank (unique ids, config checks).
  std::string broadcast_string(const std::string& s, int root, const std::string& what);
  // Every rank's string, on every rank, in group rank order (hostnames, devices): two allgathers.
  std::vector<std::string> allgather_strings(const std::string& mine, const std::string& what);
};

using CommPtr = std::shared_ptr<Communicator>;

// One rank, no communication: every collective is the identity.
CommPtr comm_local();

}  // namespace xpand::dist
