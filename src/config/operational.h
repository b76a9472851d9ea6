// Operational keys: how a run is carried out (logging, time-outs, all-reduce bucket sizes, the
// communication backend), not what it trains or measures. They do not change the run id: Config::hash
// counts them at their defaults, so a run resubmitted with another value resumes the same run, and
// the run file records each change in its /resumes table (docs/SWEEPS.md, docs/FORMAT.md). output.*,
// device and threads are left out of the id altogether.
#pragma once
#include <string>
#include <vector>

namespace xpand::config {

const std::vector<std::string>& operational_keys();
bool is_operational(const std::string& key);

}  // namespace xpand::config
