// The per-layer cut chooser and its calibration (see cut_chooser.h).
#include "train/cut_chooser.h"

#include <fmt/format.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>

#include "core/error.h"
#include "core/host.h"
#include "core/log.h"
#include "core/timer.h"

namespace xpand::train {

namespace fs = std::filesystem;

namespace {

CutDecision decide(const LayerCosts& l, const LinkModel& link, bool cut) {
  CutDecision d;
  d.name = l.name;
  d.compute_source = l.compute_source;
  d.raw_cost_s = l.raw.compute_s + link.comm(double(l.raw.bytes));
  d.cut_cost_s = l.has_choice ? l.cut.compute_s + link.comm(double(l.cut.bytes)) : d.raw_cost_s;
  const CutOption& o = l.has_choice && cut ? l.cut : l.raw;
  d.choice = !l.has_choice ? "none" : cut ? "weight" : "raw";
  d.bytes = o.bytes;
  d.comm_s = link.comm(double(o.bytes));
  d.compute_s = o.compute_s;
  return d;
}

// The predicted step of a choice (the layers' part: compute, buckets' latency, exposed bandwidth).
double step_of(const std::vector<LayerCosts>& layers, const std::vector<char>& cut, const LinkModel& link) {
  double compute = 0, bytes = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    const CutOption& o = cut[i] ? layers[i].cut : layers[i].raw;
    compute += o.compute_s, bytes += double(o.bytes);
  }
  const double latency = double(bucket_count(bytes, link.first_bucket_mb, link.bucket_mb)) * link.latency_s;
  return compute + latency + link.exposed(bytes, compute);
}

}  // namespace

std::vector<CutDecision> choose_cuts(const std::vector<LayerCosts>& layers, const LinkModel& link) {
  std::vector<char> cut(layers.size(), 0);
  for (size_t i = 0; i < layers.size(); ++i) {
    const auto& l = layers[i];
    cut[i] = l.has_choice &&
             l.cut.compute_s + link.comm(double(l.cut.bytes)) <= l.raw.compute_s + link.comm(double(l.raw.bytes));
  }
  // Communication hidden behind backward and the buckets' latency are not per layer: flip single
  // layers while the predicted step drops (each flip lowers it strictly, so this ends; bounded anyway).
  for (size_t round = 0; round < 4 * layers.size() + 4; ++round) {
    bool improved = false;
    for (size_t i = 0; i < layers.size(); ++i) {
      if (!layers[i].has_choice) continue;
      const double before = step_of(layers, cut, link);
      cut[i] = !cut[i];
      if (step_of(layers, cut, link) < before * (1 - 1e-12))
        improved = true;
      else
        cut[i] = !cut[i];
    }
    if (!improved) break;
  }
  std::vector<CutDecision> out;
  for (size_t i = 0; i < layers.size(); ++i) out.push_back(decide(layers[i], link, cut[i]));
  return out;
}

std::vector<CutDecision> fixed_cuts(const std::vector<LayerCosts>& layers, const LinkModel& link,
                                    const std::string& mode) {
  XPAND_CHECK(mode == "narrowest" || mode == "planned" || mode == "raw", "unknown fixed cut mode " + mode);
  std::vector<CutDecision> out;
  for (const auto& l : layers)
    out.push_back(decide(l, link, mode == "narrowest" || (mode == "planned" && l.compute_source == "planned")));
  return out;
}

int64_t bucket_count(double bytes, double first_bucket_mb, double bucket_mb) {
  if (bytes <= 0) return 0;
  const double first = first_bucket_mb * 1048576.0, cap = bucket_mb * 1048576.0;
  if (bytes <= first || cap <= 0) return 1;
  return 1 + int64_t(std::ceil((bytes - first) / cap));
}

StepPrediction predict_step(const std::vector<CutDecision>& decisions, double other_compute_s, int64_t other_bytes,
                            const LinkModel& link, double first_bucket_mb, double bucket_mb) {
  StepPrediction p;
  p.compute_s = other_compute_s;
  p.bytes = other_bytes;
  for (const auto& d : decisions) p.compute_s += d.compute_s, p.bytes += d.bytes;
  p.buckets = bucket_count(double(p.bytes), first_bucket_mb, bucket_mb);
  p.comm_s = double(p.buckets) * link.latency_s + link.comm(double(p.bytes));
  p.exposed_s = double(p.buckets) * link.latency_s + link.exposed(double(p.bytes), p.compute_s);
  p.step_s = p.compute_s + p.exposed_s;
  return p;
}

