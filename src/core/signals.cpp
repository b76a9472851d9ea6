// Preemption signal handlers (see signals.h).
#include "core/signals.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

#include "core/error.h"

namespace xpand::signals {

namespace {

std::atomic<int> g_signal{0};

void on_signal(int sig) {  // async-signal-safe: an atomic store, write and _exit
  if (g_signal.exchange(sig) != 0) {
    const char* m = "xpand: second signal: exiting now (the run resumes from its last checkpoint)\n";
    ssize_t r = ::write(2, m, std::strlen(m));
    (void)r;
    _exit(kExitPreempted);
  }
  const char* m = "xpand: signal received: checkpointing at the next step boundary, then exiting (again: exit now)\n";
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
