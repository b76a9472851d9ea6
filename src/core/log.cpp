// Rank-aware logger setup (see log.h).
#include "core/log.h"

#include <spdlog/sinks/base_sink.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdio>
#include <mutex>

namespace xpand::log {
namespace {

int g_rank = 0;

// Writes formatted lines to stderr, colouring the level on a terminal, and keeps an optional status
// line (a progress bar) below them: each log line clears the bar, prints, and redraws it.
class ConsoleSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  ConsoleSink() : tty_(::isatty(STDERR_FILENO) == 1) {}
  bool tty() const { return tty_; }

  void set_status(const std::string& line) {
    std::lock_guard<std::mutex> lk(mutex_);
    status_ = line;
    // One screen line: a wrapped bar would leave a stale copy on every redraw.
    struct winsize ws {};
    if (tty_ && ::ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1 && status_.size() >= ws.ws_col)
      status_.resize(size_t(ws.ws_col) - 1);
    if (!tty_) return;
    std::fputs("\r\033[K", stderr);
    std::fputs(status_.c_str(), stderr);
    std::fflush(stderr);
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t buf;
    formatter_->format(msg, buf);
    if (tty_ && !status_.empty()) std::fputs("\r\033[K", stderr);
    if (tty_ && msg.color_range_end > msg.color_range_start) {
      std::fwrite(buf.data(), 1, msg.color_range_start, stderr);
      std::fputs(colour(msg.level), stderr);
      std::fwrite(buf.data() + msg.color_range_start, 1, msg.color_range_end - msg.color_range_start, stderr);
      std::fputs("\033[m", stderr);
      std::fwrite(buf.data() + msg.color_range_end, 1, buf.size() - msg.color_range_end, stderr);
    } else {
      std::fwrite(buf.data(), 1, buf.size(), stderr);
    }
    if (tty_ && !status_.empty()) std::fputs(status_.c_str(), stderr);
    std::fflush(stderr);
  }
  void flush_() override { std::fflush(stderr); }

 private:
  static const char* colour(spdlog::level::level_enum l) {
    switch (l) {
      case spdlog::level::warn:
        return "\033[33m\033[1m";
      case spdlog::level::err:
      case spdlog::level::critical:
        return "\033[31m\033[1m";
      case spdlog::level::debug:
      case spdlog::level::trace:
        return "\033[36m";
      default:
        return "\033[32m";
    }
  }
  const bool tty_;
  std::string status_;
};

std::shared_ptr<ConsoleSink> console() {
  static auto sink = std::make_shared<ConsoleSink>();
  return sink;
}

}  // namespace

void set_rank(int rank, int world_size) {
  g_rank = rank;
  auto logger = spdlog::get("xpand");
  if (!logger) {
    logger = std::make_shared<spdlog::logger>("xpand", console());
    spdlog::register_logger(logger);
  }
  if (world_size > 1)
    logger->set_pattern(fmt::format("[%H:%M:%S] [r{}] [%^%l%$] %v", rank));
  else
    logger->set_pattern("[%H:%M:%S] [%^%l%$] %v");
  spdlog::set_default_logger(logger);
}

int rank() { return g_rank; }

void set_level(const std::string& level) { spdlog::set_level(spdlog::level::from_str(level)); }

bool stderr_is_tty() { return console()->tty(); }

void status(const std::string& line) { console()->set_status(line); }

void status_end() {
  auto sink = console();
  const bool had = sink->tty();
  sink->set_status("");
  if (had) {
    std::fputs("\r\033[K", stderr);
    std::fflush(stderr);
  }
}

}  // namespace xpand::log