LinkModel link_for_ranks(int ranks, double gbps, double latency_us, double overlap) {
  XPAND_CHECK(ranks >= 1 && gbps > 0, "link_for_ranks: ranks >= 1 and a positive bandwidth");
  LinkModel l;
  l.source = "plan";
  l.overlap = overlap;
  if (ranks == 1) {  // nothing is communicated
    l.bytes_per_s = std::numeric_limits<double>::infinity();
    return l;
  }
  // A ring moves 2(n-1)/n of the buffer through each rank's link.
  l.bytes_per_s = gbps * 1e9 / 8.0 / (2.0 * (ranks - 1) / ranks);
  l.latency_s = 2.0 * std::ceil(std::log2(double(ranks))) * latency_us * 1e-6;
  return l;
}

std::vector<LayerCosts> layer_costs_from_flops(model::Network& net, int64_t rows, double gemm_flops_per_s,
                                               int64_t grad_accum, int64_t elem_bytes) {
  std::vector<LayerCosts> out;
  for (auto& s : net.slots()) {
    auto& p = *s.param;
    LayerCosts l;
    l.name = s.name;
    const auto plan = p.plan(rows * s.rows_per_sample, s.input_grad);
    l.raw.bytes = p.trainable_count() * elem_bytes;
    l.raw.compute_s = plan.flops * double(grad_accum) / gemm_flops_per_s;
    l.has_choice = p.cut_at_weight();
    l.cut = l.raw;
    l.compute_source = plan.order == "weight" ? "planned" : "flops";
    if (l.has_choice) {
      l.cut.bytes = p.cut_numel() * elem_bytes;
      // The cut forms W_eff (and runs its backward to the factors) once per step; the batch part
      // repeats per micro-batch. plan(0 rows) prices W_eff's part alone.
      const double wchain = p.plan(0, s.input_grad).cut_flops;
      l.cut.compute_s =
          plan.order == "weight"
              ? l.raw.compute_s
              : (plan.cut_flops * double(grad_accum) - wchain * double(grad_accum - 1)) / gemm_flops_per_s;
    }
    out.push_back(l);
  }
  return out;
}

namespace {

// Reads one element of t: on a GPU this waits for the work queued before it.
void wait_for(const torch::Tensor& t) {
  if (t.defined() && t.numel() > 0) (void)t.reshape({-1})[0].item<double>();
}

// Best of `reps` runs after one warm-up.
template <class F>
double best_seconds(F&& run, int reps = 2) {
  run();
  double best = std::numeric_limits<double>::infinity();
  for (int i = 0; i < reps; ++i) {
    Timer t;
    run();
    best = std::min(best, t.seconds());
  }
  return best;
}

// A linear layer's forward+backward over `rows` rows, with the cut at W_eff or without: the
// compute of that option at the layer's shapes, and (with the cut) the part of it spent forming
// W_eff and running its backward to the factors. Inputs are constants (no random draws: the
// training's random streams are untouched); gradients and the cut's leaves are cleared afterwards.
struct LinearTime {
  double total = 0, wchain = 0;
};
LinearTime time_linear(param::Parameterization& p, int64_t rows, bool input_grad, bool cut) {
  std::vector<torch::Tensor> params = p.parameters();
  auto any = params.front();
  auto x = torch::full({rows, p.shape().fan_in()}, 0.01, any.options()).requires_grad_(input_grad);
  double wchain = 0;
  auto run = [&] {
    for (auto& q : params) q.mutable_grad() = torch::Tensor();  // as every step starts
    x.mutable_grad() = torch::Tensor();
    Timer tw;
    if (cut) {
      p.cut_begin();
      wait_for(p.cut_tensors().front());
    }
    const double w = tw.seconds();
    auto y = p.linear(x, {});
    y.backward(torch::full_like(y, 1e-3));
    Timer tf;
    if (cut) p.cut_finish();
    for (auto& q : params)
      if (q.grad().defined()) wait_for(q.grad());
    wchain = w + tf.seconds();
  };
  LinearTime best{std::numeric_limits<double>::infinity(), 0};
  run();  // warm-up
  for (int i = 0; i < 2; ++i) {
    Timer t;
    run();
    const double sec = t.seconds();
    if (sec < best.total) best = {sec, cut ? wchain : 0.0};
  }
  for (auto& q : params) q.mutable_grad() = torch::Tensor();
  p.cut_release();
  return best;
}

}  // namespace

double gemm_rate(int64_t m, int64_t k, int64_t n, const torch::TensorOptions& opt) {
  auto a = torch::full({m, k}, 0.01, opt), b = torch::full({k, n}, 0.01, opt);
  torch::Tensor c;
  double t = best_seconds([&] {
    c = torch::mm(a, b);
    wait_for(c);
  });
  return 2.0 * double(m) * double(k) * double(n) / std::max(t, 1e-9);
}

