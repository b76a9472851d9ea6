// The MPI world of one xpand process: rank, size and node-local rank from MPI (never guessed from
// launcher variables), the Slurm launch check, groups of K consecutive ranks (--ranks-per-run),
// per-group communicators, the GPU of this rank, and job-wide abort. One process, no launcher:
// MPI's singleton world of size 1.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>

#include "dist/comm.h"

namespace xpand::dist {

struct Options {
  double timeout_s = 300;  // a collective not complete after this long aborts the job
};

// One data-parallel group: `index` of `count` groups, and its communicator.
struct Group {
  int index = 0, count = 1;
  int first_world_rank = 0;  // world rank of group rank 0
  CommPtr comm;              // backend "mpi" (or "local" for a group of one rank)
};

class Context {
 public:
  // Initialises MPI (thread level MULTIPLE). Under an srun step, stops with an explanation when
  // MPI's world size differs from the step's task count (a PMI mismatch: N copies of rank 0).
  static Context& init(int* argc, char*** argv, const Options& opts = {});
  // The initialised context, or nullptr before init().
  static Context* get();
  // Finalizes MPI (all ranks must call it; the destructor of init()'s object does).
  ~Context();

  int world_rank() const { return world_rank_; }
  int world_size() const { return world_size_; }
  int local_rank() const { return local_rank_; }  // rank among the processes of this node
  int local_size() const { return local_size_; }
  const std::string& host() const { return host_; }
  const Options& options() const { return opts_; }

  // Splits the world into groups of k consecutive ranks; k must divide the world size
  // (ConfigError otherwise). k = 0 means one group of the whole world.
  Group split(int k);

  // The device of this rank for `requested` ("cpu", "cuda" or "auto"): cuda:(local rank mod visible
  // devices), so one GPU per rank whether the node shows every GPU or Slurm shows each task one.
  torch::Device device_for(const std::string& requested) const;

  // Ends the whole job (MPI_Abort) after printing `message` with this rank and host.
  [[noreturn]] void abort(int exit_code, const std::string& message) const;

 private:
  Context() = default;
  int world_rank_ = 0, world_size_ = 1, local_rank_ = 0, local_size_ = 1;
  std::string host_;
  Options opts_;
};

// Versions for provenance: MPI_Get_library_version's first line ("Open MPI v4.1.4, ..."), and
// NCCL's "2.28.3" (empty when xpand was built without NCCL).
std::string mpi_version();
std::string nccl_version();

// Aborts the job if a Context exists and the world has more than one rank; otherwise returns.
// For fatal errors on one rank: no other rank is left waiting in a collective.
void abort_job_if_distributed(int exit_code, const std::string& message);

// MPI_Finalize, if MPI was initialized and is not finalized yet (for an exit that skips the
// static destructors, where the Context would finalize).
void finalize();

}  // namespace xpand::dist
