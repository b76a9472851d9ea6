// The run's provenance (see provenance.h).
#include "train/provenance.h"

#include <torch/version.h>

#include <filesystem>

#include "core/blas.h"
#include "core/build_info.h"
#include "core/host.h"
#include "dist/context.h"
#include "store/run_file.h"

namespace xpand::train {

RunInfo make_run_info(const RunIdentity& id, const TrainSettings& s, const data::Dataset& ds, int64_t threads,
                      int64_t trainable, torch::Device device, dist::Communicator& group, const std::string& backend,
                      const std::string& cut_mode) {
  RunInfo info;
  info.run_id = id.run_id;
  info.path = id.write_file ? id.path : "";
  info.name = s.name;
  info.config_yaml = id.config_yaml;
  info.total_steps = s.total;
  info.steps_per_epoch = s.steps_per_epoch;
  info.world_size = group.size();
  info.language_model = ds.task == data::Task::LanguageModel;
  info.dtype = s.dtype_name;
  info.axes = id.axes;
  info.focus = !s.focus_classes.empty();
  // relative to runs/
  info.checkpoint_file = "../checkpoints/" + std::filesystem::path(id.checkpoint_path).filename().string();
  if (id.resume_step > 0) {
    info.resume_from = id.path;
    info.resume_step = id.resume_step;
  }
  dist::Context* ctx = dist::Context::get();
  info.int_attrs = {
      {"ranks_per_run", group.size()}, {"trainable_params", trainable}, {"world_ranks", ctx ? ctx->world_size() : 1}};
  info.list_attrs = {{"hostnames", group.allgather_strings(hostname(), "hostnames")},
                     {"devices", group.allgather_strings(device.str(), "devices")}};
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
                {"world_size", std::to_string(group.size())},
                {"dist_backend", backend},
                {"dist_cut", cut_mode},
                {"grad_accum", std::to_string(s.grad_accum)},
                {"threads", std::to_string(threads)},
                {"seed", std::to_string(s.seed)}};
  return info;
}

}  // namespace xpand::train
