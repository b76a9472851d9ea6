// Preemption signal handlers (see signals.h).
#include "core/signals.h"

#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

#include "core/error.h"

namespace xpand::signals {

namespace {

std::atomic<int> g_signal{0};
std::atomic<long long> g_first_ns{0};

long long now_ns() {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return static_cast<long long>(t.tv_sec) * 1000000000LL + t.tv_nsec;
}

// A stop signal often arrives twice at once: under Slurm, slurmstepd signals the ranks and srun
// forwards the signal it got too; under mpirun, the terminal's SIGINT and mpirun's forwarded one.
// The same signal again within this window is that echo, not a second request.
constexpr long long kEchoNs = 2000000000LL;

void on_signal(int sig) {  // async-signal-safe: lock-free atomics, clock_gettime, write and _exit
  const long long now = now_ns();
  int expected = 0;
  // The time first (read by an echo), then the signal, in one step: of two handlers running at once
  // on two threads exactly one is first, and the other sees its signal.
  if (g_first_ns.load() == 0) g_first_ns.store(now);
  if (!g_signal.compare_exchange_strong(expected, sig)) {
    if (expected == sig && now - g_first_ns.load() < kEchoNs) return;  // the echo, not a second request
    const char* m = "xpand: second signal: exiting now (the run resumes from its last checkpoint)\n";
    ssize_t r = ::write(2, m, std::strlen(m));
    (void)r;
    _exit(kExitPreempted);
  }
  const char* m =
      "xpand: signal received: checkpointing at the next step boundary, then exiting (a second signal, 2 s or more "
      "later: exit now)\n";
  ssize_t r = ::write(2, m, std::strlen(m));
  (void)r;
}

}  // namespace

void install_preemption_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int sig : {SIGTERM, SIGINT, SIGUSR1}) sigaction(sig, &sa, nullptr);
}

int preempt_requested() { return g_signal.load(std::memory_order_relaxed); }

}  // namespace xpand::signals
