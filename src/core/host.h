// Facts about the machine and the clock that run files and progress lines record: one copy each.
#pragma once
#include <cstdint>
#include <string>

namespace xpand {

// This machine's hostname.
std::string hostname();
// The current UTC time as ISO 8601 ("2026-12-07T05:30:00Z").
std::string now_iso();
// A duration for progress lines: "42s", "3m07s", "2h05m"; "?" when unknown or negative.
std::string duration(double seconds);

// The CPUs this process may run on (its affinity mask; the machine's cores when that is unknown).
int64_t usable_cpus();
// Intra-op threads when the config says 0: the cores this process may use, shared by the
// `ranks_per_node` ranks of this node. Under Slurm the allocation decides (SLURM_CPUS_PER_TASK,
// else the job's CPUs on this node over its ranks here), since task/none leaves every task free to
// run on every core; else the CPU affinity mask (mpirun --bind-to, taskset, cpusets) when it is
// narrower than the machine, else the machine's cores over the node's ranks.
int64_t default_threads(int ranks_per_node);

}  // namespace xpand
