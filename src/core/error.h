// Errors and checks shared by every module: one exception type per failure class, each carrying
// the process exit code it maps to, and XPAND_CHECK for internal invariants (file and line named).
#pragma once
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace xpand {

// Process exit codes, documented in README.md.
enum ExitCode : int {
  kExitOk = 0,
  kExitFailure = 1,    // runtime failure (I/O, data, numerical setup)
  kExitUsage = 2,      // bad config, CLI flag or sweep spec: nothing ran
  kExitDiverged = 3,   // the run ended with a non-finite loss (status "diverged")
  kExitPreempted = 4,  // stopped by SIGTERM/SIGINT/SIGUSR1 after a checkpoint: resumable (status "preempted")
};

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what, int exit_code = kExitFailure)
      : std::runtime_error(what), exit_code_(exit_code) {}
  int exit_code() const { return exit_code_; }

 private:
  int exit_code_;
};

// Invalid user input detected before anything runs (config keys, values, CLI flags).
class ConfigError : public Error {
 public:
  explicit ConfigError(const std::string& what) : Error(what, kExitUsage) {}
};

// A data file that is missing, truncated or not of the expected format.
class DataError : public Error {
 public:
  explicit DataError(const std::string& what) : Error(what, kExitFailure) {}
};

}  // namespace xpand

// Internal invariant: a failure is a bug in xpand, reported with file and line.
#define XPAND_CHECK(cond, ...)                                                                                 \
  do {                                                                                                         \
    if (!(cond))                                                                                               \
      throw ::xpand::Error(::fmt::format("internal check failed at {}:{}: ({}) ", __FILE__, __LINE__, #cond) + \
                           ::fmt::format(__VA_ARGS__));                                                        \
  } while (0)
