// The single-run trainer (see trainer.h).
#include "train/trainer.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <fnmatch.h>
#include <sched.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <torch/version.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "core/blas.h"
#include "core/build_info.h"
#include "core/error.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/signals.h"
#include "core/timer.h"
#include "data/dataset.h"
#include "dist/context.h"
#include "dist/reducer.h"
#if XPAND_HAVE_NCCL
#include "dist/nccl_comm.h"
#endif
#include "model/network.h"
#include "param/lowrank.h"
#include "param/spec.h"
#include "store/index.h"
#include "store/run_file.h"
#include "train/autocast.h"
#include "train/checkpoint.h"
#include "train/expand_schedule.h"
#include "train/optim.h"
#include "train/subspace.h"

namespace fs = std::filesystem;

namespace xpand::train {

namespace {

// How long a finished run waits for another process's index update before it leaves the index
// to the next one (store::IndexOptions).
constexpr double kIndexLockSeconds = 10;

std::string now_iso() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

std::string hostname() {
  char buf[256] = {0};
  gethostname(buf, sizeof buf - 1);
  return buf;
}

torch::Device device_from_config(const config::Config& cfg) {
  const std::string& d = cfg.get_string("device");
  if (d == "cuda" && !torch::cuda::is_available())
    cfg.fail("device", "cuda was requested but this libtorch build sees no CUDA device");
  // Under MPI: one GPU per rank, from the node-local rank.
  if (dist::Context* ctx = dist::Context::get()) return ctx->device_for(d);
  if (d == "cuda" || (d == "auto" && torch::cuda::is_available())) return torch::Device(torch::kCUDA, 0);
  return torch::Device(torch::kCPU);
}

// The communicator gradients travel on (dist.backend): the group's mpi communicator, or a NCCL
// communicator built over it for CUDA tensors.
dist::CommPtr gradient_comm(const config::Config& cfg, const dist::CommPtr& group, torch::Device device) {
  const std::string& b = cfg.get_string("dist.backend");
  if (b == "nccl" && !XPAND_HAVE_NCCL)
    cfg.fail("dist.backend", "nccl was requested but this xpand was built without NCCL (XPAND_WITH_NCCL)");
  if (b == "nccl" && !device.is_cuda()) cfg.fail("dist.backend", "nccl needs device: cuda (or auto on a GPU node)");
  if (group->size() == 1) return group;
  // Every rank must pick the same backend (a node without visible GPUs under device: auto would
  // otherwise pair NCCL set-up broadcasts with another rank's parameter broadcasts).
  const double cuda_ranks = group->allreduce_scalar(device.is_cuda() ? 1 : 0, dist::ReduceOp::Sum, "device check");
  if (cuda_ranks != 0 && cuda_ranks != group->size())
    throw Error(
        fmt::format("{} of the group's {} ranks see a CUDA device and the others do not; check "
                    "CUDA_VISIBLE_DEVICES and the GPUs of every node (or set device: cpu)",
                    int(cuda_ranks), group->size()));
  const bool nccl = b == "nccl" || (b == "auto" && device.is_cuda() && XPAND_HAVE_NCCL);
#if XPAND_HAVE_NCCL
  if (nccl) return dist::comm_nccl(group, device, cfg.get_float("dist.timeout_s"));
#endif
  (void)nccl;
  return group;
}

// The tensors whose gradients are all-reduced, in the order backward produces them (last layers
// first): for each slot, its cut tensors when `cut` (W_eff of an expanded layer, the factors of a
// low-rank one), else its raw trainable tensors; then every other trainable tensor.
std::vector<torch::Tensor> reduced_tensors(model::Network& net, bool cut) {
  std::unordered_map<const c10::TensorImpl*, param::Parameterization*> owner;
  for (auto& slot : net.slots())
    for (auto& p : slot.param->parameters()) owner[p.unsafeGetTensorImpl()] = slot.param.get();
  std::vector<torch::Tensor> list;
  std::unordered_set<param::Parameterization*> done;
  for (auto& p : net.parameters()) {
    if (!p.requires_grad()) continue;
    auto it = owner.find(p.unsafeGetTensorImpl());
    if (cut && it != owner.end()) {
      if (done.insert(it->second).second)
        for (auto& t : it->second->cut_tensors()) list.push_back(t);
    } else {
      list.push_back(p);
    }
  }
  std::reverse(list.begin(), list.end());
  return list;
}

torch::Tensor loss_of(const data::Dataset& ds, const torch::Tensor& logits, const torch::Tensor& y) {
  if (ds.task == data::Task::LanguageModel)
    return torch::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}), y.reshape(-1));
  return torch::cross_entropy_loss(logits, y);
}

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
    auto w = as_array(s.param->weight());
    MetricSink::Tensor t{s.name, std::move(w.shape), std::move(w.data), {}, {}};
    if (auto* b = named.find(s.name + "_bias"); b && b->defined()) t.bias = as_array(*b);
    if (factors)
      for (auto& p : s.param->parameters())
        if (p.numel() > 0) t.factors.push_back(as_array(p));
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace

