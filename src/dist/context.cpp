// MPI world, Slurm launch check, groups, devices and job abort (see context.h).
#include "dist/context.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <iostream>

#include "core/build_info.h"
#include "core/error.h"
#include "core/log.h"
#include "dist/mpi_internal.h"
#if XPAND_HAVE_NCCL
#include "dist/nccl_comm.h"
#endif

namespace xpand::dist {

namespace {

Context* g_context = nullptr;

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

}  // namespace

Context& Context::init(int* argc, char*** argv, const Options& opts) {
  XPAND_CHECK(!g_context, "dist::Context::init called twice");
  // Read before MPI_Init: whether mpirun started this process (it exports OMPI_COMM_WORLD_SIZE).
  const bool from_mpirun = env("OMPI_COMM_WORLD_SIZE") != nullptr;
  int provided = 0;
  XPAND_MPI(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided));
  static Context ctx;
  g_context = &ctx;
  ctx.opts_ = opts;
  XPAND_MPI(MPI_Comm_rank(MPI_COMM_WORLD, &ctx.world_rank_));
  XPAND_MPI(MPI_Comm_size(MPI_COMM_WORLD, &ctx.world_size_));
  MPI_Comm node;
  XPAND_MPI(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, ctx.world_rank_, MPI_INFO_NULL, &node));
  XPAND_MPI(MPI_Comm_rank(node, &ctx.local_rank_));
  XPAND_MPI(MPI_Comm_size(node, &ctx.local_size_));
  MPI_Comm_free(&node);
  char host[MPI_MAX_PROCESSOR_NAME] = {0};
  int len = 0;
  MPI_Get_processor_name(host, &len);
  ctx.host_ = std::string(host, size_t(len));
  log::set_rank(ctx.world_rank_, ctx.world_size_);

  if (provided < MPI_THREAD_MULTIPLE && ctx.world_size_ > 1)
    ctx.abort(kExitFailure, fmt::format("the MPI library provides thread level {} but xpand's communication "
                                        "thread needs MPI_THREAD_MULTIPLE ({}); use an MPI built with thread "
                                        "support (Open MPI: ompi_info | grep 'Thread support')",
                                        provided, MPI_THREAD_MULTIPLE));
  // srun without a working PMI plugin starts N independent singletons: each sees a world of one
  // and would train as rank 0, writing the same run file N times.
  const char* step_tasks = env("SLURM_STEP_NUM_TASKS") ? env("SLURM_STEP_NUM_TASKS") : env("SLURM_NTASKS");
  if (!from_mpirun && env("SLURM_STEP_ID") && env("SLURM_PROCID") && step_tasks &&
      std::atoi(step_tasks) != ctx.world_size_) {
    std::string msg = fmt::format(
        "Slurm started this step with {} tasks but MPI sees a world of {} rank(s): the tasks did not join one "
        "MPI job, so each would train alone as rank 0. Likely cause: srun used a PMI plugin this MPI cannot "
        "use. Launch with `srun --mpi=pmix` (list plugins with `srun --mpi=list`; set MpiDefault=pmix in "
        "slurm.conf), or start the ranks with mpirun inside the allocation.",
        step_tasks, ctx.world_size_);
    std::cerr << "xpand: error: " << msg << "\n";
    MPI_Finalize();
    std::exit(kExitUsage);
  }
  return ctx;
}

Context* Context::get() { return g_context; }

Context::~Context() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
  g_context = nullptr;
}

Group Context::split(int k) {
  if (k == 0) k = world_size_;
  if (k < 0 || world_size_ % k != 0)
    throw ConfigError(
        fmt::format("--ranks-per-run {} must be a positive divisor of the world size {} "
                    "(launch a multiple of {} ranks, or choose K among the divisors of {})",
                    k, world_size_, k, world_size_));
  Group g;
  g.index = world_rank_ / k;
  g.count = world_size_ / k;
  g.first_world_rank = g.index * k;
  MPI_Comm comm;
  XPAND_MPI(MPI_Comm_split(MPI_COMM_WORLD, g.index, world_rank_, &comm));
  if (k == 1) {
    MPI_Comm_free(&comm);
    g.comm = comm_local();
    return g;
  }
  std::vector<int> ranks;
  for (int r = 0; r < k; ++r) ranks.push_back(g.first_world_rank + r);
  g.comm = comm_mpi(
      comm, fmt::format("group {} (world ranks {}-{})", g.index, g.first_world_rank, g.first_world_rank + k - 1), ranks,
      opts_.timeout_s);
  return g;
}

torch::Device Context::device_for(const std::string& requested) const {
  const bool cuda = torch::cuda::is_available();
  if (requested == "cuda" && !cuda)
    throw ConfigError("device: cuda was requested but this libtorch build sees no CUDA device");
  if (requested == "cpu" || !cuda) return torch::Device(torch::kCPU);
  const int visible = int(torch::cuda::device_count());
  if (local_size_ > visible)
    log::warn("{} ranks on {} share {} visible GPU(s); ranks will share devices", local_size_, host_, visible);
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(local_rank_ % visible));
}

void Context::abort(int exit_code, const std::string& message) const {
  std::cerr << fmt::format("xpand: fatal error on rank {} of {} ({}): {}\n", world_rank_, world_size_, host_, message);
  if (world_size_ > 1) std::cerr << fmt::format("xpand: aborting all {} ranks\n", world_size_);
  std::cerr.flush();
  MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::_Exit(exit_code);  // MPI_Abort does not return; keep the compiler and a broken MPI honest
}

void abort_job_if_distributed(int exit_code, const std::string& message) {
  Context* c = Context::get();
  if (c && c->world_size() > 1) c->abort(exit_code, message);
}

void finalize() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Finalize();
}

}  // namespace xpand::dist

namespace xpand::dist {

std::string mpi_version() {
  char buf[MPI_MAX_LIBRARY_VERSION_STRING] = {0};
  int len = 0;
  if (MPI_Get_library_version(buf, &len) != MPI_SUCCESS) return "unknown";
  std::string v(buf, size_t(std::max(0, len)));
  const size_t nl = v.find_first_of("\n,");
  if (nl != std::string::npos) v.resize(nl);
  return v;
}

std::string nccl_version() {
#if XPAND_HAVE_NCCL
  return nccl_version_string();
#else
  return "";
#endif
}

}  // namespace xpand::dist
