// All-reduce sweep in nccl-tests' format, through xpand's own communicators (the path gradients
// take: the mpi backend's communication thread, or NCCL on its stream):
//   mpirun -np 2 build/bench/bench_allreduce [--min-bytes 8] [--max-bytes 256M] [--backend mpi|nccl]
//                                            [--json FILE]
// For each size (doubling): warm-up, then `iters` in-place float32 sum all-reduces, each waited.
// time = slowest rank's mean per operation; algbw = bytes / time; busbw = algbw · 2(n−1)/n (the
// nccl-tests definition: the bandwidth a ring would need on each link, comparable across n).
#include <fmt/format.h>
#include <torch/torch.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <fstream>

#include "core/blas.h"
#include "core/build_info.h"
#include "core/error.h"
#include "core/timer.h"
#include "dist/context.h"
#if XPAND_HAVE_NCCL
#include "dist/nccl_comm.h"
#endif

using namespace xpand;

namespace {

int64_t parse_bytes(const std::string& s) {
  size_t pos = 0;
  double v = std::stod(s, &pos);
  std::string unit = s.substr(pos);
  if (unit == "K" || unit == "KiB")
    v *= 1024;
  else if (unit == "M" || unit == "MiB")
    v *= 1024 * 1024;
  else if (unit == "G" || unit == "GiB")
    v *= 1024.0 * 1024 * 1024;
  else if (!unit.empty() && unit != "B")
    throw ConfigError("size '" + s + "': use a number with B, K, M or G");
  return int64_t(v);
}

struct Row {
  int64_t bytes, count, iters;
  double time_us, algbw, busbw;
  bool correct;
};

}  // namespace

