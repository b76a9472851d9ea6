// The progress bar `xpand train` and `xpand sweep` draw on a terminal (log::status).
#pragma once
#include <algorithm>
#include <string>

namespace xpand {

// "[#########.....................]" for a fraction in [0, 1].
inline std::string progress_bar(double fraction, int width = 30) {
  const int full = std::clamp(int(double(width) * fraction), 0, width);
  return "[" + std::string(size_t(full), '#') + std::string(size_t(width - full), '.') + "]";
}

}  // namespace xpand
