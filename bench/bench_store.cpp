// The results store's cost, measured side by side in one run:
//   1. the metrics path: the fmnist MLP trained with and without its run file (rounds alternate
//      A/B); the training thread's step time with the background writer against without, and the
//      seconds the trainer spends handing metrics to the writer;
//   2. snapshot writes: the fmnist MLP's collapsed weights written as snapshots into a SWMR run
//      file, next to a plain sequential write() of the same bytes to the same directory.
// Usage: build/bench/bench_store [--rounds 5] [--steps 300] [--snapshots 40] [--dir DIR]
#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "config/config.h"
#include "core/blas.h"
#include "core/log.h"
#include "store/run_file.h"
#include "train/trainer.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : (v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]));
}

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

void fsync_path(const std::string& p) {
  int fd = ::open(p.c_str(), O_RDONLY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

}  // namespace

int main(int argc, char** argv) {
  xpand::blas::select_kernels(argc, argv);  // the OpenBLAS kernels xpand trains with (core/blas.h)
  int rounds = 5, steps = 300, snapshots = 40;
  std::string dir = (fs::temp_directory_path() / fmt::format("xpand-bench-store-{}", ::getpid())).string();
  std::string config = std::string(XPAND_SOURCE_DIR) + "/configs/fmnist-mlp.yaml";
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--rounds")
      rounds = std::atoi(argv[i + 1]);
    else if (a == "--steps")
      steps = std::atoi(argv[i + 1]);
    else if (a == "--snapshots")
      snapshots = std::atoi(argv[i + 1]);
    else if (a == "--dir")
      dir = argv[i + 1];
    else if (a == "--config")
      config = argv[i + 1];
    else {
      std::fprintf(stderr, "bench_store: unknown option %s\n", a.c_str());
      return 2;
    }
  }
  xpand::log::set_level("warn");
  fs::create_directories(dir);

  // --- 1. metrics path ------------------------------------------------------------------------
  std::printf("# metrics path: %s, %d steps per run, %d rounds alternating without/with the run file\n", config.c_str(),
              steps, rounds);
  std::printf("# step_ms: training-thread time per step (forward..optimizer + handing metrics to the sinks)\n");
  std::printf("# %-6s %-8s %12s %14s %12s\n", "round", "writer", "step_ms", "handoff_us", "wall_s");
  std::vector<double> without, with, handoff_frac;
  for (int r = 0; r < rounds; ++r) {
    for (int w = 0; w < 2; ++w) {
      const bool writer = (r % 2 == 0) ? w == 1 : w == 0;  // alternate which arm goes first
      auto cfg =
          xpand::config::Config::load_file(config, {fmt::format("train.max_steps={}", steps), "train.eval_every=0",
                                                    fmt::format("output.dir={}/metrics-{}-{}", dir, r, w)});
      xpand::train::RunOptions opts;
      opts.console = false;
      opts.write_file = writer;
      opts.force = true;
      opts.update_index = false;
      auto t0 = Clock::now();
      auto res = xpand::train::run_train(cfg, opts);
      const double wall = seconds_since(t0);
      const double step_ms = 1e3 * res.step_seconds / double(res.steps);
      (writer ? with : without).push_back(step_ms);
      if (writer) handoff_frac.push_back(res.sink_seconds / res.step_seconds);
      std::printf("  %-6d %-8s %12.3f %14.2f %12.2f\n", r, writer ? "yes" : "no", step_ms,
                  1e6 * res.sink_seconds / double(res.steps), wall);
      std::fflush(stdout);
    }
  }
  const double a = median(without), b = median(with);
  std::vector<double> paired;
  for (size_t r = 0; r < with.size() && r < without.size(); ++r) paired.push_back(with[r] / without[r] - 1);
  std::printf(
      "# median step: %.3f ms without, %.3f ms with the run file: %+.2f%%; median of the per-round "
      "ratios %+.2f%% (round-to-round spread of this machine: %.1f%%)\n",
      a, b, 100.0 * (b - a) / a, 100.0 * median(paired),
      100.0 *
          (*std::max_element(without.begin(), without.end()) / *std::min_element(without.begin(), without.end()) - 1));
  std::printf("# hand-off on the training thread (posting the step's row to the writer): %.3f%% of the step\n",
              100.0 * median(handoff_frac));

  // The writer thread's own work per row, measured alone: appending the train table's 12 columns
  // and flushing every 256 rows (the batch the writer wakes for), in a SWMR file.
  {
    const int rows = 20000;
    const std::string h5 = fmt::format("{}/rows.h5", dir);
    auto t0 = Clock::now();
    {
      xpand::store::RunWriter w(h5);
      w.add_table("train",
                  {"step", "epoch", "samples", "loss", "lr", "grad_norm", "time_step", "mem_peak", "time_compute",
                   "time_comm", "time_comm_exposed", "comm_bytes"},
                  {"step", "samples", "mem_peak", "comm_bytes"});
      w.start_swmr();
      for (int r = 1; r <= rows; ++r) {
        w.append("train", {double(r), 0.01 * r, 128.0 * r, 0.5, 1e-3, 1.0, 0.02, 1e8, 0.02, 0, 0, 0});
        if (r % 256 == 0) w.flush();
      }
      w.close();
    }
    const double us = 1e6 * seconds_since(t0) / rows;
    fs::remove(h5);
    std::printf("# writer thread: %.2f us per row (append + a flush every 256 rows, SWMR): %.3f%% of a %.1f ms step\n",
                us, 100.0 * us * 1e-3 / b, b);
    std::printf("# metrics path on the training thread + writer thread: %.3f%% of the step\n",
                100.0 * median(handoff_frac) + 100.0 * us * 1e-3 / b);
  }

  // --- 2. snapshot throughput -----------------------------------------------------------------
  const std::vector<std::vector<int64_t>> layers = {{512, 784}, {512, 512}, {10, 512}};
  std::vector<std::vector<double>> data;
  size_t bytes_per_snapshot = 0;
  for (const auto& s : layers) {
    data.emplace_back(size_t(s[0] * s[1]));
    for (size_t i = 0; i < data.back().size(); ++i) data.back()[i] = std::sin(double(i)) * 0.05;
    bytes_per_snapshot += data.back().size() * sizeof(double);
  }
  const double total_mb = double(bytes_per_snapshot) * snapshots / 1e6;
  std::printf("\n# snapshots: %d x %.2f MB (the fmnist MLP's collapsed weights, float64) into %s, fsync at the end\n",
              snapshots, double(bytes_per_snapshot) / 1e6, dir.c_str());
  std::printf("# %-34s %10s %10s\n", "writer", "seconds", "MB/s");
  std::vector<double> h5_rate, sum_rate, plain_rate;
  // The run file's writer as the trainer sets it up (Fletcher-32 on every snapshot array), and
  // without the checksum, as before it was added.
  auto write_h5 = [&](const std::string& h5, bool checksum) {
    auto t0 = Clock::now();
    {
      xpand::store::WriterOptions wo;
      wo.checksum = checksum;
      xpand::store::RunWriter w(h5, wo);
      w.start_swmr();
      for (int s = 0; s < snapshots; ++s)
        for (size_t l = 0; l < layers.size(); ++l)
          w.write_array(fmt::format("/snapshots/{:08d}/fc{}/weight", s + 1, l + 1), layers[l], data[l].data());
      w.close();
    }
    fsync_path(h5);
    const double t = seconds_since(t0);
    fs::remove(h5);
    return t;
  };
  for (int r = 0; r < 3; ++r) {
    const std::string h5 = fmt::format("{}/snap-{}.h5", dir, r), raw = fmt::format("{}/snap-{}.bin", dir, r);
    const double th5 = write_h5(h5, false);
    const double tsum = write_h5(h5, true);
    auto t0 = Clock::now();
    {
      int fd = ::open(raw.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      for (int s = 0; s < snapshots; ++s)
        for (const auto& d : data)
          if (::write(fd, d.data(), d.size() * sizeof(double)) < 0) std::perror("write");
      ::fsync(fd);
      ::close(fd);
    }
    const double traw = seconds_since(t0);
    h5_rate.push_back(total_mb / th5);
    sum_rate.push_back(total_mb / tsum);
    plain_rate.push_back(total_mb / traw);
    std::printf("  %-34s %10.3f %10.1f\n", "xpand RunWriter (SWMR, HDF5)", th5, total_mb / th5);
    std::printf("  %-34s %10.3f %10.1f\n", "the same with Fletcher-32 (trainer)", tsum, total_mb / tsum);
    std::printf("  %-34s %10.3f %10.1f\n", "plain write() of the same bytes", traw, total_mb / traw);
    fs::remove(raw);
  }
  std::printf(
      "# median: HDF5 snapshots %.1f MB/s (%.1f MB/s with Fletcher-32, as the trainer writes them), plain "
      "write %.1f MB/s: %.2fx (%.2fx) of the plain rate\n",
      median(h5_rate), median(sum_rate), median(plain_rate), median(h5_rate) / median(plain_rate),
      median(sum_rate) / median(plain_rate));
  std::error_code ec;
  fs::remove_all(dir, ec);
  return 0;
}
