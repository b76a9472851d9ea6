// The run's provenance (see provenance.h).
#include "train/provenance.h"

#include <torch/version.h>

#include <filesystem>

#include "core/blas.h"
#include "core/build_info.h"
#include "core/host.h"
#include "dist/context.h"
#include "model/slots.h"
#include "param/param.h"
#include "param/spec.h"
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
      {"ranks_per_run", group.size()}, {"trainable_params", trainable}, {"world_ranks", ctx ? ctx->world_size() : 1},
      {"world_size", group.size()},    {"grad_accum", s.grad_accum},    {"threads", threads},
      {"seed", int64_t(s.seed)},       {"num_classes", ds.num_classes}};
  // What the model's input is, so an exported model can be fed without the dataset code.
  info.float_attrs = {{"input_div", ds.input_div}, {"input_mean", ds.input_mean}, {"input_std", ds.input_std}};
  info.ints_attrs = {{"input_shape", ds.sample_shape}};
  if (ds.task == data::Task::LanguageModel) {
    info.int_attrs["block_size"] = ds.block_size;
    info.ints_attrs["vocab"] = std::vector<int64_t>(ds.vocab.begin(), ds.vocab.end());
    for (auto& b : info.ints_attrs["vocab"]) b &= 0xff;  // byte values of the token ids
  }
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
                {"dist_backend", backend},
                {"dist_cut", cut_mode}};
  return info;
}

void add_layers(RunInfo& info, const config::Config& cfg, model::Network& net) {
  const model::NetworkReport report = model::network_report(net, 1);  // per sample
  auto named = net.named_parameters();
  size_t i = 0;
  for (auto& slot : net.slots()) {
    const model::LayerReport& l = report.layers.at(i++);
    const param::Spec spec = param::spec_for(cfg, slot.name);
    RunInfo::Layer row;
    row.name = slot.name;
    row.kind = spec.kind;
    row.shape = l.shape;
    row.order = l.order;
    if (spec.kind == "expanded") {
      row.factor = spec.get_float("factor");
      row.depth = spec.get_int("depth");
      for (const auto& p : slot.param->parameters())
        if (p.dim() >= 2) {
          row.inner = p.size(0);  // the first factor's output: the first inner width
          break;
        }
    }
    if (spec.kind == "lowrank" || spec.kind == "lora") row.rank = row.inner = spec.get_int("rank");
    int64_t weights = 1;
    for (int64_t d : slot.param->shape().dims) weights *= d;
    const bool bias =
        slot.param->has_bias() || (named.find(slot.name + "_bias") && named[slot.name + "_bias"].defined());
    row.collapsed = weights + (bias ? slot.param->shape().out() : 0);
    row.trainable = l.trainable;
    row.cut = l.cut;
    row.flops_per_sample = l.flops;
    info.layers.push_back(row);
  }
  const model::OutsideSlots outside(net);
  for (auto& kv : named)
    if (outside(kv.key())) info.other_params += kv.value().numel();
}

}  // namespace xpand::train