int main(int argc, char** argv) {
  xpand::blas::select_kernels(argc, argv);  // the OpenBLAS kernels xpand trains with (core/blas.h)
  CLI::App app{"all-reduce bandwidth sweep (nccl-tests format) over xpand's communicators"};
  std::string min_s = "8", max_s = "256M", backend = "mpi", json;
  int warmup = 5;
  app.add_option("--min-bytes", min_s, "smallest message (B, K, M, G suffixes)");
  app.add_option("--max-bytes", max_s, "largest message");
  app.add_option("--backend", backend, "mpi or nccl")->check(CLI::IsMember({"mpi", "nccl"}));
  app.add_option("--warmup", warmup, "untimed operations per size");
  app.add_option("--json", json, "also write the rows as JSON to this file (rank 0)");
  CLI11_PARSE(app, argc, argv);

  auto& ctx = dist::Context::init(&argc, &argv);
  int rc = 0;
  try {
    const int64_t lo = std::max<int64_t>(4, parse_bytes(min_s)), hi = parse_bytes(max_s);
    if (hi < lo) throw ConfigError("--max-bytes is smaller than --min-bytes");
    dist::Group group = ctx.split(0);
    dist::CommPtr comm = group.comm;
    torch::Device device(torch::kCPU);
    if (backend == "nccl") {
#if XPAND_HAVE_NCCL
      device = ctx.device_for("cuda");
      comm = dist::comm_nccl(group.comm, device, 300);
#else
      throw ConfigError("--backend nccl: this build has no NCCL (XPAND_WITH_NCCL)");
#endif
    }
    const int n = comm->size();
    const bool root = comm->rank() == 0;
    if (root) {
      char host[256] = {0};
      gethostname(host, sizeof host - 1);
      fmt::print("# xpand all-reduce benchmark: backend {} ({}), {} rank(s), host {}, float32 sum, in place\n",
                 comm->backend(), backend == "nccl" ? device.str() : "CPU tensors", n, host);
      fmt::print("# time: slowest rank's mean per all-reduce; algbw = size/time; busbw = algbw * 2(n-1)/n\n");
      fmt::print("# {:>12} {:>12} {:>6} {:>6} {:>7} {:>11} {:>8} {:>8} {:>6}\n", "size", "count", "type", "redop",
                 "iters", "time", "algbw", "busbw", "#wrong");
      fmt::print("# {:>12} {:>12} {:>6} {:>6} {:>7} {:>11} {:>8} {:>8} {:>6}\n", "(B)", "(elements)", "", "", "",
                 "(us)", "(GB/s)", "(GB/s)", "");
    }
    std::vector<Row> rows;
    for (int64_t bytes = lo; bytes <= hi; bytes *= 2) {
      const int64_t count = bytes / 4;
      const int64_t iters = std::clamp<int64_t>(int64_t(2e9 / double(bytes)), 5, 1000);
      auto buf = torch::empty({count}, torch::TensorOptions().device(device));
      for (int w = 0; w < warmup; ++w) comm->allreduce(buf.fill_(1.0), dist::ReduceOp::Sum, "warm-up");
      // Correctness: rank r contributes r + 1 everywhere; the sum is n(n+1)/2.
      buf.fill_(float(comm->rank() + 1));
      comm->allreduce(buf, dist::ReduceOp::Sum, "check");
      const double wrong = buf.ne(float(n * (n + 1) / 2)).sum().item<double>();
      comm->barrier("size " + std::to_string(bytes));
      Timer t;
      for (int64_t i = 0; i < iters; ++i) comm->allreduce(buf, dist::ReduceOp::Sum, "timed");
      if (device.is_cuda()) torch::cuda::synchronize();
      double mean = t.seconds() / double(iters);
      mean = comm->allreduce_scalar(mean, dist::ReduceOp::Max, "time");
      const double wrong_all = comm->allreduce_scalar(wrong, dist::ReduceOp::Sum, "check count");
      const double algbw = double(bytes) / mean * 1e-9, busbw = algbw * 2.0 * (n - 1) / n;
      rows.push_back({bytes, count, iters, mean * 1e6, algbw, busbw, wrong_all == 0});
      if (root)
        fmt::print("  {:>12} {:>12} {:>6} {:>6} {:>7} {:>11.2f} {:>8.3f} {:>8.3f} {:>6}\n", bytes, count, "float",
                   "sum", iters, mean * 1e6, algbw, busbw, int64_t(wrong_all));
      std::fflush(stdout);
    }
    if (root) {
      double sum = 0;
      for (const auto& r : rows) sum += r.busbw;
      fmt::print("# Avg bus bandwidth    : {:.3f} GB/s\n", rows.empty() ? 0.0 : sum / double(rows.size()));
      bool all_ok = std::all_of(rows.begin(), rows.end(), [](const Row& r) { return r.correct; });
      fmt::print("# Out of bounds values : {} {}\n", all_ok ? 0 : 1, all_ok ? "OK" : "FAILED");
      if (!all_ok) rc = 1;
      if (!json.empty()) {
        std::ofstream f(json);
        f << fmt::format("{{\"backend\": \"{}\", \"ranks\": {}, \"dtype\": \"float32\", \"op\": \"sum\", \"rows\": [",
                         comm->backend(), n);
        for (size_t i = 0; i < rows.size(); ++i)
          f << fmt::format(
              "{}\n  {{\"bytes\": {}, \"count\": {}, \"iters\": {}, \"time_us\": {:.3f}, "
              "\"algbw_gbs\": {:.6f}, \"busbw_gbs\": {:.6f}, \"correct\": {}}}",
              i ? "," : "", rows[i].bytes, rows[i].count, rows[i].iters, rows[i].time_us, rows[i].algbw, rows[i].busbw,
              rows[i].correct ? "true" : "false");
        f << "\n]}\n";
      }
    }
  } catch (const std::exception& e) {
    dist::abort_job_if_distributed(kExitFailure, e.what());
    std::fprintf(stderr, "bench_allreduce: %s\n", e.what());
    return 2;
  }
  return rc;
}