void freeze_parameters(const config::Config& cfg, model::Network& net) {
  for (const auto& pattern : cfg.get_strings("train.freeze")) {
    bool any = false;
    std::string names;
    for (auto& np : net.named_parameters()) {
      names += (names.empty() ? "" : ", ") + np.key();
      if (fnmatch(pattern.c_str(), np.key().c_str(), 0) == 0) {
        np.value().set_requires_grad(false);
        any = true;
      }
    }
    if (!any) cfg.fail("train.freeze", fmt::format("'{}' matches no parameter (parameters: {})", pattern, names));
  }
}

namespace {

// model.init_from: every layer and its bias start from a run file's snapshot (fine-tuning). Dense
// and subspace layers copy the weight; lora layers took it as W0 and lowrank layers with init: svd
// factored it when they were built (param::Spec falls back to model.init_from).
void init_from_run(const config::Config& cfg, model::Network& net) {
  if (!cfg.has("model.init_from") || cfg.get_string("model.init_from").empty()) return;
  const std::string from = cfg.get_string("model.init_from");
  const int64_t step = cfg.get_int("model.init_step");
  torch::NoGradGuard ng;
  auto named = net.named_parameters();
  try {
    for (auto& slot : net.slots()) {
      const param::Spec spec = param::spec_for(cfg, slot.name);
      if (spec.kind == "dense" || spec.kind == "subspace") {
        slot.param->named_parameters()["weight"].copy_(
            param::snapshot_weight(from, step, slot.name, slot.param->shape()));
      } else if (spec.kind == "lora") {  // again, now in the training dtype (a float64 run keeps every digit)
        slot.param->named_buffers()["w0"].copy_(
            param::snapshot_weight(spec.init_from, spec.init_step, slot.name, slot.param->shape()));
      } else if (spec.kind == "lowrank" && spec.init != "svd") {
        spec.fail("init",
                  "model.init_from starts a lowrank layer only with init: svd (the truncated SVD of the "
                  "snapshot's weight)");
      } else if (spec.kind == "expanded") {
        spec.fail("kind",
                  "model.init_from cannot start an expanded layer (a dense snapshot does not fix its "
                  "factors); make the layer dense, lowrank (init: svd) or lora");
      }
      if (auto* b = named.find(slot.name + "_bias"))
        b->copy_(param::snapshot_array(from, step, slot.name, "bias", b->sizes().vec()));
    }
  } catch (const ConfigError&) {
    throw;
  } catch (const Error& e) {
    cfg.fail("model.init_from", e.what());
  }
  log::info("model: every layer and bias from {} ({})", from,
            step > 0 ? fmt::format("step {}", step) : "its last snapshot");
}

// Moves a file aside to <path>.prev-N (nothing is deleted).
void move_aside(const std::string& path, const std::string& why) {
  std::string aside;
  for (int i = 1;; ++i)
    if (!fs::exists(aside = fmt::format("{}.prev-{}", path, i))) break;
  fs::rename(path, aside);
  log::warn("{} {}; moved it to {}", path, why, aside);
}

// What to do with an existing run file: skip (completed), resume from its checkpoint, or start over.
struct Existing {
  // Busy: another live process trains the run (its lock is held); every rank of the group stops.
  enum Action { Fresh, Skip, Resume, Busy } action = Fresh;
  int64_t resume_step = 0;
};

// A file's device and inode (zeros when it does not exist).
struct FileId {
  dev_t dev = 0;
  ino_t ino = 0;
  bool operator==(const FileId& o) const { return dev == o.dev && ino == o.ino; }
};
FileId file_id(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return {};
  return {st.st_dev, st.st_ino};
}

// An exclusive flock on <out>/locks/<run_id>.lock, held while the run trains: a second process on the
// same run (the same command twice, a requeued job whose first incarnation still lives) stops with a
// message instead of resuming a file that is being written.
class RunLock {
 public:
  explicit RunLock(const std::string& run_path)
      : path_((fs::path(run_path).parent_path().parent_path() / "locks" / fs::path(run_path).stem()).string() +
              ".lock") {
    fs::create_directories(fs::path(path_).parent_path());
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT, 0644);
    if (fd_ < 0) throw Error(fmt::format("cannot open {}: {}", path_, std::strerror(errno)));
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      ::close(fd_);
      throw RunBusyError(
          fmt::format("{} is locked: another xpand process is training this run now (wait for it, or "
                      "stop it first)",
                      path_));
    }
  }
  ~RunLock() {
    ::flock(fd_, LOCK_UN);
    ::close(fd_);
  }
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

 private:
  std::string path_;
  int fd_ = -1;
};

// Removes the temporaries a killed process leaves: <file>.part (a run file being set up) and
// <file>.tmp-<pid> (a checkpoint being written).
void remove_temporaries(const std::string& file) {
  std::error_code ec;
  fs::remove(file + ".part", ec);
  const fs::path dir = fs::path(file).parent_path();
  const std::string prefix = fs::path(file).filename().string() + ".tmp-";
  if (!fs::is_directory(dir, ec)) return;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.path().filename().string().rfind(prefix, 0) == 0) fs::remove(e.path(), ec);
}

