// Preemption: SIGTERM, SIGINT and SIGUSR1 (Slurm's --signal) ask the trainer to checkpoint at the
// next step boundary and stop with status "preempted" (exit code 4, resumable with the same
// command). A second signal ends the process at once (exit 4); the run file stays crash-safe and
// the run resumes from its last checkpoint. The same signal repeated within 2 s is taken for the
// echo it usually is (Slurm's slurmstepd and srun both deliver a scancel's SIGTERM), not a second.
#pragma once

namespace xpand::signals {

// Installs the handlers (once; the commands that train call it).
void install_preemption_handlers();
// The signal that asked for a stop, or 0.
int preempt_requested();

}  // namespace xpand::signals
