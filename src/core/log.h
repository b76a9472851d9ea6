// Logging for xpand: spdlog underneath, a rank prefix once the world is known, and
// rank-0-only helpers so a 1,000-rank job prints one line per event, not 1,000.
#pragma once
#include <spdlog/spdlog.h>

namespace xpand::log {

// Sets the rank shown in every line ("[r3]") and whether this process prints info-level lines.
void set_rank(int rank, int world_size);
int rank();
// Verbosity: "debug", "info", "warn", "error".
void set_level(const std::string& level);

// A status line (a progress bar) kept below the log lines while stderr is a terminal: every log
// line clears it, prints, and redraws it. No-op when stderr is a file or pipe (Slurm output files).
bool stderr_is_tty();
void status(const std::string& line);
void status_end();  // removes the status line

template <typename... Args>
void info(fmt::format_string<Args...> f, Args&&... args) {
  if (rank() == 0) spdlog::info(f, std::forward<Args>(args)...);
}
template <typename... Args>
void info_all(fmt::format_string<Args...> f, Args&&... args) {
  spdlog::info(f, std::forward<Args>(args)...);
}
template <typename... Args>
void warn(fmt::format_string<Args...> f, Args&&... args) {
  spdlog::warn(f, std::forward<Args>(args)...);
}
template <typename... Args>
void error(fmt::format_string<Args...> f, Args&&... args) {
  spdlog::error(f, std::forward<Args>(args)...);
}
template <typename... Args>
void debug(fmt::format_string<Args...> f, Args&&... args) {
  spdlog::debug(f, std::forward<Args>(args)...);
}

}  // namespace xpand::log
