// `xpand forward CONFIG [--set ...] --weights IN.h5 -o OUT.h5`: one forward and backward pass of the
// configured network in float64 with weights given from outside, so that xpand's constructions can
// be compared with another implementation of the same method (tests/reference does this with
// PyTorch transcriptions of the sources; docs/PARAMETERIZATIONS.md).
//   IN.h5:  /params/<name>   every trainable tensor of the network by its xpand name, float64, in
//                            the shape xpand gives it (`--list` prints names and shapes)
//           /buffers/<name>  optional (batch norm running statistics)
//           /input           (N, sample shape...) float64 (token ids for a language model)
//           /labels          (N) or (N, T) integer classes / next tokens
//   OUT.h5: /output            logits of the network in training mode
//           /collapsed_output  logits of the collapsed (dense) network in evaluation mode
//           /loss              the training loss (mean cross-entropy), a 1-element array
//           /grad/<name>       d loss / d param for every /params entry (zeros for a parameter the
//                              forward did not use, which /unused_parameters then lists)
//           attributes trainable and collapsed (parameter counts, as `xpand plan` prints them)
// `--init-out INIT.h5` writes the network's own initial parameters (/params/<name>, float64, from
// the config's seed) in the same layout: how xpand initialises each tensor, for outside checks.
#include <fmt/format.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <set>

#include "cli/commands.h"
#include "config/config.h"
#include "core/error.h"
#include "data/dataset.h"
#include "model/network.h"
#include "store/run_file.h"

namespace xpand::cli {

namespace {

std::string shape_of(const torch::Tensor& t) { return fmt::format("[{}]", fmt::join(t.sizes(), ", ")); }

torch::Tensor read_f64(const store::RunReader& r, const std::string& path) {
  std::vector<int64_t> shape;
  auto v = r.read_array(path, &shape);
  return torch::from_blob(v.data(), shape, torch::kFloat64).clone();
}

void write_f64(store::RunWriter& w, const std::string& path, const torch::Tensor& t) {
  auto c = t.detach().to(torch::kFloat64).contiguous();
  w.write_array(path, c.sizes().vec(), c.data_ptr<double>());
}

// Copies IN.h5's tensors into the network's parameters (every one required) or buffers (optional).
void load_tensors(const store::RunReader& r, const std::string& file, const std::string& group,
                  const std::vector<std::pair<std::string, torch::Tensor>>& targets, bool required) {
  std::set<std::string> known;
  for (const auto& [name, t] : targets) {
    known.insert(name);
    const std::string path = group + "/" + name;
    if (!r.has_object(path)) {
      if (!required) continue;
      throw DataError(
          fmt::format("{}: {} is missing (the network's parameters are listed by `xpand forward --list`)", file, path));
    }
    auto v = read_f64(r, path);
    if (v.sizes() != t.sizes())
      throw DataError(
          fmt::format("{}: {} has shape {}, the network's {} has {}", file, path, shape_of(v), name, shape_of(t)));
    torch::NoGradGuard ng;
    t.copy_(v);
  }
  if (!r.has_object(group)) return;
  for (const auto& name : r.children(group))
    if (!known.count(name))
      throw DataError(
          fmt::format("{}: {}/{} is not a {} of this network", file, group, name, required ? "parameter" : "buffer"));
}

std::vector<std::pair<std::string, torch::Tensor>> named(const torch::OrderedDict<std::string, torch::Tensor>& d) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& kv : d)
    if (kv.value().numel() > 0) out.emplace_back(kv.key(), kv.value());
  return out;
}

// Writes `out` through a temporary file renamed into place: a failure leaves nothing half-written.
void write_file(const std::string& out, const std::function<void(store::RunWriter&)>& fill) {
  const std::string tmp = fmt::format("{}.tmp-{}", out, ::getpid());
  std::error_code ec;
  try {
    store::RunWriter w(tmp);
    fill(w);
    w.close();
    store::commit_file(tmp, out);
  } catch (...) {
    std::filesystem::remove(tmp, ec);
    throw;
  }
}

