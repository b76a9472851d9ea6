#!/usr/bin/env bash
# The body of jobs/sweep.sbatch and jobs/array.sbatch (not submitted by itself): runs one
# `xpand sweep` over all tasks of this allocation with `srun --mpi=pmix`, and handles Slurm's
# signals so that nothing is lost:
#   - USR1 (from `--signal=B:USR1@<grace>`, a time limit coming) is forwarded to the ranks, which
#     checkpoint at the next step boundary and exit 4; the job then requeues itself
#     (`scontrol requeue`, needs `--requeue`) and, restarted, resumes where it stopped.
#   - TERM (scancel, `scontrol requeue`, preemption) reaches the ranks from Slurm itself; the script
#     waits for them to checkpoint instead of leaving first.
# Exit code: xpand's (0 every point completed, 1 a point failed, 3 a point diverged, 4 stopped).
#
# Parameters (environment):
#   SWEEP            sweep file (default configs/quickstart.yaml), relative to XPAND_ROOT
#   OUT              output directory (default: the sweep's output.dir)
#   RANKS_PER_RUN    ranks training each point together (default 1: one point per task)
#   XPAND            the xpand binary (default XPAND_ROOT/build/xpand, else xpand on PATH)
#   XPAND_ROOT       directory the paths are relative to (default SLURM_SUBMIT_DIR)
#   XPAND_ARGS       more `xpand sweep` arguments, e.g. "--set train.max_steps=100"
#   SRUN_ARGS        more srun arguments
#   PROGRESS_SECONDS seconds between progress lines in the output file (default 60)
#   DEVICE           device=auto (default: a GPU when the task has one, else the CPU), cpu or cuda;
#                    not part of the run ids, so CPU and GPU jobs share one sweep's points
set -uo pipefail

source "${XPAND_ROOT:-${SLURM_SUBMIT_DIR:-$PWD}}/jobs/job-env.sh" || { echo "xpand job: jobs/job-env.sh not found (set XPAND_ROOT)" >&2; exit 2; }
job_env configs/quickstart.yaml "xpand job"

args=(sweep "$sweep" --ranks-per-run "${RANKS_PER_RUN:-1}" --progress "${PROGRESS_SECONDS:-60}"
      --set "device=${DEVICE:-auto}")
[[ -n "${OUT:-}" ]] && args+=(--out "$OUT")

tag="job ${SLURM_JOB_ID:-?}${SLURM_ARRAY_TASK_ID:+ (array task $SLURM_ARRAY_TASK_ID)}"
echo "xpand job: $tag, restart ${SLURM_RESTART_COUNT:-0}, ${SLURM_NTASKS:-?} tasks on ${SLURM_JOB_NODELIST:-?}:" \
     "$xpand ${args[*]} ${extra[*]}"

stop=""
srun_pid=""
on_usr1() {
  stop=usr1
  echo "xpand job: $tag: time limit near (USR1): the ranks checkpoint at the next step, then the job requeues"
  [[ -n "$srun_pid" ]] && kill -USR1 "$srun_pid" 2>/dev/null
}
on_term() {
  [[ -z "$stop" ]] && stop=term
  echo "xpand job: $tag: terminated (scancel, requeue or preemption): waiting for the ranks to checkpoint"
}
trap on_usr1 USR1
trap on_term TERM INT

srun --mpi=pmix ${srun_extra[@]+"${srun_extra[@]}"} "$xpand" "${args[@]}" ${extra[@]+"${extra[@]}"} &
srun_pid=$!
# `wait` returns early when a trapped signal arrives: wait until srun itself has ended.
while kill -0 "$srun_pid" 2>/dev/null; do wait "$srun_pid"; done
wait "$srun_pid"
rc=$?
echo "xpand job: $tag: xpand sweep exited $rc"
if [[ $rc -eq 4 && "$stop" == usr1 && -n "${SLURM_JOB_ID:-}" ]]; then
  echo "xpand job: $tag: requeueing to resume"
  # SLURM_JOB_ID names this very task of an array, too.
  scontrol requeue "$SLURM_JOB_ID" ||
    echo "xpand job: $tag: scontrol requeue failed; resubmit the same job to resume" >&2
fi
exit $rc