// Whether the run file exists and says its run completed (a final state: only --force trains again).
bool run_completed(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return false;
  try {
    return store::RunReader(path).attr_string("status") == "completed";
  } catch (const store::StoreError&) {
    return false;
  }
}

// The datasets a checkpoint of this network must hold (checkpoint_verify).
std::vector<std::string> checkpoint_datasets(model::Network& net, const NamedTensors& extra) {
  std::vector<std::string> out;
  for (const auto& p : net.named_parameters()) out.push_back("/params/" + p.key());
  for (const auto& b : net.named_buffers()) out.push_back("/buffers/" + b.key());
  for (const auto& e : extra) out.push_back("/extra/" + e.first);
  return out;
}

Existing examine_existing(const std::string& path, const std::string& ckpt, const std::string& run_id, int64_t total,
                          bool force, bool resume, const std::vector<std::string>& expected) {
  Existing ex;
  remove_temporaries(path);
  remove_temporaries(ckpt);
  if (!fs::exists(path)) {
    if (fs::exists(ckpt)) move_aside(ckpt, "has no run file");
    return ex;
  }
  std::string status = "unreadable";
  try {
    status = store::RunReader(path).attr_string("status");
  } catch (const store::StoreError&) {
  }
  if (status == "completed" && !force) {
    ex.action = Existing::Skip;
    return ex;
  }
  const bool resumable = status == "running" || status == "preempted" || status == "failed";
  if (!force && resume && resumable && fs::exists(ckpt)) {
    try {
      CheckpointInfo c = checkpoint_peek(ckpt);
      if (c.run_id == run_id && c.step > 0 && c.step <= total) {
        checkpoint_verify(ckpt, expected);  // every array's checksum: a damaged checkpoint must not resume
        ex.action = Existing::Resume;
        ex.resume_step = c.step;
        return ex;
      }
      log::warn("{}: checkpoint of run {} at step {} does not fit run {} of {} steps; starting over", ckpt, c.run_id,
                c.step, run_id, total);
    } catch (const std::exception& e) {
      // Kept for inspection, out of the way of every later rerun.
      log::warn("{}: the checkpoint is damaged ({}); starting the run over", ckpt, e.what());
      move_aside(ckpt, "is damaged");
    }
  }
  move_aside(path, fmt::format("existed with status '{}'", status));
  if (fs::exists(ckpt)) move_aside(ckpt, "belongs to the run moved aside");
  return ex;
}

// The last evaluation row of a run file (NaN where there is none).
EvalMetrics last_eval(const std::string& path) {
  store::RunReader r(path);
  auto last = [&](const char* col) {
    auto v = r.has_object(std::string("/metrics/eval/") + col) ? r.column("eval", col) : std::vector<double>{};
    return v.empty() ? NAN : v.back();
  };
  const double step = last("step");
  return {std::isfinite(step) ? int64_t(step) : 0,
          last("train_loss"),
          last("train_acc"),
          last("test_loss"),
          last("test_acc"),
          last("collapse_error")};
}

// Every rank's string, on every rank (hostnames, devices), in group rank order.
std::vector<std::string> gather_strings(dist::Communicator& comm, const std::string& mine, const std::string& what) {
  std::vector<std::string> all;
  for (int r = 0; r < comm.size(); ++r) all.push_back(comm.size() == 1 ? mine : comm.broadcast_string(mine, r, what));
  return all;
}

}  // namespace

std::string run_id(const config::Config& cfg) { return cfg.get_string("name") + "-" + cfg.hash(); }

// The CPUs this process may run on (its affinity mask; the machine's cores when that is unknown).
static int64_t usable_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
  return std::max<int64_t>(1, int64_t(std::thread::hardware_concurrency()));
}

// Intra-op threads when the config says 0: the cores this process may use, shared by the ranks of
// this node. Under Slurm the allocation decides (SLURM_CPUS_PER_TASK, else the job's CPUs on this
// node over its ranks here), since task/none leaves every task free to run on every core; else the
// CPU affinity mask (mpirun --bind-to, taskset, cpusets) when it is narrower than the machine, else
// the machine's cores over the node's ranks.
static int64_t default_threads() {
  const int per_node = dist::Context::get() ? dist::Context::get()->local_size() : 1;
  auto env_int = [](const char* name) -> int64_t {
    const char* v = std::getenv(name);
    if (!v || !*v) return 0;
    char* end = nullptr;
    const long long x = std::strtoll(v, &end, 10);  // "4(x2)" style lists start with the number
    return end != v && x > 0 ? int64_t(x) : 0;
  };
  if (const int64_t c = env_int("SLURM_CPUS_PER_TASK")) return c;
  if (const int64_t c = env_int("SLURM_CPUS_ON_NODE"); c > 0 && std::getenv("SLURM_JOB_ID"))
    return std::max<int64_t>(1, c / per_node);
  const int64_t machine = std::max<int64_t>(1, int64_t(std::thread::hardware_concurrency()));
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    const int64_t mine = CPU_COUNT(&set);
    if (mine > 0 && mine < machine) return mine;
  }
  return std::max<int64_t>(1, machine / per_node);
}

