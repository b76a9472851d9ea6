// A guard around reading one file. HDF5 1.10 trusts the global heap (where variable-length strings
// live, without a checksum): a damaged heap can make it loop forever or crash in memcpy. The
// reading commands arm this guard per file, so such a file ends in a message naming it and exit 1,
// never in a hang or a signal: a time limit (SIGALRM), and handlers for SIGSEGV/SIGBUS/SIGFPE/SIGILL/SIGABRT
// on an alternate stack. Both handlers only write(2) and _exit(2), which are async-signal-safe.
#pragma once
#include <signal.h>
#include <unistd.h>

#include <cstring>
#include <string>

namespace xpand::cli {

class ReadWatchdog {
 public:
  ReadWatchdog(const std::string& path, unsigned seconds) {
    set(timeout_message(), "xpand: error: " + path + ": reading did not finish within " + std::to_string(seconds) +
                               " s: the file is damaged (HDF5 loops on it) or its file system stalls\n");
    set(crash_message(),
        "xpand: error: " + path +
            ": the HDF5 library failed reading it (invalid memory access or a corrupted heap): the file is "
            "damaged\n");
    static char alt_stack[1 << 16];
    stack_t ss{};
    ss.ss_sp = alt_stack;
    ss.ss_size = sizeof alt_stack;
    sigaltstack(&ss, nullptr);
    install(SIGALRM, &ReadWatchdog::expired, &old_alrm_);
    install(SIGSEGV, &ReadWatchdog::crashed, &old_segv_);
    install(SIGBUS, &ReadWatchdog::crashed, &old_bus_);
    install(SIGFPE, &ReadWatchdog::crashed, &old_fpe_);
    install(SIGILL, &ReadWatchdog::crashed, &old_ill_);
    // glibc's heap checks abort() when a damaged file made HDF5 corrupt its heap (seen closing one).
    install(SIGABRT, &ReadWatchdog::crashed, &old_abrt_);
    alarm(seconds);
  }
  ~ReadWatchdog() {
    alarm(0);
    sigaction(SIGALRM, &old_alrm_, nullptr);
    sigaction(SIGSEGV, &old_segv_, nullptr);
    sigaction(SIGBUS, &old_bus_, nullptr);
    sigaction(SIGFPE, &old_fpe_, nullptr);
    sigaction(SIGILL, &old_ill_, nullptr);
    sigaction(SIGABRT, &old_abrt_, nullptr);
  }
  ReadWatchdog(const ReadWatchdog&) = delete;
  ReadWatchdog& operator=(const ReadWatchdog&) = delete;

 private:
  static constexpr size_t kMax = 4096;
  static char* timeout_message() {
    static char buf[kMax];
    return buf;
  }
  static char* crash_message() {
    static char buf[kMax];
    return buf;
  }
  static void set(char* buf, const std::string& text) {
    std::strncpy(buf, text.c_str(), kMax - 1);
    buf[kMax - 1] = '\0';
  }
  static void install(int sig, void (*fn)(int), struct sigaction* old) {
    struct sigaction sa {};
    sa.sa_handler = fn;
    sa.sa_flags = SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, old);
  }
  static void say_and_exit(const char* m) {
    ssize_t r = ::write(2, m, std::strlen(m));
    (void)r;
    _exit(1);
  }
  static void expired(int) { say_and_exit(timeout_message()); }
  static void crashed(int) { say_and_exit(crash_message()); }

  struct sigaction old_alrm_ {
  }, old_segv_{}, old_bus_{}, old_fpe_{}, old_ill_{}, old_abrt_{};
};

}  // namespace xpand::cli
