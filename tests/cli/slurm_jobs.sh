#!/usr/bin/env bash
# jobs/*.sbatch on a real (throwaway, single-node) Slurm cluster started by scripts/slurm-local.sh:
#   1. jobs/sweep.sbatch, 2 tasks: every point of a 4-point sweep completed, each trained once;
#   2. `scontrol requeue` while it trains: the job restarts, resumes the interrupted points from
#      their checkpoints (not from step 0) and every point ends completed, each step trained once;
#   3. the time-limit path: USR1 to the batch shell (what --signal=B:USR1@grace sends) makes the
#      ranks checkpoint and the job requeue itself, then finish;
#   4. jobs/array.sbatch, a 2-task array sharing one output directory: each point trained once;
#   5. jobs/scaling.sbatch at 1 and 2 ranks: the strong and weak scaling tables.
# Needs root and slurm-wlm + munge (scripts/setup.sh installs them).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cli_init "$@"

[ "$(id -u)" -eq 0 ] || fail "the local Slurm cluster needs root"
command -v sbatch >/dev/null && command -v slurmctld >/dev/null || [ -x /usr/sbin/slurmctld ] ||
  fail "slurm-wlm is not installed: run scripts/setup.sh (it installs slurm-wlm and munge)"

export XPAND_SLURM_DIR="$WORK/cluster" XPAND_SLURM_PORT="${XPAND_SLURM_PORT:-16917}"
cleanup() { bash "$SRC/scripts/slurm-local.sh" stop >/dev/null 2>&1 || true; }
trap cleanup EXIT
step "start the local cluster"
bash "$SRC/scripts/slurm-local.sh" start | tee "$WORK/start.out"
export SLURM_CONF="$XPAND_SLURM_DIR/slurm.conf"
sinfo
ok "cluster up"

# Jobs read these (jobs/sweep-step.sh).
export XPAND="$XPAND" XPAND_ROOT="$SRC" PROGRESS_SECONDS=5
unset SLURM_JOB_ID SLURM_NTASKS SLURM_ARRAY_JOB_ID SLURM_ARRAY_TASK_ID
unset SLURM_TIME_FORMAT  # wait_job reads scontrol's ISO times

job_state() { scontrol show job "$1" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2; }
# wait_job ID SECONDS: until the job has ended (COMPLETED, FAILED, ...). A requeued job waits for its
# begin time (Slurm sets it ~2 minutes ahead; scontrol shows Reason=BeginTime and the time as
# EligibleTime). So that the test does not sit that out, it moves the begin time to 5 s from now,
# and once that has passed, to now (an update makes the controller schedule at once instead of at
# its next periodic pass). Not straight to now: the controller revokes the old run's credential as
# it ends it, and a new run whose credential is from the same second is refused ("Job credential
# revoked") and the job ends FAILED.
wait_job() {
  local id=$1 limit=$2 t=0 s info begin moved=0
  while :; do
    s=$(job_state "$id")
    case "$s" in
      COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE) echo "$s"; return 0 ;;
      PENDING)
        info=$(scontrol show job "$id" 2>/dev/null || true)
        begin=$(grep -o ' EligibleTime=[0-9]\{4\}-[0-9T:-]*' <<<"$info" | cut -d= -f2 || true)
        [ -n "$begin" ] && begin=$(date -d "$begin" +%s 2>/dev/null) || begin=0
        if [ "$moved" = 0 ] && grep -q 'Reason=BeginTime' <<<"$info" && [ "$begin" -gt $(($(date +%s) + 10)) ]; then
          scontrol update JobId="$id" StartTime=now+5 >/dev/null 2>&1 && moved=1
        elif [ "$moved" = 1 ] && [ "$begin" -gt 0 ] && [ "$begin" -le "$(date +%s)" ]; then
          scontrol update JobId="$id" StartTime=now >/dev/null 2>&1 && moved=0
        fi ;;
    esac
    sleep 1
    t=$((t + 1))
    [ "$t" -lt "$limit" ] || { echo "TIMEOUT_WAITING($s)"; return 1; }
  done
}
# ended_wrongly ID OUTFILE WHAT: the job's output and the controller's log lines about it, then fails.
ended_wrongly() {
  if [ -f "$2" ]; then show "$2"; else echo "    (no output file $2)" >&2; fi
  echo "    slurmctld.log on job $1:" >&2
  grep -E "JobId=$1([^0-9]|$)" "$XPAND_SLURM_DIR/slurmctld.log" | sed 's/^/    | /' >&2 || true
  fail "$3"
}