int run_forward(const ConfigArgs& args, const std::string& in, const std::string& out, bool list,
                const std::string& init_out, bool force) {
  namespace fs = std::filesystem;
  for (const auto* f : {&out, &init_out}) {
    std::error_code e;
    if (!f->empty() && fs::exists(*f, e) && !force)
      throw ConfigError(fmt::format("{}: the file exists (use --force to overwrite it)", *f));
  }
  require_input(args.path);
  auto cfg = config::Config::load_file(args.path, args.overrides);
  torch::manual_seed(cfg.get_int("seed"));
  auto ds = data::dataset_load(cfg, torch::kCPU);
  model::network_check(cfg, ds, 1);
  model::NetworkPtr net = model::network_build(cfg, ds, param::factory_from_config(cfg));
  net->to(torch::kFloat64);
  auto params = named(net->named_parameters()), buffers = named(net->named_buffers());
  if (list) {
    for (const auto& [name, t] : params) fmt::print("param  {} {}\n", name, shape_of(t));
    for (const auto& [name, t] : buffers) fmt::print("buffer {} {}\n", name, shape_of(t));
    return kExitOk;
  }
  if (!init_out.empty()) {
    write_file(init_out, [&](store::RunWriter& w) {
      w.set_attr("kind", "xpand initial parameters");
      for (const auto& [name, t] : params) write_f64(w, "/params/" + name, t);
    });
    fmt::print("{}: {} initial parameter tensors\n", init_out, params.size());
    if (in.empty() && out.empty()) return kExitOk;
  }
  if (in.empty() || out.empty())
    throw ConfigError("forward: --weights and -o are required (or --list, or --init-out alone)");
  require_input(in, "--weights");
  store::RunReader r(in);
  load_tensors(r, in, "/params", params, true);
  load_tensors(r, in, "/buffers", buffers, false);
  for (const char* p : {"/input", "/labels"})
    if (!r.has_object(p)) throw DataError(fmt::format("{}: {} is missing", in, p));
  auto x = read_f64(r, "/input");
  auto labels = read_f64(r, "/labels").to(torch::kLong);
  if (ds.task != data::Task::Classification) x = x.to(torch::kLong);

  net->train();
  auto logits = net->forward(x);
  auto loss = torch::nn::functional::cross_entropy(logits.flatten(0, -2), labels.flatten());
  loss.backward();
  net->eval();
  auto collapsed = model::network_collapse(cfg, ds, *net);
  collapsed->eval();
  torch::Tensor collapsed_logits;
  {
    torch::NoGradGuard ng;
    collapsed_logits = collapsed->forward(x);
  }
  auto rep = model::network_report(*net, 1);

  write_file(out, [&](store::RunWriter& w) {
    w.set_attr("kind", "xpand forward");
    w.set_attr("config", cfg.to_yaml());
    w.set_attr("trainable", rep.trainable);
    w.set_attr("collapsed", rep.collapsed);
    write_f64(w, "/output", logits);
    write_f64(w, "/collapsed_output", collapsed_logits);
    write_f64(w, "/loss", loss.reshape({1}));
    std::vector<std::string> unused;  // parameters the forward did not reach: zeros, and listed
    for (const auto& [name, t] : params) {
      if (!t.grad().defined()) unused.push_back(name);
      write_f64(w, "/grad/" + name, t.grad().defined() ? t.grad() : torch::zeros_like(t));
    }
    if (!unused.empty()) w.write_strings("/unused_parameters", unused);
  });
  fmt::print("{}: loss {:.17g}, {} parameter tensors, trainable {}, collapsed {}\n", out, loss.item<double>(),
             params.size(), rep.trainable, rep.collapsed);
  return kExitOk;
}

}  // namespace

Runner forward_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "forward", "one float64 forward and backward pass with weights from an HDF5 file (for outside comparisons)");
  auto args = std::make_shared<ConfigArgs>();
  auto in = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto list = std::make_shared<bool>(false);
  auto init_out = std::make_shared<std::string>();
  auto force = std::make_shared<bool>(false);
  add_config_args(cmd, args.get());
  cmd->add_option("--init-out", *init_out, "HDF5 file to write the network's own initial parameters to");
  cmd->add_flag("--force", *force, "overwrite the output files if they exist");
  cmd->add_option("--weights", *in, "HDF5 file with /params/<name>, /input and /labels");
  cmd->add_option("-o,--output", *out, "HDF5 file to write (outputs, loss, gradients)");
  cmd->add_flag("--list", *list, "print the network's parameter and buffer names and shapes");
  return [=]() {
    try {
      return run_forward(*args, *in, *out, *list, *init_out, *force);
    } catch (const store::StoreError& e) {
      throw DataError(e.what());
    }
  };
}

}  // namespace xpand::cli