namespace {

// All-reduce seconds of `bytes` on comm (best of 3; every rank runs it).
double time_allreduce(const dist::CommPtr& comm, int64_t bytes, const torch::TensorOptions& opt) {
  auto t = torch::zeros({std::max<int64_t>(1, bytes / 4)}, opt.dtype(torch::kFloat32));
  return best_seconds(
      [&] {
        comm->allreduce(t, dist::ReduceOp::Sum, "cut calibration");
        wait_for(t);  // nccl: wait() orders the stream; reading an element waits for the transfer
      },
      3);
}

// The link: latency and bandwidth fitted to all-reduces of 256 KiB, 2 MiB and 16 MiB (least squares
// of t = a + S/b), and the fraction of an all-reduce hidden behind compute running meanwhile (a
// GEMM of about the same duration started while a 16 MiB all-reduce is in flight, as the reducer's
// buckets are while backward runs).
LinkModel measure_link(const dist::CommPtr& comm, const torch::TensorOptions& opt) {
  const std::vector<double> sizes = {256.0 * 1024, 2.0 * 1048576, 16.0 * 1048576};
  std::vector<double> t;
  for (double s : sizes) t.push_back(time_allreduce(comm, int64_t(s), opt));
  double ms = 0, mt = 0;
  for (size_t i = 0; i < sizes.size(); ++i) ms += sizes[i] / 3, mt += t[i] / 3;
  double sst = 0, ss = 0;
  for (size_t i = 0; i < sizes.size(); ++i)
    sst += (sizes[i] - ms) * (t[i] - mt), ss += (sizes[i] - ms) * (sizes[i] - ms);
  const double slope = std::max(sst / ss, 1e-15);  // seconds per byte
  LinkModel l;
  l.bytes_per_s = 1.0 / slope;
  l.latency_s = std::max(0.0, mt - slope * ms);
  // Overlap: a GEMM sized to take about as long as the 16 MiB all-reduce, alone and with it in flight.
  const double t_ar = t.back();
  const double rate = gemm_rate(256, 256, 256, opt);
  const int64_t n = std::clamp<int64_t>(int64_t(std::cbrt(t_ar * rate / 2.0)), 64, 2048);
  auto a = torch::full({n, n}, 0.01, opt);
  torch::Tensor c;
  const double t_g = best_seconds([&] {
    c = torch::mm(a, a);
    wait_for(c);
  });
  auto buf = torch::zeros({int64_t(sizes.back() / 4)}, opt.dtype(torch::kFloat32));
  const double t_both = best_seconds([&] {
    auto w = comm->allreduce_async(buf, dist::ReduceOp::Sum, "cut calibration overlap");
    c = torch::mm(a, a);
    wait_for(c);
    w->wait();
    wait_for(buf);
  });
  // The fraction of the shorter of the two during which the other also ran (0: none, 1: all of it).
  l.overlap = std::clamp((t_g + t_ar - t_both) / std::max(std::min(t_g, t_ar), 1e-9), 0.0, 1.0);
  l.source = "measured";
  return l;
}

// A layer's identity for the cache: kind, its tensors' shapes, rows, whether it needs the input
// gradient, dtype.
// A layer's identity for the cache: kind, its tensors' shapes, rows, whether it needs the input
// gradient, the planner's order and FLOPs of both options (order policy, skips), dtype, device and
// train.precision.
std::string layer_key(param::Parameterization& p, int64_t rows, bool input_grad, const std::string& precision) {
  std::string k = p.kind();
  for (const auto& t : p.parameters()) k += fmt::format(" {}", fmt::join(t.sizes(), "x"));
  const auto plan = p.plan(rows, input_grad);
  const auto params = p.parameters();
  const auto& any = params.front();
  return fmt::format("{} rows={} input_grad={} order={} flops={:.6g} cut_flops={:.6g} {} {} {}", k, rows,
                     input_grad ? 1 : 0, plan.order, plan.flops, plan.cut_flops,
                     std::string(c10::toString(any.scalar_type())), any.device().str(), precision);
}

struct Cache {
  std::string path;
  YAML::Node root;
  bool load(const std::string& dir, const std::string& name) {
    if (dir.empty()) return false;
    path = (fs::path(dir) / "calibration" / name).string();
    try {
      if (fs::exists(path)) root = YAML::LoadFile(path);
    } catch (const std::exception& e) {  // a damaged cache is measured again and rewritten
      log::warn("{}: unreadable ({}); measuring again", path, e.what());
      root = YAML::Node();
    }
    return true;
  }
  void save() {
    if (path.empty()) return;
    try {
      fs::create_directories(fs::path(path).parent_path());
      const std::string tmp = fmt::format("{}.{}.tmp", path, ::getpid());
      {
        std::ofstream f(tmp);
        f << "# xpand dist.cut: auto calibration (seconds); delete to measure again\n" << YAML::Dump(root) << "\n";
        if (!f) throw std::runtime_error("write failed");
      }
      fs::rename(tmp, path);
    } catch (const std::exception& e) {
      log::warn("could not write {}: {}", path, e.what());
    }
  }
};

}  // namespace