cat >"$WORK/base.yaml" <<YAML
name: sl
seed: 5
data: {name: teacher, teacher_inputs: 16, teacher_classes: 4, train_size: 2000, test_size: 200, batch_size: 16}
model: {kind: mlp, widths: [16, 32, 32, 4]}
param: {kind: expanded}
train: {optimizer: adam, lr: 0.003, epochs: 0, max_steps: 300, eval_every: 100}
output: {checkpoint_every: 50}
YAML
cat >"$WORK/sweep.yaml" <<YAML
base: base.yaml
grid:
  param.factor: [1, 2]
  param.depth: [2, 3]
YAML
# Longer points for the interruption tests: ~5-10 s each on 2 cores.
cat >"$WORK/long.yaml" <<YAML
base: base.yaml
set: {model.widths: [16, 128, 128, 4], train.max_steps: 5000, train.eval_every: 1000, output.checkpoint_every: 100}
grid:
  param.factor: [1, 2]
  param.depth: [2, 3]
YAML

# check_points OUT N [RESUMED]: N run files, all completed, metrics steps 1..max exactly once, and
# (RESUMED=1) at least one resumed from a checkpoint past step 0.
check_points() {
  "$PYTHON" - "$@" <<'PY'
import glob, sys, h5py, numpy as np
out, n = sys.argv[1], int(sys.argv[2])
resumed_wanted = len(sys.argv) > 3 and sys.argv[3] == "1"
files = sorted(glob.glob(out + "/runs/*.h5"))
assert len(files) == n, f"{len(files)} run files, expected {n}: {files}"
resumed = []
for p in files:
    with h5py.File(p, "r") as f:
        a = f.attrs
        assert a["status"] == "completed", (p, a["status"])
        steps = f["metrics/train/step"][:]
        assert np.array_equal(steps, np.arange(1, len(steps) + 1)), f"{p}: steps not 1..N once each"
        assert len(steps) == int(a["steps"]), (p, len(steps), a["steps"])
        if a["resumes"] > 0:
            assert a["resumed_from_step"] > 0, f"{p} restarted from step 0 instead of its checkpoint"
            resumed.append((p.split("/")[-1], int(a["resumes"]), int(a["resumed_from_step"])))
with h5py.File(out + "/index.h5", "r") as f:
    st = [s.decode() for s in f["summary/status"][:]]
    assert len(st) == n and all(s == "completed" for s in st), st
if resumed_wanted:
    assert resumed, "no point was resumed from a checkpoint"
print(f"{n} points completed, steps 1..N once each; resumed: {resumed}")
PY
}
# trained_once OUTFILES...: each run id started at most once and completed exactly once in the logs,
# counting resumptions of a preempted point as the same training.
trained_once() {
  "$PYTHON" - "$@" <<'PY'
import collections, re, sys
done = collections.Counter()
for path in sys.argv[1:]:
    for line in open(path, errors="replace"):
        m = re.search(r"group \d+: (\S+) completed in", line)
        if m:
            done[m.group(1)] += 1
bad = {k: v for k, v in done.items() if v != 1}
assert done and not bad, f"completions per point: {dict(done)}"
print(f"{len(done)} points, each completed once: {sorted(done)}")
PY
}

step "1. jobs/sweep.sbatch with 2 tasks"
id=$(SWEEP="$WORK/sweep.yaml" OUT="$WORK/out1" sbatch --parsable --ntasks=2 --output="$WORK/job1-%j.out" \
  "$SRC/jobs/sweep.sbatch")
echo "    job $id"
s=$(wait_job "$id" 300) || true
[ "$s" = COMPLETED ] || ended_wrongly "$id" "$WORK/job1-$id.out" "sweep job ended $s"
grep -q "xpand sweep exited 0" "$WORK/job1-$id.out" || { show "$WORK/job1-$id.out"; fail "no clean exit"; }
[ "$(grep -c ": point " "$WORK/job1-$id.out")" -eq 4 ] || { show "$WORK/job1-$id.out"; fail "expected 4 point starts"; }
[ "$(grep -o "group [01]: point" "$WORK/job1-$id.out" | sort -u | wc -l)" -eq 2 ] ||
  { show "$WORK/job1-$id.out"; fail "expected both tasks to train points"; }
check_points "$WORK/out1" 4 || fail "points of the sweep job"
trained_once "$WORK/job1-$id.out" || fail "a point trained twice"
ok "4 points completed once each, on both tasks"

