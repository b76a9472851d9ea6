// Checkpoint files (see checkpoint.h). Layout of <out>/checkpoints/<run_id>.h5:
//   attrs: schema_version, run_id, step, world_size, optimizer, expand_index
//   /params/<name>, /buffers/<name>      raw tensors in their training dtype
//   /extra/<name>                         tensors outside the network (subspace training's omega)
//   /optimizer/<i>/<field>                state of the i-th trainable tensor (exp_avg, exp_avg_sq,
//                                         max_exp_avg_sq, step; momentum_buffer)
//   /rng/cpu                              (world_size, n) uint8: each rank's CPU generator state
#include "train/checkpoint.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <functional>

#include "core/error.h"
#include "store/run_file.h"
#include "train/optim.h"

namespace xpand::train {

namespace {

constexpr int64_t kCheckpointSchema = 1;

void write_tensor(store::RunWriter& w, const std::string& path, const torch::Tensor& t0) {
  auto t = t0.detach().cpu().contiguous();
  std::vector<int64_t> shape = t.sizes().vec();
  switch (t.scalar_type()) {
    case torch::kFloat32:
      w.write_array(path, shape, t.data_ptr<float>());
      break;
    case torch::kFloat64:
      w.write_array(path, shape, t.data_ptr<double>());
      break;
    case torch::kInt64:
      w.write_array(path, shape, t.data_ptr<int64_t>());
      break;
    case torch::kUInt8:
      w.write_array(path, shape, t.data_ptr<uint8_t>());
      break;
    default: {  // bf16/fp16 and others: float32 holds them exactly
      auto f = t.to(torch::kFloat32);
      w.write_array(path, shape, f.data_ptr<float>());
    }
  }
}

torch::Tensor read_tensor(const store::RunReader& r, const std::string& path, torch::ScalarType dtype) {
  std::vector<int64_t> shape;
  std::vector<double> v = r.read_array(path, &shape);
  return torch::from_blob(v.data(), shape, torch::kFloat64).clone().to(dtype);
}

template <typename State>
void write_adam_state(store::RunWriter& w, const std::string& g, const State& s) {
  const int64_t step = s.step();
  w.write_array(g + "/step", {}, &step);
  write_tensor(w, g + "/exp_avg", s.exp_avg());
  write_tensor(w, g + "/exp_avg_sq", s.exp_avg_sq());
  if (s.max_exp_avg_sq().defined()) write_tensor(w, g + "/max_exp_avg_sq", s.max_exp_avg_sq());
}

template <typename State>
std::unique_ptr<State> read_adam_state(const store::RunReader& r, const std::string& g, const torch::Tensor& p) {
  auto s = std::make_unique<State>();
  s->step(int64_t(r.read_array(g + "/step", nullptr).at(0)));
  s->exp_avg(read_tensor(r, g + "/exp_avg", p.scalar_type()).to(p.device()));
  s->exp_avg_sq(read_tensor(r, g + "/exp_avg_sq", p.scalar_type()).to(p.device()));
  if (r.has_object(g + "/max_exp_avg_sq"))
    s->max_exp_avg_sq(read_tensor(r, g + "/max_exp_avg_sq", p.scalar_type()).to(p.device()));
  return s;
}

std::string optimizer_kind(torch::optim::Optimizer& opt) {
  if (dynamic_cast<torch::optim::AdamW*>(&opt)) return "adamw";
  if (dynamic_cast<torch::optim::Adam*>(&opt)) return "adam";
  if (dynamic_cast<torch::optim::SGD*>(&opt)) return "sgd";
  return "other";
}

// Sets a parameter or buffer from the checkpoint: values, and the shape (the rotate schedule
// changes which layers hold factors).
void assign(torch::Tensor& t, const torch::Tensor& v) {
  torch::NoGradGuard ng;
  if (t.sizes() == v.sizes())
    t.copy_(v);
  else
    t.set_data(v.to(t.device(), t.scalar_type()));
}

}  // namespace

std::string checkpoint_path(const std::string& run_path) {
  std::filesystem::path p(run_path);
  return (p.parent_path().parent_path() / "checkpoints" / p.filename()).string();
}

void checkpoint_save(const std::string& path, const CheckpointInfo& info, model::Network& net,
                     const std::vector<torch::Tensor>& params, torch::optim::Optimizer& opt,
                     const ExpandSchedule& expand, dist::Communicator& group, int compression,
                     const NamedTensors& extra) {
  // Every rank's CPU generator state, gathered (rank 0 writes them).
  torch::Tensor mine;
  {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    mine = gen.get_state().clone();
  }
  const torch::Tensor all = group.allgather(mine.contiguous(), "checkpoint RNG states");
  if (group.rank() != 0) return;

  const std::string tmp = fmt::format("{}.tmp-{}", path, ::getpid());
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  try {
    store::WriterOptions wo;
    wo.compression = compression;
    wo.checksum = true;  // a flipped bit must not resume silently (checkpoint_verify)
    store::RunWriter w(tmp, wo);
    w.set_attr("schema_version", kCheckpointSchema);
    w.set_attr("run_id", info.run_id);
    w.set_attr("step", info.step);
    w.set_attr("world_size", int64_t(group.size()));
    w.set_attr("optimizer", optimizer_kind(opt));
    w.set_attr("expand_index", expand.current_index());
    w.create_group("/params");
    for (const auto& p : net.named_parameters()) write_tensor(w, "/params/" + p.key(), p.value());
    w.create_group("/buffers");
    for (const auto& b : net.named_buffers()) write_tensor(w, "/buffers/" + b.key(), b.value());
    if (!extra.empty()) {
      w.create_group("/extra");
      for (const auto& [name, t] : extra) write_tensor(w, "/extra/" + name, t.detach());
    }
    w.create_group("/optimizer");
    auto& state = opt.state();
    for (size_t i = 0; i < params.size(); ++i) {
      auto it = state.find(optimizer_state_key(params[i]));
      if (it == state.end()) continue;  // no step taken for it yet
      const std::string g = fmt::format("/optimizer/{}", i);
      w.create_group(g);
      if (auto* s = dynamic_cast<torch::optim::AdamWParamState*>(it->second.get()))
        write_adam_state(w, g, *s);
      else if (auto* s = dynamic_cast<torch::optim::AdamParamState*>(it->second.get()))
        write_adam_state(w, g, *s);
      else if (auto* s = dynamic_cast<torch::optim::SGDParamState*>(it->second.get())) {
        if (s->momentum_buffer().defined()) write_tensor(w, g + "/momentum_buffer", s->momentum_buffer());
      }
    }
    write_tensor(w, "/rng/cpu", all.to(torch::kUInt8));
    w.close();
    store::commit_file(tmp, path);
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    throw;
  }
}

CheckpointInfo checkpoint_peek(const std::string& path) {
  store::RunReader r(path);
  CheckpointInfo info;
  info.step = r.attr_int("step");
  info.run_id = r.attr_string("run_id");
  info.world_size = r.attr_int("world_size");
  return info;
}

void checkpoint_verify(const std::string& path, const std::vector<std::string>& expected) {
  store::RunReader r(path);
  for (const auto& p : expected)
    if (!r.has_object(p)) throw Error(fmt::format("{}: checkpoint lacks {}", path, p));
  for (const char* g : {"/params", "/buffers"}) {
    const size_t want = size_t(std::count_if(
        expected.begin(), expected.end(), [&](const std::string& p) { return p.rfind(std::string(g) + "/", 0) == 0; }));
    if (r.has_object(g) && r.children(g).size() != want)
      throw Error(fmt::format("{}: checkpoint holds {} tensors under {}, the network has {}", path,
                              r.children(g).size(), g, want));
  }
  for (const char* a : {"run_id", "optimizer"}) r.attr_string(a);
  for (const char* a : {"step", "world_size", "expand_index", "schema_version"}) r.attr_int(a);
  for (const char* g : {"/params", "/buffers", "/optimizer", "/rng"})
    if (!r.has_object(g)) throw Error(fmt::format("{}: checkpoint lacks {}", path, g));
  // Every dataset read whole: HDF5 checks each chunk's Fletcher-32 checksum (checkpoints written
  // before checksums were added are read all the same, unverified).
  std::function<void(const std::string&)> visit = [&](const std::string& group) {
    for (const auto& name : r.children(group)) {
      const std::string p = group + "/" + name;
      bool is_group = true;
      try {
        r.children(p);
      } catch (const store::StoreError&) {
        is_group = false;
      }
      if (is_group)
        visit(p);
      else
        r.read_array(p, nullptr);
    }
  };
  for (const char* g : {"/params", "/buffers", "/optimizer", "/rng", "/extra"})
    if (r.has_object(g)) visit(g);
}

CheckpointInfo checkpoint_load(const std::string& path, model::Network& net, const std::vector<torch::Tensor>& params,
                               torch::optim::Optimizer& opt, ExpandSchedule& expand, int rank,
                               const NamedTensors& extra) {
  store::RunReader r(path);
  CheckpointInfo info;
  info.step = r.attr_int("step");
  info.run_id = r.attr_string("run_id");
  info.world_size = r.attr_int("world_size");
  if (r.attr_string("optimizer") != optimizer_kind(opt))
    throw Error(fmt::format("{}: checkpoint of optimizer {} cannot resume optimizer {}", path,
                            r.attr_string("optimizer"), optimizer_kind(opt)));
  expand.restore(r.attr_int("expand_index"));

  auto load_all = [&](const std::string& group, torch::OrderedDict<std::string, torch::Tensor> named) {
    const auto stored = r.children(group);
    if (stored.size() != named.size())
      throw Error(fmt::format("{}: checkpoint holds {} tensors under {}, the network has {}", path, stored.size(),
                              group, named.size()));
    for (auto& item : named) {
      const std::string p = group + "/" + item.key();
      if (!r.has_object(p)) throw Error(fmt::format("{}: checkpoint lacks {}", path, p));
      assign(item.value(), read_tensor(r, p, item.value().scalar_type()));
    }
  };
  load_all("/params", net.named_parameters());
  load_all("/buffers", net.named_buffers());
  for (const auto& [name, t] : extra) {
    const std::string p = "/extra/" + name;
    if (!r.has_object(p)) throw Error(fmt::format("{}: checkpoint lacks {}", path, p));
    torch::Tensor dst = t;
    assign(dst, read_tensor(r, p, t.scalar_type()));
  }

  auto& state = opt.state();
  state.clear();
  const std::string kind = optimizer_kind(opt);
  for (size_t i = 0; i < params.size(); ++i) {
    const std::string g = fmt::format("/optimizer/{}", i);
    if (!r.has_object(g)) continue;
    const auto& p = params[i];
    if (kind == "adamw")
      state[optimizer_state_key(p)] = read_adam_state<torch::optim::AdamWParamState>(r, g, p);
    else if (kind == "adam")
      state[optimizer_state_key(p)] = read_adam_state<torch::optim::AdamParamState>(r, g, p);
    else if (kind == "sgd") {
      auto s = std::make_unique<torch::optim::SGDParamState>();
      if (r.has_object(g + "/momentum_buffer"))
        s->momentum_buffer(read_tensor(r, g + "/momentum_buffer", p.scalar_type()).to(p.device()));
      state[optimizer_state_key(p)] = std::move(s);
    }
  }

  std::vector<int64_t> shape;
  std::vector<double> rng = r.read_array("/rng/cpu", &shape);
  if (shape.size() == 2 && rank < shape[0]) {
    auto row =
        torch::from_blob(rng.data() + size_t(rank) * size_t(shape[1]), {shape[1]}, torch::kFloat64).to(torch::kUInt8);
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(row);
  }
  return info;
}

}  // namespace xpand::train