namespace {

// Per timed layer: raw_s, cut_s (one micro-batch each), wchain_s (the cut's W_eff part of cut_s).
constexpr int64_t kLayerValues = 3;
constexpr int64_t kLinkValues = 3;  // latency_s, bytes_per_s, overlap

bool usable(double v) { return std::isfinite(v) && v >= 0; }

// Rank 0's cache: the values it holds, and which of them (have[0]: the link, have[1 + j]: layer j).
void read_cache(Cache& cache, const std::vector<std::string>& keys, torch::Tensor& values, torch::Tensor& have) {
  auto put = [](torch::Tensor& t, int64_t i, double v) { t[i] = v; };
  try {
    if (auto l = cache.root["link"]) {
      const double lat = l["latency_s"].as<double>(), bw = l["bytes_per_s"].as<double>(),
                   ov = l["overlap"].as<double>();
      if (usable(lat) && usable(bw) && bw > 0 && usable(ov) && ov <= 1) {
        put(values, 0, lat), put(values, 1, bw), put(values, 2, ov);
        put(have, 0, 1.0);
      }
    }
    for (size_t j = 0; j < keys.size(); ++j)
      if (auto n = cache.root["layers"][keys[j]]) {
        const double raw = n["raw_s"].as<double>(), cut = n["cut_s"].as<double>(), w = n["wchain_s"].as<double>();
        if (!usable(raw) || !usable(cut) || !usable(w)) continue;
        const int64_t at = kLinkValues + kLayerValues * int64_t(j);
        put(values, at, raw), put(values, at + 1, cut), put(values, at + 2, w);
        put(have, int64_t(1 + j), 1.0);
      }
  } catch (const std::exception& e) {  // well-formed YAML of the wrong shape: measured again, rewritten
    log::warn("{}: not a calibration ({}); measuring again", cache.path, e.what());
    have.zero_();
    cache.root = YAML::Node();
  }
}

// This rank's measurements of what rank 0's cache lacks (every rank runs the same collectives).
bool measure_missing(const std::vector<model::Slot>& slots, const std::vector<size_t>& timed, const dist::CommPtr& comm,
                     const CalibrationOptions& o, const torch::Tensor& have, torch::Tensor& meas) {
  auto put = [&](int64_t i, double v) { meas[i] = v; };
  const auto opt = slots.front().param->parameters().front().options().requires_grad(false);
  bool measured = false;
  if (o.link_gbps <= 0 && have[0].item<double>() == 0) {
    LinkModel l = measure_link(comm, opt);
    put(0, l.latency_s), put(1, l.bytes_per_s), put(2, l.overlap);
    measured = true;
  }
  for (size_t j = 0; j < timed.size(); ++j) {
    if (have[int64_t(1 + j)].item<double>() != 0) continue;
    const auto& s = slots[timed[j]];
    const int64_t rows = o.micro_rows * s.rows_per_sample, at = kLinkValues + kLayerValues * int64_t(j);
    if (s.param->shape().is_conv()) {  // no input shape here: the planner's FLOPs at the dense GEMM's rate
      const double rate = gemm_rate(rows, s.param->shape().fan_in(), s.param->shape().out(), opt);
      auto plan = s.param->plan(rows, s.input_grad);
      put(at, plan.flops / rate), put(at + 1, plan.cut_flops / rate);
      put(at + 2, s.param->plan(0, s.input_grad).cut_flops / rate);
    } else {
      const LinearTime raw = time_linear(*s.param, rows, s.input_grad, false);
      const LinearTime cut = time_linear(*s.param, rows, s.input_grad, true);
      put(at, raw.total), put(at + 1, cut.total), put(at + 2, std::min(cut.wchain, cut.total));
    }
    measured = true;
  }
  return measured;
}

}  // namespace

