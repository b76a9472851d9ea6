// Process memory: current and peak resident set size from /proc/self/status (Linux), and a reset
// of the peak (/proc/self/clear_refs, "5") so a phase — training after set-up — is measured alone.
#pragma once
#include <cstdint>

namespace xpand {

int64_t rss_bytes();       // VmRSS, or -1 where unavailable
int64_t peak_rss_bytes();  // VmHWM since start or since the last reset, or -1
bool reset_peak_rss();     // false where the kernel does not allow it

}  // namespace xpand