RunResult run_train(const config::Config& cfg, const RunOptions& opts) {
  Timer wall;
  RunResult result;
  result.run_id = run_id(cfg);
  const uint64_t seed = static_cast<uint64_t>(cfg.get_int("seed"));
  dist::CommPtr group = opts.comm ? opts.comm : dist::comm_local();
  const int rank = group->rank(), world = group->size();
  const bool root = rank == 0;
  group->set_timeout(cfg.get_float("dist.timeout_s"));
  if (world > 1) {
    // Every rank of a group must train the same configuration.
    std::string theirs = group->broadcast_string(result.run_id, 0, "run id check");
    if (theirs != result.run_id)
      throw ConfigError(
          fmt::format("rank {} resolved the configuration to run {} but group rank 0 to {}: every "
                      "rank of a group must get the same config file and --set overrides",
                      rank, result.run_id, theirs));
  }

  // --- set-up: threads, device, data, network, optimizer ---
  int64_t threads = cfg.get_int("threads");
  if (threads == 0) threads = default_threads();
  if (const int64_t cpus = usable_cpus(); threads > cpus) {
    // More threads than CPUs only contend (and OpenMP starting thousands of them takes minutes).
    log::warn("threads: {} is more than the {} CPUs this process may use; using {}", threads, cpus, cpus);
    threads = cpus;
  }
  torch::set_num_threads(int(threads));
  torch::manual_seed(seed);
  torch::Device device = device_from_config(cfg);
  auto dtype = cfg.get_string("dtype") == "float64" ? torch::kFloat64 : torch::kFloat32;
  const bool bf16 = cfg.get_string("train.precision") == "bf16";
  if (bf16 && dtype != torch::kFloat32)
    cfg.fail("train.precision", "bf16 autocast lowers float32 work to bfloat16: it needs dtype: float32");
  if (bf16 && device.is_cpu())
    log::warn(
        "train.precision: bf16 on the CPU runs libtorch's bfloat16 CPU kernels, usually slower than float32 "
        "without AMX/AVX512-BF16 hardware; it is meant for GPUs");

  data::Dataset ds = data::dataset_load(cfg, device);
  if (ds.task == data::Task::Classification) {
    ds.train_x = ds.train_x.to(dtype);
    ds.test_x = ds.test_x.to(dtype);
  }
  // Every layer option and the network's size checked from shapes first: a key that does not apply,
  // or weights that cannot fit, is exit 2 before gigabytes are allocated. Training holds the weights,
  // their gradients and the optimizer's state (Adam: two more copies).
  const std::string& optimizer = cfg.get_string("train.optimizer");
  model::network_check(cfg, ds, optimizer == "adam" || optimizer == "adamw" ? 4 : 3);
  model::NetworkPtr net = model::network_build(cfg, ds, param::factory_from_config(cfg));
  net->to(device, dtype);
  init_from_run(cfg, *net);  // after the move: the snapshot's float64 values reach a float64 network whole
  result.network = net;
  dist::CommPtr comm = gradient_comm(cfg, group, device);
  if (world > 1) {
    // Same initial state on every rank, whatever the seeds did (frozen tensors and buffers too).
    torch::NoGradGuard ng;
    for (auto& t : net->parameters()) comm->broadcast(t.data(), 0, "initial parameters");
    for (auto& t : net->buffers()) comm->broadcast(t, 0, "initial buffers");
    // From here on each rank draws its own random numbers (dropout masks of its own rows);
    // everything that must agree across ranks is broadcast or uses explicit generators.
    torch::manual_seed(seed ^ (0x9E3779B97F4A7C15ull * uint64_t(rank + 1)));
  }
  // Batch-norm running statistics follow each rank's shard: evaluation, snapshots and the end of
  // the run use their mean over the group (integer counters come from group rank 0).
  auto sync_buffers = [&] {
    if (world == 1) return;
    torch::NoGradGuard ng;
    for (auto& t : net->buffers()) {
      if (t.is_floating_point())
        comm->allreduce(t, dist::ReduceOp::Avg, "batch-norm statistics");
      else
        comm->broadcast(t, 0, "buffers");
    }
  };

  const int64_t batch = cfg.get_int("data.batch_size");
  const int64_t spe = ds.steps_per_epoch(batch);
  if (spe < 1)
    cfg.fail("data.batch_size",
             fmt::format("{} exceeds the {} training samples of {}", batch, ds.train_size(), ds.name));
  const int64_t accum = cfg.get_int("train.grad_accum");
  if (batch / world < accum)
    cfg.fail("train.grad_accum", fmt::format("{} micro-batches need at least {} samples per rank, but a batch of "
                                             "{} over {} rank(s) gives {} (rank 0)",
                                             accum, accum, batch, world, batch / world));
  int64_t total = static_cast<int64_t>(std::ceil(cfg.get_float("train.epochs") * double(spe)));
  if (cfg.get_int("train.max_steps") > 0)
    total = cfg.get_float("train.epochs") > 0 ? std::min(total, cfg.get_int("train.max_steps"))
                                              : cfg.get_int("train.max_steps");
  if (total < 1) cfg.fail("train.epochs", "train.epochs and train.max_steps leave no step to train");
  const int64_t eval_every = cfg.get_int("train.eval_every") > 0 ? cfg.get_int("train.eval_every") : spe;
  const int64_t snapshot_every = cfg.get_int("output.snapshot_every");
  const bool snapshot_factors = cfg.get_bool("output.snapshot_factors");
  const int64_t checkpoint_every = cfg.get_int("output.checkpoint_every");
  const int compression = int(cfg.get_int("output.compression"));

  ExpandSchedule expand(cfg, *net, seed);  // rotate: collapses every expanded layer but the first
  freeze_parameters(cfg, *net);
  std::vector<torch::Tensor> params;
  for (auto& p : net->parameters())
    if (p.requires_grad()) params.push_back(p);
  // Subspace layers: the optimizer moves omega (and the other layers' tensors); theta = theta0 +
  // P omega (train/subspace.h).
  std::unique_ptr<Subspace> subspace;
  std::vector<torch::Tensor> subspace_rest;  // trained as usual next to omega
  NamedTensors extra;                        // what checkpoints keep besides the network
  if (SubspaceSplit split = subspace_split(cfg, *net); !split.theta.empty()) {
    // theta0 (and P, with anchor: column) come from the initial network: a resumed run rebuilds them,
    // so they must not depend on which snapshot is the source run's last one at the time.
    if (cfg.has("model.init_from") && !cfg.get_string("model.init_from").empty() && cfg.get_int("model.init_step") == 0)
      cfg.fail("model.init_step",
               "subspace layers started from model.init_from need the snapshot step named "
               "(model.init_step > 0): a resumed run rebuilds theta0 from it");
    subspace = std::make_unique<Subspace>(cfg, split.theta, seed);
    subspace_rest = split.rest;
    params = {subspace->omega()};
    params.insert(params.end(), split.rest.begin(), split.rest.end());
    extra.emplace_back("omega", subspace->omega());
  }
  int64_t trainable = 0;
  for (auto& p : params) trainable += p.numel();
  auto opt = optimizer_build(cfg, params);
  Schedule sched = Schedule::from_config(cfg, total);
  const double clip = cfg.get_float("train.grad_clip");
  // dist.cut: auto = every layer at its narrowest cut; planned = only layers the planner runs
  // weight-first (W_eff is computed anyway, so the cut costs no extra FLOPs); raw = no cut.
  // (A subspace reduces d numbers and no layer's cut.)
  const std::string cut_mode = world > 1 && !subspace ? cfg.get_string("dist.cut") : "raw";
  const bool cut = cut_mode != "raw";
  auto cut_this = [&](const model::Slot& slot, int64_t micro_rows) {
    if (cut_mode == "auto") return true;
    return slot.param->plan(slot.rows_per_sample * micro_rows, slot.input_grad).order == "weight";
  };
  dist::Reducer reducer(comm, {cfg.get_float("dist.bucket_mb"), cfg.get_float("dist.first_bucket_mb")});

  // --- output: skip a completed run, resume an unfinished one from its checkpoint ---
  const std::string out_dir = cfg.get_string("output.dir");
  result.path = (fs::path(out_dir) / "runs" / (result.run_id + ".h5")).string();
  const std::string ckpt_path = checkpoint_path(result.path);
  std::vector<std::unique_ptr<MetricSink>> sinks;
  if (opts.console && root) sinks.push_back(console_sink(cfg.get_int("train.log_every")));
  Existing existing;
  std::string busy_message;
  std::unique_ptr<RunLock> run_lock;  // group rank 0, for the whole run
  if (opts.write_file) {
    if (root) {
      if (!opts.force && run_completed(result.path)) {
        existing.action = Existing::Skip;  // read-only: no lock, nothing written (a read-only directory is fine)
      } else {
        fs::create_directories(fs::path(result.path).parent_path());
        try {
          run_lock = std::make_unique<RunLock>(result.path);
          existing = examine_existing(result.path, ckpt_path, result.run_id, total, opts.force, opts.resume,
                                      checkpoint_datasets(*net, extra));
        } catch (const RunBusyError& e) {
          busy_message = e.what();
          existing.action = Existing::Busy;  // decided with the group below, so every rank stops together
        }
      }
    }
    if (world > 1) {
      existing.action = Existing::Action(
          int(group->allreduce_scalar(double(existing.action), dist::ReduceOp::Max, "existing run decision")));
      existing.resume_step =
          int64_t(group->allreduce_scalar(double(existing.resume_step), dist::ReduceOp::Max, "resume step"));
    }
    if (existing.action == Existing::Busy)
      throw RunBusyError(root ? busy_message
                              : fmt::format("run {} is being trained by another process", result.run_id));
    if (existing.action == Existing::Skip && !root) {
      result.status = "skipped";
      return result;
    }
    if (existing.action == Existing::Skip) {
      log::info("{} is already completed; skipping (use --force to train it again)", result.path);
      result.status = "skipped";
      result.final_eval = last_eval(result.path);
      result.steps = result.final_eval.step;
      return result;
    }
    if (root) {
      H5SinkOptions ho;
      ho.compression = int(cfg.get_int("output.compression"));
      ho.swmr = cfg.get_bool("output.swmr");
      ho.flush_seconds = cfg.get_float("output.flush_seconds");
      ho.queue_bytes = size_t(cfg.get_float("output.queue_mb") * 1048576.0);
      sinks.push_back(h5_sink(result.path, ho));
    }
  }
  int64_t start_step = 0;
  if (existing.action == Existing::Resume) {
    CheckpointInfo c = checkpoint_load(ckpt_path, *net, params, *opt, expand, rank, extra);
    if (c.world_size != world && root)
      log::warn("{}: checkpoint written by {} rank(s), resumed on {}: per-rank random streams (dropout) restart",
                ckpt_path, c.world_size, world);
    start_step = result.resumed_from = result.steps = c.step;
    if (root) result.final_eval = last_eval(result.path);  // the summary of a run resumed at its very end
    log::info("run {}: resuming from the checkpoint at step {} of {}", result.run_id, c.step, total);
  }

  RunInfo info;
  info.run_id = result.run_id;
  info.path = opts.write_file ? result.path : "";
  info.name = cfg.get_string("name");
  info.config_yaml = cfg.to_yaml();
  info.total_steps = total;
  info.steps_per_epoch = spe;
  info.world_size = world;
  info.language_model = ds.task == data::Task::LanguageModel;
  info.dtype = cfg.get_string("dtype");
  info.axes = opts.axes;
  info.focus = ds.task == data::Task::Classification && !cfg.get_ints("data.focus_classes").empty();
  info.checkpoint_file = "../checkpoints/" + fs::path(ckpt_path).filename().string();  // relative to runs/
  if (existing.action == Existing::Resume) {
    info.resume_from = result.path;
    info.resume_step = start_step;
  }
  {
    dist::Context* ctx = dist::Context::get();
    info.int_attrs = {
        {"ranks_per_run", world}, {"trainable_params", trainable}, {"world_ranks", ctx ? ctx->world_size() : 1}};
    info.list_attrs = {{"hostnames", gather_strings(*group, hostname(), "hostnames")},
                       {"devices", gather_strings(*group, device.str(), "devices")}};
  }
  info.attrs = {{"xpand_version", XPAND_VERSION},
                {"git_commit", XPAND_GIT_COMMIT},
                {"torch_version", TORCH_VERSION},
                {"mpi_version", dist::mpi_version()},
                {"nccl_version", dist::nccl_version()},
                {"hdf5_version", store::hdf5_version()},
                {"blas_core", blas::core_name()},
                {"hostname", hostname()},
                {"device", device.str()},
                {"dataset_source", ds.source},
                {"start_time", now_iso()},
                {"world_size", std::to_string(world)},
                {"dist_backend", comm->backend()},
                {"dist_cut", cut_mode},
                {"grad_accum", std::to_string(accum)},
                {"threads", std::to_string(threads)},
                {"seed", std::to_string(seed)}};
  try {
    for (auto& s : sinks) s->on_start(info);  // group rank 0's run file (a full disk fails here)
  } catch (const std::exception& e) {
    // The other ranks of a group wait in the step's collectives: end the job with the reason.
    if (world > 1) dist::abort_job_if_distributed(kExitFailure, fmt::format("run {}: {}", result.run_id, e.what()));
    throw;
  }
  // The run file's identity, checked at the end: a directory deleted or a file replaced under a
  // running job must not end in "completed, results: <a path that holds nothing>".
  const FileId written = opts.write_file && root ? file_id(result.path) : FileId{};

  // --- the step loop ---
  torch::Tensor focus;  // data.focus_classes: a bool per class
  if (info.focus) {
    focus = torch::zeros({ds.num_classes}, torch::kBool);
    for (int64_t c : cfg.get_ints("data.focus_classes")) focus[c] = true;
    focus = focus.to(device);  // where the labels are, once
  }
  auto do_eval = [&](int64_t step) {
    EvalMetrics e;
    e.step = step;
    sync_buffers();
    torch::NoGradGuard ng;
    net->eval();
    // Evaluation runs on the collapsed network; its distance to the trained one is recorded.
    auto dense = model::network_collapse(cfg, ds, *net);
    dense->eval();
    int64_t eb = cfg.get_int("data.eval_batch_size"), cap = cfg.get_int("data.eval_max_samples");
    int64_t lm_batches = ds.task == data::Task::LanguageModel ? cfg.get_int("data.eval_batches") : 0;
    auto test_batches = ds.eval_batches("test", eb, cap, lm_batches);
    auto tr = evaluate(*dense, ds, ds.eval_batches("train", eb, cap, lm_batches), *comm);
    auto te = evaluate(*dense, ds, test_batches, *comm, focus);
    e.train_loss = tr.loss, e.train_acc = tr.acc, e.test_loss = te.loss, e.test_acc = te.acc;
    e.test_focus_acc = te.focus_acc, e.test_rest_acc = te.rest_acc;
    auto a = net->forward(test_batches.front().x), b = dense->forward(test_batches.front().x);
    e.collapse_error = (a - b).abs().max().item<double>() / std::max(1e-300, a.abs().max().item<double>());
    net->train();
    result.final_eval = e;
    for (auto& s : sinks) s->on_eval(e);
  };

  std::string status = "completed", error;
  net->train();
  reset_peak_rss();  // mem_peak measures training, not set-up
  try {
    for (int64_t step = start_step; step < total; ++step) {
      Timer t;
      expand.before_step(step, *opt);
      double lr = sched.at(step);
      optimizer_set_lr(*opt, lr);
      // This rank's rows of the global batch, in `accum` micro-batches. Each micro-batch loss is
      // weighted by its share of the global batch, so the gradients summed over micro-batches and
      // ranks are exactly the gradient of the global batch's mean loss.
      data::Batch b = ds.train_batch(seed, step, batch, rank, world);
      const int64_t rows = b.x.size(0);
      // Gradients start undefined (libtorch's zero_grad() zeroes them): backward then hands each
      // tensor the buffer it computed instead of adding it to zeros, one pass over memory less.
      for (auto& group : opt->param_groups())
        for (auto& p : group.params()) p.mutable_grad() = torch::Tensor();
      if (subspace) net->zero_grad(/*set_to_none=*/true);  // theta's gradients are not the optimizer's
      if (cut)                                             // W_eff once per step, as a detached leaf the forward uses
        for (auto& slot : net->slots())
          if (cut_this(slot, batch / world / accum)) slot.param->cut_begin();  // same choice on every rank
      double loss_local = 0;
      for (int64_t m = 0; m < accum; ++m) {
        const int64_t lo = m * rows / accum, hi = (m + 1) * rows / accum;
        if (m == accum - 1 && world > 1 && !subspace) reducer.arm(reduced_tensors(*net, cut));
        auto xs = b.x.narrow(0, lo, hi - lo), ys = b.y.narrow(0, lo, hi - lo);
        torch::Tensor loss;
        {
          Autocast autocast(bf16, device);  // the forward and the loss; backward runs outside, as in PyTorch
          loss = loss_of(ds, net->forward(xs), ys) * (double(hi - lo) / double(batch));
        }
        loss.backward();
        loss_local += loss.item<double>();
      }
      dist::ReduceStats comm_stats;
      if (subspace) {
        subspace->pull_grad();  // dL/domega = P^T dL/dtheta: d numbers instead of theta's D
        if (world > 1) {        // omega's gradient and those of the tensors outside the subspace, in one message
          Timer tc;
          std::vector<torch::Tensor> grads = {subspace->omega().grad().reshape(-1)};
          for (auto& p : subspace_rest)
            grads.push_back(p.grad().defined() ? p.grad().reshape(-1) : torch::zeros({p.numel()}, p.options()));
          torch::Tensor g = grads.size() == 1 ? subspace->omega().mutable_grad() : torch::cat(grads);
          comm->allreduce(g, dist::ReduceOp::Sum, "subspace gradient");
          if (grads.size() > 1) {
            int64_t at = 0;
            auto put = [&](torch::Tensor& grad, int64_t n) {
              grad.view(-1).copy_(g.narrow(0, at, n));
              at += n;
            };
            put(subspace->omega().mutable_grad(), subspace->omega().numel());
            for (auto& p : subspace_rest) {
              if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
              put(p.mutable_grad(), p.numel());
            }
          }
          comm_stats.comm_seconds = comm_stats.exposed_seconds = tc.seconds();
          comm_stats.bytes = g.numel() * int64_t(g.element_size());
        }
      } else if (world > 1) {
        comm_stats = reducer.finish();
      }
      if (cut)
        for (auto& slot : net->slots()) slot.param->cut_finish();  // cut gradients -> raw tensors
      double loss_v = world > 1 ? comm->allreduce_scalar(loss_local, dist::ReduceOp::Sum, "step loss") : loss_local;
      // A tensor no gradient reached in this step gets zeros, as the reducer gives it on N ranks: the
      // optimizer steps it either way (weight decay, momentum), on one rank as on many.
      for (auto& p : params)
        if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
      double grad_norm = torch::nn::utils::clip_grad_norm_(params, clip > 0 ? clip : INFINITY);
      if (!std::isfinite(loss_v) || !std::isfinite(grad_norm)) {
        status = "diverged";
        error = fmt::format("non-finite {} at step {} (loss {}, grad norm {})",
                            std::isfinite(loss_v) ? "gradient" : "loss", step + 1, loss_v, grad_norm);
        log::warn("run {} diverged: {}", result.run_id, error);
        result.losses.push_back(loss_v);
        break;
      }
      opt->step();
      if (subspace) subspace->push();  // theta = theta0 + P omega
      result.losses.push_back(loss_v);
      result.steps = step + 1;
      StepMetrics m{
          step + 1,        double(step + 1) / double(spe), (step + 1) * batch, loss_v, lr, grad_norm, t.seconds(),
          peak_rss_bytes()};
      m.time_comm = comm_stats.comm_seconds;
      m.time_comm_exposed = comm_stats.exposed_seconds;
      m.time_compute = m.time_step - m.time_comm_exposed;
      m.comm_bytes = result.comm_bytes = comm_stats.bytes;
      result.mem_peak = m.mem_peak;
      Timer ts;
      for (auto& s : sinks) s->on_step(m);
      result.sink_seconds += ts.seconds();
      result.step_seconds += t.seconds();
      const bool evaluated = (step + 1) % eval_every == 0 || step + 1 == total;
      if (evaluated) do_eval(step + 1);
      if ((snapshot_every > 0 && (step + 1) % snapshot_every == 0) || step + 1 == total) {
        sync_buffers();  // collective: every rank, before rank 0 writes
        if (root) {
          auto snap = snapshot_of(*net, snapshot_factors);
          for (auto& s : sinks) s->on_snapshot(step + 1, snap);
        }
      }
      auto checkpoint_now = [&] {
        // The run file holds every row up to this step before the checkpoint that resumes after it.
        for (auto& s : sinks) s->on_checkpoint(step + 1);
        sync_buffers();  // batch-norm statistics: the group's mean, which every rank resumes from
        CheckpointInfo ci;
        ci.step = step + 1;
        ci.run_id = result.run_id;
        checkpoint_save(ckpt_path, ci, *net, params, *opt, expand, *group, compression, extra);
      };
      const bool scheduled = checkpoint_every > 0 ? (step + 1) % checkpoint_every == 0 || step + 1 == total : evaluated;
      if (opts.write_file && scheduled) checkpoint_now();
      // Preemption (SIGTERM/SIGINT/SIGUSR1): every rank of the group stops at the same step boundary.
      int sig = signals::preempt_requested();
      if (world > 1) sig = int(group->allreduce_scalar(double(sig), dist::ReduceOp::Max, "preemption check"));
      const bool stop_here = opts.stop_after > 0 && step + 1 == opts.stop_after;  // the same on every rank
      if ((sig != 0 || stop_here) && step + 1 < total) {
        if (opts.write_file && !scheduled) checkpoint_now();
        status = "preempted";
        error = fmt::format("stopped {} after step {} of {}; `xpand train` (or the sweep) resumes it{}",
                            sig != 0 ? fmt::format("by signal {}", sig) : std::string("as asked (stop_after)"),
                            step + 1, total, opts.write_file ? " from the checkpoint at that step" : "");
        log::warn("run {}: {}", result.run_id, error);
        break;
      }
    }
  } catch (const std::exception& e) {
    // The run file records the failure (status "failed", the message) before the error propagates.
    for (auto& s : sinks) {
      try {
        s->on_end("failed", e.what(), {{"end_time", now_iso()}, {"steps", std::to_string(result.steps)}});
      } catch (const std::exception&) {
      }
    }
    // In a group, end the job now: unwinding would wait on collectives the other ranks never
    // finish, and this rank's message would be lost behind their timeout.
    if (world > 1)
      dist::abort_job_if_distributed(kExitFailure, fmt::format("run {} failed: {}", result.run_id, e.what()));
    throw;
  }

  result.status = status;
  result.wall_seconds = wall.seconds();
  std::map<std::string, std::string> end_attrs = {{"end_time", now_iso()},
                                                  {"steps", std::to_string(result.steps)},
                                                  {"wall_seconds", fmt::format("{:.3f}", result.wall_seconds)}};
  for (auto& s : sinks) s->on_end(status, error, end_attrs);
  if (opts.write_file && root && !(file_id(result.path) == written))
    throw Error(
        fmt::format("{} no longer names the run file this run wrote (its directory was removed or the file "
                    "replaced while the run trained): its results are lost; train it again",
                    result.path));
  if (opts.write_file && root && opts.update_index) {
    try {
      store::IndexOptions io;
      io.lock_seconds = kIndexLockSeconds;  // the index is a cache: never hang a finished run on it
      Timer ti;
      const store::IndexResult ir = store::index_rebuild(out_dir, io);
      log::debug("index: {} run(s), {} reused from the previous index, in {:.3f} s", ir.runs, ir.reused, ti.seconds());
    } catch (const std::exception& e) {
      log::warn("could not update {}/index.h5: {}", out_dir, e.what());
    }
  }
  return result;
}

void print_summary(const std::vector<RunResult>& results) {
  fmt::print("\n{:<34} {:<10} {:>7} {:>10} {:>9} {:>10} {:>9} {:>8} {:>9}\n", "run", "status", "steps", "train_loss",
             "train_acc", "test_loss", "test_acc", "time_s", "peak_MiB");
  for (const auto& r : results)
    fmt::print("{:<34} {:<10} {:>7} {:>10.4f} {:>9.4f} {:>10.4f} {:>9.4f} {:>8.1f} {:>9.1f}\n", r.run_id, r.status,
               r.steps, r.final_eval.train_loss, r.final_eval.train_acc, r.final_eval.test_loss, r.final_eval.test_acc,
               r.wall_seconds, double(r.mem_peak) / 1048576.0);
  for (const auto& r : results)
    if (!r.path.empty()) fmt::print("results: {}\n", r.path);
}

}  // namespace xpand::train