# interrupted N HOW: submits the long sweep to OUT N, waits for its first checkpoint, interrupts it
# with HOW (a command taking the job id), waits for the job to end COMPLETED; sets OUTFILE and ID.
interrupted() {
  local n=$1 how=$2 s
  ID=$(SWEEP="$WORK/long.yaml" OUT="$WORK/out$n" sbatch --parsable --ntasks=2 --output="$WORK/job$n-%j.out" \
    "$SRC/jobs/sweep.sbatch")
  OUTFILE="$WORK/job$n-$ID.out"
  echo "    job $ID"
  wait_for 120 bash -c "ls '$WORK'/out$n/checkpoints/*.h5 >/dev/null 2>&1" || { show "$OUTFILE"; fail "no checkpoint within 120 s"; }
  sleep 1
  $how "$ID"
  echo "    interrupted ($how) at $(date +%T)"
  s=$(wait_job "$ID" 400) || true
  [ "$s" = COMPLETED ] || ended_wrongly "$ID" "$OUTFILE" "interrupted job ended $s"
  grep -q "restart 1," "$OUTFILE" || { show "$OUTFILE"; fail "the job did not restart"; }
  grep -q "resuming from the checkpoint at step" "$OUTFILE" || { show "$OUTFILE"; fail "nothing resumed from a checkpoint"; }
  [ "$(scontrol show job "$ID" | grep -o 'Restarts=[0-9]*')" = "Restarts=1" ] || fail "Restarts != 1"
  check_points "$WORK/out$n" 4 1 || { show "$OUTFILE"; fail "points after the interruption"; }
  trained_once "$OUTFILE" || fail "a point trained to completion twice"
}
requeue() { scontrol requeue "$1"; }
usr1_to_batch_shell() { scancel --batch --signal=USR1 "$1"; }

step "2. scontrol requeue while the sweep trains"
interrupted 2 requeue
grep -q "stopped by signal 15" "$OUTFILE" || { show "$OUTFILE"; fail "the ranks were not stopped by SIGTERM at a step boundary"; }
ok "requeued: restarted once, interrupted points resumed from their checkpoints, 4 completed once each"

step "3. time limit: USR1 to the batch shell, the job checkpoints and requeues itself"
interrupted 3 usr1_to_batch_shell
grep -q "stopped by signal 10" "$OUTFILE" && grep -q "requeueing to resume" "$OUTFILE" ||
  { show "$OUTFILE"; fail "USR1 did not lead to checkpoint and self-requeue"; }
ok "USR1: checkpointed, requeued itself, resumed, 4 completed once each"

step "4. jobs/array.sbatch: 2 array tasks, one output directory"
id=$(SWEEP="$WORK/long.yaml" OUT="$WORK/out4" sbatch --parsable --array=0-1 --output="$WORK/job4-%A_%a.out" \
  "$SRC/jobs/array.sbatch" | cut -d';' -f1)
echo "    array job $id"
for t in 0 1; do
  s=$(wait_job "${id}_$t" 400) || true
  [ "$s" = COMPLETED ] || ended_wrongly "$id" "$WORK/job4-${id}_$t.out" "array task $t ended $s"
done
check_points "$WORK/out4" 4 || { cat "$WORK"/job4-*.out >&2; fail "points of the array"; }
trained_once "$WORK"/job4-*.out || fail "a point trained twice across the array"
for t in 0 1; do
  grep -q ": point " "$WORK/job4-${id}_$t.out" || { show "$WORK/job4-${id}_$t.out"; fail "array task $t trained nothing"; }
done
ok "both array tasks trained, 4 points completed once each"

step "5. jobs/scaling.sbatch at 1 and 2 ranks"
cat >"$WORK/scale.yaml" <<YAML
base: base.yaml
set: {data.batch_size: 64}
seeds: [0]
YAML
id=$(SWEEP="$WORK/scale.yaml" OUT="$WORK/out5" STEPS=60 sbatch --parsable --ntasks=2 --output="$WORK/job5-%j.out" \
  "$SRC/jobs/scaling.sbatch")
s=$(wait_job "$id" 300) || true
[ "$s" = COMPLETED ] || ended_wrongly "$id" "$WORK/job5-$id.out" "scaling job ended $s"
cat "$WORK/out5/scaling.md"
"$PYTHON" - "$WORK/out5/scaling.md" <<'PY' || fail "scaling table"
import re, sys
text = open(sys.argv[1]).read()
for mode, batches in (("strong", {1: 64, 2: 64}), ("weak", {1: 64, 2: 128})):
    sec = text.split(f"### {mode} scaling")[1].split("###")[0]
    rows = [r.split("|")[1:-1] for r in sec.splitlines() if re.match(r"\| \d", r)]
    got = {int(r[0]): int(r[1]) for r in rows}
    assert got == batches, (mode, got)
    assert all(float(r[2]) > 0 and r[7].strip() == "completed" for r in rows), rows
print("strong and weak tables: 1 and 2 ranks with the right global batches")
PY
ok "scaling table written"
echo "slurm_jobs: all checks passed"
