// Hostname, clock and CPU helpers (see host.h).
#include "core/host.h"

#include <fmt/format.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <thread>

namespace xpand {

std::string hostname() {
  char buf[256] = {0};
  ::gethostname(buf, sizeof buf - 1);
  return buf;
}

std::string now_iso() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

std::string duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  if (s < 90) return fmt::format("{:.0f}s", s);
  if (s < 5400) return fmt::format("{:.0f}m{:02.0f}s", std::floor(s / 60), std::fmod(s, 60));
  return fmt::format("{:.0f}h{:02.0f}m", std::floor(s / 3600), std::fmod(s / 60, 60));
}

int64_t usable_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
  return std::max<int64_t>(1, int64_t(std::thread::hardware_concurrency()));
}

int64_t default_threads(int ranks_per_node) {
  const int64_t per_node = std::max(1, ranks_per_node);
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

}  // namespace xpand
