// Rank-aware logger setup (see log.h).
#include "core/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

namespace xpand::log {
namespace {
int g_rank = 0;
}

void set_rank(int rank, int world_size) {
  g_rank = rank;
  auto logger = spdlog::get("xpand");
  if (!logger) logger = spdlog::stderr_color_mt("xpand");
  if (world_size > 1)
    logger->set_pattern(fmt::format("[%H:%M:%S] [r{}] [%^%l%$] %v", rank));
  else
    logger->set_pattern("[%H:%M:%S] [%^%l%$] %v");
  spdlog::set_default_logger(logger);
}

int rank() { return g_rank; }

void set_level(const std::string& level) { spdlog::set_level(spdlog::level::from_str(level)); }

}  // namespace xpand::log
