#!/usr/bin/env bash
# A rank killed with SIGKILL in the middle of training: every other rank exits non-zero within 60 s
# and the output names the lost rank.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cli_init "$@"

cat >"$WORK/long.yaml" <<YAML
name: long
data: {name: teacher, batch_size: 64, train_size: 4096}
model: {kind: mlp, widths: [32, 256, 256, 10]}
train: {epochs: 0, max_steps: 1000000, log_every: 10}
threads: 1
YAML

step "3 ranks training; SIGKILL to rank 1 once steps are logged"
"$MPIEXEC" -np 3 "$XPAND" train "$WORK/long.yaml" --out "$WORK/out" >"$WORK/stdout" 2>"$WORK/stderr" &
JOB=$!
wait_for 60 grep -q "step .*/1000000" "$WORK/stderr" || { kill -9 $JOB; show "$WORK/stderr"; fail "training never started"; }
RANK1=""
for p in $(pgrep -f "$XPAND train $WORK/long.yaml" || true); do
  if tr '\0' '\n' </proc/"$p"/environ 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=1"; then RANK1=$p; fi
done
[ -n "$RANK1" ] || { kill -9 $JOB; fail "could not find rank 1's process"; }
kill -9 "$RANK1"
start=$(date +%s)
wait_for 60 bash -c "! kill -0 $JOB 2>/dev/null" || { kill -9 $JOB; fail "the job still runs 60 s after rank 1 died"; }
RC=0
wait $JOB || RC=$?
elapsed=$(($(date +%s) - start))
[ "$RC" -ne 0 ] || fail "the job exited 0 after losing a rank"
if pgrep -f "$XPAND train $WORK/long.yaml" >/dev/null; then fail "ranks still running after the job ended"; fi
cat "$WORK/stdout" "$WORK/stderr" >"$WORK/all"
grep -Eq "rank 1 .*(signal 9|Killed)|rank 1 .*did not arrive|did not arrive: 1" "$WORK/all" ||
  { show "$WORK/all"; fail "no message naming rank 1"; }
ok "every rank gone ${elapsed}s after the kill (exit $RC): $(grep -Em1 'rank 1' "$WORK/all")"
