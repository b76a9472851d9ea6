// Exported models (see model_file.h).
#include "train/model_file.h"

#include <fmt/format.h>
#include <torch/serialize.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <variant>

#include "core/error.h"
#include "core/log.h"
#include "model/slots.h"
#include "param/dense.h"
#include "store/index.h"
#include "store/run_file.h"

namespace xpand::train {

namespace {

using ArchValue = std::variant<int64_t, double, std::string, std::vector<int64_t>, std::vector<std::string>>;
using Arch = std::vector<std::pair<std::string, ArchValue>>;

// Modules in forward order; a tensor belongs to the longest of them that prefixes its name.
std::vector<std::string> layer_order_of(const config::Config& cfg) {
  std::vector<std::string> order;
  const std::string kind = cfg.get_string("model.kind");
  if (kind == "mlp") {
    for (size_t i = 1; i < cfg.get_ints("model.widths").size(); ++i) order.push_back(fmt::format("fc{}", i));
  } else if (kind == "cnn") {
    const bool bn = cfg.get_bool("model.batch_norm");
    const size_t convs = cfg.get_ints("model.channels").size();
    for (size_t i = 1; i <= convs; ++i) {
      order.push_back(fmt::format("conv{}", i));
      if (bn) order.push_back(fmt::format("bn{}", i));
    }
    for (size_t i = 1; i <= cfg.get_ints("model.fc").size() + 1; ++i) order.push_back(fmt::format("fc{}", i));
  } else if (kind == "gpt") {
    order = {"wte", "wpe"};
    for (int64_t i = 0; i < cfg.get_int("model.n_layer"); ++i)
      for (const char* m : {"ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"})
        order.push_back(fmt::format("h{}.{}", i, m));
    order.push_back("ln_f");
  }
  return order;
}

// The architecture attributes a program rebuilds the network from (docs/FORMAT.md).
Arch architecture(const ModelFile& m, const config::Config& cfg) {
  Arch a = {{"model", m.kind},
            {"dtype", m.dtype},
            {"layer_order", m.layer_order},
            {"input_shape", m.input_shape},
            {"num_classes", m.num_classes}};
  if (m.kind == "gpt") {
    a.insert(a.end(), {{"n_layer", cfg.get_int("model.n_layer")},
                       {"n_head", cfg.get_int("model.n_head")},
                       {"n_embd", cfg.get_int("model.n_embd")},
                       {"block_size", m.block_size},
                       {"vocab", m.vocab},
                       {"layer_norm_eps", 1e-5}});
    return a;
  }
  a.insert(a.end(), {{"activation", cfg.get_string("model.activation")},
                     {"input_div", m.input_div},
                     {"input_mean", m.input_mean},
                     {"input_std", m.input_std}});
  if (m.kind == "mlp") {
    a.insert(a.end(), {{"widths", cfg.get_ints("model.widths")}, {"residual", cfg.get_ints("model.residual")}});
  } else {
    const int64_t k = cfg.get_int("model.kernel_size");
    a.insert(a.end(), {{"channels", cfg.get_ints("model.channels")},
                       {"kernel_size", k},
                       {"padding", cfg.get_string("model.padding") == "same" ? k / 2 : int64_t(0)},
                       {"fc", cfg.get_ints("model.fc")},
                       {"batch_norm", int64_t(cfg.get_bool("model.batch_norm"))},
                       {"batch_norm_eps", 1e-5},
                       {"pool", int64_t(2)}});
  }
  return a;
}

// Orders tensors by the module they belong to, in forward order.
void sort_by_layer_order(ModelFile* m) {
  auto rank = [&](const std::string& name) {
    size_t best = m->layer_order.size(), len = 0;
    for (size_t i = 0; i < m->layer_order.size(); ++i) {
      const std::string p = m->layer_order[i] + ".";
      if (name.compare(0, p.size(), p) == 0 && p.size() > len) best = i, len = p.size();
    }
    return best;
  };
  // Within a module, PyTorch's order: weight, bias, then batch norm's buffers.
  auto part = [](const std::string& name) {
    static const std::vector<std::string> parts = {"weight", "bias", "running_mean", "running_var",
                                                   "num_batches_tracked"};
    const std::string last = name.substr(name.rfind('.') + 1);
    return size_t(std::find(parts.begin(), parts.end(), last) - parts.begin());
  };
  std::stable_sort(m->tensors.begin(), m->tensors.end(), [&](const ModelTensor& a, const ModelTensor& b) {
    return std::make_pair(rank(a.name), part(a.name)) < std::make_pair(rank(b.name), part(b.name));
  });
}

// The names every model of this configuration must hold: those of the dense network built from it.
std::set<std::string> expected_names(const config::Config& cfg, const data::Dataset& ds) {
  model::NetworkPtr net;
  {
    param::ShapeOnlyScope shapes_only;
    net = model::network_build(cfg, ds, param::factory_from_config(cfg));
  }
  std::set<std::string> names;
  for (auto& s : net->slots()) names.insert(s.name + ".weight");
  const model::OutsideSlots outside(*net);
  auto add = [&](const std::string& n) {
    if (outside(n)) names.insert(exported_name(n));
  };
  for (auto& kv : net->named_parameters()) add(kv.key());
  for (auto& kv : net->named_buffers()) add(kv.key());
  return names;
}

void check_complete(const ModelFile& m, const std::string& what, const std::string& hint = "") {
  const config::Config cfg = model_config(m);
  const data::Dataset ds = model_dataset_shapes(m, cfg);
  for (const auto& n : expected_names(cfg, ds))
    if (!m.find(n)) throw DataError(fmt::format("{}: {} has no {}{}", m.path, what, n, hint));
}

// A run file from before xpand recorded its input (input_shape, normalisation, vocabulary): they
// are read from its dataset as its config names it.
void input_from_dataset(ModelFile* m, const config::Config& cfg) {
  log::warn(
      "{}: the run file does not record its input (it predates exported models); taking shapes, "
      "normalisation and vocabulary from its dataset ({})",
      m->path, cfg.get_string("data.name"));
  data::Dataset ds;
  try {
    ds = data::dataset_load(cfg, torch::kCPU);
  } catch (const Error& e) {
    throw DataError(fmt::format("{}: the run file does not record its input and its dataset cannot be read: {}",
                                m->path, e.what()));
  }
  m->input_shape = ds.sample_shape;
  m->num_classes = ds.num_classes;
  m->input_div = ds.input_div, m->input_mean = ds.input_mean, m->input_std = ds.input_std;
  m->block_size = ds.block_size;
  for (char c : ds.vocab) m->vocab.push_back(int64_t(static_cast<unsigned char>(c)));
}

}  // namespace

const ModelTensor* ModelFile::find(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

std::string exported_name(const std::string& n) {
  static const std::regex bn("conv(\\d+)_bn\\.(.+)"), ln("h(\\d+)\\.ln([12])");
  std::smatch m;
  if (std::regex_match(n, m, bn)) return "bn" + m[1].str() + "." + m[2].str();
  if (std::regex_match(n, m, ln)) return "h" + m[1].str() + ".ln_" + m[2].str() + ".weight";
  if (n == "ln_f" || n == "wte" || n == "wpe") return n + ".weight";
  return n;
}

bool is_model_file(const std::string& path) {
  try {
    store::RunReader r(path);
    return r.has_attr("kind") && r.dtype_attr("kind") == "string" && r.attr_string("kind") == kModelFileKind;
  } catch (const store::StoreError&) {
    return false;
  }
}

ModelFile model_from_run(const std::string& run_path, const std::string& group, int64_t step) {
  try {
    store::RunReader r(run_path);
    ModelFile m;
    m.path = run_path;
    m.run_id = r.has_attr("run_id") ? r.attr_string("run_id") : "";
    m.source = std::filesystem::absolute(run_path).string();
    m.step = step;
    if (!r.has_attr("config")) throw DataError(fmt::format("{}: has no config attribute", run_path));
    m.config_yaml = r.attr_string("config");
    const config::Config cfg = model_config(m);
    if (r.has_attr("input_shape")) {
      m.input_shape = r.attr_ints_at("/", "input_shape");
      m.num_classes = r.attr_int("num_classes");
      m.input_div = r.attr_double("input_div");
      m.input_mean = r.attr_double("input_mean");
      m.input_std = r.attr_double("input_std");
      if (r.has_attr("block_size")) m.block_size = r.attr_int("block_size");
      if (r.has_attr("vocab")) m.vocab = r.attr_ints_at("/", "vocab");
    } else {
      input_from_dataset(&m, cfg);
    }
    m.kind = cfg.get_string("model.kind");
    m.dtype = cfg.get_string("dtype");
    m.layer_order = layer_order_of(cfg);
    for (const auto& layer : store::snapshot_layers(r, group)) {
      const std::string g = group + "/" + layer;
      if (r.has_attr_at(g, "nonlinear"))
        throw DataError(
            fmt::format("{}: layer {} is a nonlinear expansion (ReLU between its factors): it is not one "
                        "linear map, so the network has no collapsed model",
                        run_path, layer));
      for (const char* part : {"weight", "bias"}) {
        if (!r.has_object(g + "/" + part)) {
          if (std::string(part) == "weight") throw DataError(fmt::format("{}: {}/weight is missing", run_path, g));
          continue;
        }
        ModelTensor t;
        t.name = layer + "." + part;
        t.data = r.read_array(g + "/" + part, &t.shape);
        m.tensors.push_back(std::move(t));
      }
    }
    const std::string net = group + "/" + store::kSnapshotNetwork;
    if (r.has_object(net))
      for (const auto& name : r.children(net)) {
        ModelTensor t;
        t.name = exported_name(name);
        t.data = r.read_array(net + "/" + name, &t.shape);
        t.integer = name.size() > 20 && name.compare(name.size() - 20, 20, ".num_batches_tracked") == 0;
        m.tensors.push_back(std::move(t));
      }
    sort_by_layer_order(&m);
    check_complete(m, fmt::format("snapshot {}", step),
                   r.has_object(net) ? ""
                                     : " (it holds the layers only: the run file predates whole-network "
                                       "snapshots; train it again to export it)");
    return m;
  } catch (const store::StoreError& e) {
    throw DataError(e.what());
  } catch (const ConfigError& e) {
    throw DataError(fmt::format("{}: its config: {}", run_path, e.what()));
  }
}

ModelFile model_read(const std::string& path) {
  try {
    store::RunReader r(path);
    if (!is_model_file(path))
      throw DataError(fmt::format("{}: not an xpand model file (no kind attribute '{}')", path, kModelFileKind));
    if (!r.has_attr("format_version") || r.attr_int("format_version") != kModelFormatVersion)
      throw DataError(
          fmt::format("{}: model format version {} (this xpand reads {}): export it again with xpand "
                      "collapse",
                      path, r.has_attr("format_version") ? std::to_string(r.attr_int("format_version")) : "1",
                      kModelFormatVersion));
    ModelFile m;
    m.path = path;
    m.run_id = r.attr_string("run_id");
    m.source = r.attr_string("source");
    m.config_yaml = r.attr_string("config");
    m.step = r.attr_int("step");
    m.kind = r.attr_string("model");
    m.dtype = r.attr_string("dtype");
    m.layer_order = r.attr_strings("layer_order");
    m.input_shape = r.attr_ints_at("/", "input_shape");
    m.num_classes = r.attr_int("num_classes");
    if (m.kind == "gpt") {
      m.block_size = r.attr_int("block_size");
      m.vocab = r.attr_ints_at("/", "vocab");
    } else {
      m.input_div = r.attr_double("input_div");
      m.input_mean = r.attr_double("input_mean");
      m.input_std = r.attr_double("input_std");
    }
    for (const auto& name : r.children("/state_dict")) {
      ModelTensor t;
      t.name = name;
      t.data = r.read_array("/state_dict/" + name, &t.shape);
      t.integer = r.dtype("/state_dict/" + name).rfind("int", 0) == 0;
      m.tensors.push_back(std::move(t));
    }
    sort_by_layer_order(&m);
    check_complete(m, "the model");
    return m;
  } catch (const store::StoreError& e) {
    throw DataError(e.what());
  } catch (const ConfigError& e) {
    throw DataError(fmt::format("{}: its config: {}", path, e.what()));
  }
}

namespace {

void write_h5(const ModelFile& m, const std::string& path, const Arch& arch) {
  store::RunWriter w(path);
  w.set_attr("kind", kModelFileKind);
  w.set_attr("format_version", kModelFormatVersion);
  w.set_attr("run_id", m.run_id);
  w.set_attr("step", m.step);
  w.set_attr("source", m.source);
  w.set_attr("config", m.config_yaml);
  for (const auto& [k, v] : arch) {
    if (auto* i = std::get_if<int64_t>(&v)) w.set_attr(k, *i);
    if (auto* d = std::get_if<double>(&v)) w.set_attr(k, *d);
    if (auto* s = std::get_if<std::string>(&v)) w.set_attr(k, *s);
    if (auto* l = std::get_if<std::vector<int64_t>>(&v)) w.set_attr_at("/", k, *l);
    if (auto* l = std::get_if<std::vector<std::string>>(&v)) w.set_attr_at("/", k, *l);
  }
  w.create_group("/state_dict");
  for (const auto& t : m.tensors) {
    const std::string p = "/state_dict/" + t.name;
    if (t.integer) {
      std::vector<int64_t> v(t.data.begin(), t.data.end());
      w.write_array(p, t.shape, v.data());
    } else if (m.dtype == "float64") {
      w.write_array(p, t.shape, t.data.data());
    } else {
      std::vector<float> v(t.data.begin(), t.data.end());  // exact: the run computed them in float32
      w.write_array(p, t.shape, v.data());
    }
  }
  w.close();
}

void write_pt(const ModelFile& m, const std::string& path, const Arch& arch) {
  const auto dtype = m.dtype == "float64" ? torch::kFloat64 : torch::kFloat32;
  c10::impl::GenericDict sd(c10::StringType::get(), c10::TensorType::get());
  for (const auto& t : m.tensors) {
    auto x = torch::tensor(t.data, torch::kFloat64).reshape(t.shape);
    sd.insert(t.name, x.to(t.integer ? torch::kInt64 : dtype));
  }
  c10::impl::GenericDict a(c10::StringType::get(), c10::AnyType::get());
  for (const auto& [k, v] : arch) std::visit([&, k = k](const auto& x) { a.insert(k, c10::IValue(x)); }, v);
  for (const auto& [k, v] : std::vector<std::pair<std::string, std::string>>{
           {"run_id", m.run_id}, {"source", m.source}, {"config", m.config_yaml}})
    a.insert(k, v);
  a.insert("step", m.step);
  a.insert("kind", std::string(kModelFileKind));
  a.insert("format_version", kModelFormatVersion);
  c10::impl::GenericDict top(c10::StringType::get(), c10::AnyType::get());
  top.insert("state_dict", sd);
  top.insert("architecture", a);
  const std::vector<char> bytes = torch::pickle_save(top);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
  out.close();
  if (!out) throw DataError(fmt::format("{}: cannot write", path));
}

}  // namespace

void model_write(const ModelFile& m, const std::string& path) {
  namespace fs = std::filesystem;
  const std::string tmp = fmt::format("{}.tmp-{}", path, ::getpid());
  const bool pt = fs::path(path).extension() == ".pt";
  if (!pt && fs::path(path).extension() != ".h5")
    throw ConfigError(fmt::format("-o {}: a model file is MODEL.h5 (HDF5) or MODEL.pt (torch.load)", path));
  try {
    const Arch arch = architecture(m, model_config(m));
    if (pt)
      write_pt(m, tmp, arch);
    else
      write_h5(m, tmp, arch);
    std::error_code ec;
    fs::rename(tmp, path, ec);
    if (ec) throw DataError(fmt::format("{}: cannot rename {} to it: {}", path, tmp, ec.message()));
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    try {
      throw;
    } catch (const store::StoreError& e) {
      throw DataError(e.what());
    }
  }
}

config::Config model_config(const ModelFile& m, const std::vector<std::string>& overrides) {
  // The collapsed network is dense: the parameterization keys (param, layers) of the run do not
  // apply to it, and a resolved config holds them all (at their defaults, too).
  YAML::Node root;
  try {
    root = YAML::Load(m.config_yaml);
  } catch (const YAML::Exception& e) {
    throw DataError(fmt::format("{}: its config is not YAML: {}", m.path, e.what()));
  }
  if (!root.IsMap()) throw DataError(fmt::format("{}: its config is not a YAML mapping", m.path));
  root.remove("param");
  root.remove("layers");
  YAML::Emitter out;
  out << root;
  return config::Config::load_string(out.c_str(), m.path + " (its config)", overrides);
}

data::Dataset model_dataset_shapes(const ModelFile& m, const config::Config& cfg) {
  data::Dataset ds;
  ds.name = cfg.get_string("data.name");
  ds.task = m.kind == "gpt" ? data::Task::LanguageModel : data::Task::Classification;
  ds.sample_shape = m.input_shape;
  ds.num_classes = m.num_classes;
  ds.block_size = m.block_size;
  ds.vocab.assign(m.vocab.begin(), m.vocab.end());
  ds.input_div = m.input_div, ds.input_mean = m.input_mean, ds.input_std = m.input_std;
  return ds;
}

model::NetworkPtr model_network(const ModelFile& m, const config::Config& cfg, const data::Dataset& ds,
                                torch::Device device) {
  torch::NoGradGuard ng;
  auto tensor = [&](const ModelTensor& t) { return torch::tensor(t.data, torch::kFloat64).reshape(t.shape); };
  auto make = [&](const std::string& layer, const param::WeightShape& s, const param::Init&) -> param::ParamPtr {
    const ModelTensor* w = m.find(layer + ".weight");
    if (!w) throw DataError(fmt::format("{}: has no {}.weight", m.path, layer));
    if (w->shape != s.dims)
      throw DataError(fmt::format("{}: {}.weight is {}, the network needs {}", m.path, layer, fmt::join(w->shape, "x"),
                                  fmt::join(s.dims, "x")));
    const ModelTensor* b = m.find(layer + ".bias");
    return std::make_shared<param::Dense>(s, tensor(*w), b ? tensor(*b) : torch::Tensor());
  };
  auto gen = at::detail::getDefaultCPUGenerator();
  auto rng_state = gen.get_state();
  model::NetworkPtr net = model::network_build(cfg, ds, make);
  gen.set_state(rng_state);
  net->to(device, m.dtype == "float64" ? torch::kFloat64 : torch::kFloat32);
  std::vector<std::string> slots;
  for (auto& s : net->slots()) slots.push_back(s.name);
  auto fill = [&](const std::string& name, torch::Tensor& v) {
    for (const auto& s : slots) {
      if (name.compare(0, s.size() + 1, s + ".") == 0) return;  // the layer's own tensors, set above
      if (name == s + "_bias") return void(v.zero_());          // folded into the layer's bias
    }
    const ModelTensor* t = m.find(exported_name(name));
    if (!t) throw DataError(fmt::format("{}: has no {}", m.path, exported_name(name)));
    if (t->shape != v.sizes().vec())
      throw DataError(fmt::format("{}: {} is {}, the network needs {}", m.path, t->name, fmt::join(t->shape, "x"),
                                  fmt::join(v.sizes(), "x")));
    v.copy_(tensor(*t));
  };
  for (auto& kv : net->named_parameters()) fill(kv.key(), kv.value());
  for (auto& kv : net->named_buffers()) fill(kv.key(), kv.value());
  net->eval();
  return net;
}

}  // namespace xpand::train