Calibration calibrate_cuts(model::Network& net, const dist::CommPtr& comm, const CalibrationOptions& o) {
  Calibration c;
  const int64_t elem = net.parameters().front().element_size();
  const bool root = comm->rank() == 0;
  Cache cache;
  const std::string name =
      fmt::format("calibration-{}-{}-n{}-t{}.yaml", hostname(), comm->backend(), comm->size(), o.threads);
  const bool cached = root && cache.load(o.cache_dir, name);
  c.layers =
      layer_costs_from_flops(net, o.micro_rows, o.gemm_gflops > 0 ? o.gemm_gflops * 1e9 : 1.0, o.grad_accum, elem);
  const auto slots = net.slots();
  std::vector<size_t> timed;  // layers whose options are timed (or priced at a measured GEMM rate)
  std::vector<std::string> keys;
  for (size_t i = 0; i < c.layers.size(); ++i)
    if (c.layers[i].has_choice && c.layers[i].compute_source != "planned" && o.gemm_gflops <= 0) {
      timed.push_back(i);
      keys.push_back(
          layer_key(*slots[i].param, o.micro_rows * slots[i].rows_per_sample, slots[i].input_grad, o.precision));
    }
  const int64_t nvals = kLinkValues + kLayerValues * int64_t(timed.size());
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64).device(comm->device());
  auto cachedv = torch::zeros({nvals}, f64), meas = torch::zeros({nvals}, f64);
  auto have = torch::zeros({int64_t(1 + timed.size())}, f64);
  if (cached) read_cache(cache, keys, cachedv, have);
  comm->broadcast(have, 0, "cut calibration cache");  // rank 0's cache decides what every rank measures
  const bool measured = measure_missing(slots, timed, comm, o, have, meas);
  // The ranks share the step, so their mean counts; then rank 0's numbers go to every rank, so the
  // choice is the same everywhere.
  if (measured) comm->allreduce(meas, dist::ReduceOp::Avg, "cut calibration");
  auto is_cached = [&](int64_t i) { return have[i].item<double>() != 0; };
  auto final_v = meas.clone();
  for (int64_t i = 0; i < have.numel(); ++i)
    if (is_cached(i)) {
      const int64_t at = i == 0 ? 0 : kLinkValues + kLayerValues * (i - 1), n = i == 0 ? kLinkValues : kLayerValues;
      final_v.narrow(0, at, n).copy_(cachedv.narrow(0, at, n));
    }
  comm->broadcast(final_v, 0, "cut calibration values");
  auto v = [&](int64_t i) { return final_v[i].item<double>(); };
  if (o.link_gbps > 0) {
    c.link = link_for_ranks(comm->size(), o.link_gbps, o.latency_us, 0.0);
    c.link.source = "dist.link_gbps";
  } else {
    c.link.latency_s = o.latency_us > 0 ? o.latency_us * 1e-6 : v(0);
    c.link.bytes_per_s = v(1);
    c.link.overlap = v(2);
    c.link.source = is_cached(0) ? "cached " + cache.path : "measured";
  }
  // A step: grad_accum micro-batches; the cut forms W_eff and runs its backward once.
  const double accum = double(o.grad_accum);
  for (size_t j = 0; j < timed.size(); ++j) {
    auto& l = c.layers[timed[j]];
    const int64_t at = kLinkValues + kLayerValues * int64_t(j);
    l.raw.compute_s = accum * v(at);
    l.cut.compute_s = accum * v(at + 1) - (accum - 1) * v(at + 2);
    const bool conv = slots[timed[j]].param->shape().is_conv();
    l.compute_source = std::string(conv ? "gemm-rate" : "timed") + (is_cached(int64_t(1 + j)) ? " (cached)" : "");
  }
  if (o.gemm_gflops <= 0)  // untimed layers: no rate to price them at (the choice does not depend on them)
    for (auto& l : c.layers)
      if (l.compute_source == "planned" || l.compute_source == "flops" || !l.has_choice) {
        l.raw.compute_s = l.cut.compute_s = 0;
        if (!l.has_choice) l.compute_source = "-";
      }
  if (root && measured && !cache.path.empty()) {
    if (o.link_gbps <= 0 && !is_cached(0)) {
      cache.root["link"]["latency_s"] = v(0);
      cache.root["link"]["bytes_per_s"] = v(1);
      cache.root["link"]["overlap"] = v(2);
    }
    for (size_t j = 0; j < timed.size(); ++j) {
      const int64_t at = kLinkValues + kLayerValues * int64_t(j);
      cache.root["layers"][keys[j]]["raw_s"] = v(at);
      cache.root["layers"][keys[j]]["cut_s"] = v(at + 1);
      cache.root["layers"][keys[j]]["wchain_s"] = v(at + 2);
    }
    cache.save();
  }
  return c;
}

}  // namespace xpand::train
