// Running a sweep: the world's ranks split into groups (--ranks-per-run); each group's rank 0
// claims the most expensive point nobody has finished or holds (sweep/claim.h), the group trains it
// data-parallel (train::run_train resumes an interrupted point from its checkpoint and skips a
// completed one), releases it, and takes the next, until every point is done. Several jobs can share
// one output directory; a point whose owner died is taken over once its claim expires.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "sweep/spec.h"

namespace xpand::sweep {

// What one point costs, from the planner: forward+backward FLOPs per step at the configured batch,
// steps, parameters, activation memory and gradient bytes all-reduced per step (float32/64).
struct PointCost {
  double flops_per_step = 0, total_flops = 0, memory_bytes = 0, comm_bytes = 0;
  int64_t steps = 0, trainable = 0;
};
// Costs of every point (each distinct data configuration is loaded once).
std::vector<PointCost> sweep_costs(const Spec& spec);

struct RunnerOptions {
  int ranks_per_run = 0;       // 0: one group of all ranks
  double lease_seconds = 120;  // a claim not renewed for this long belongs to a dead owner
  double progress_seconds = 30;
  bool force = false;  // retrain completed points
};

// Runs the sweep (collective over the MPI world). Returns the process exit code: 0 when every point
// completed, 1 when any failed, 3 when any diverged (and none failed), 4 when a signal stopped it
// (resumable: rerun the same command).
int sweep_run(const Spec& spec, const RunnerOptions& options);

}  // namespace xpand::sweep
