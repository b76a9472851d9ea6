#!/usr/bin/env bash
# How xpand starts under a launcher: the Slurm task-count check, --ranks-per-run (a divisor of the
# world, groups sharing configs), and ranks of one group given different configurations.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cli_init "$@"

tiny() {  # tiny NAME SEED: a few-step teacher run
  cat >"$WORK/$1.yaml" <<YAML
name: $1
seed: $2
data: {name: teacher, batch_size: 32, train_size: 256, test_size: 64}
model: {kind: mlp, widths: [32, 16, 10]}
train: {epochs: 1}
threads: 1
YAML
}
tiny a 1
tiny b 2
attr() { "$PYTHON" -c 'import h5py, sys; print(h5py.File(sys.argv[1], "r").attrs[sys.argv[2]])' "$1" "$2"; }

step "srun without a working PMI: Slurm says 2 tasks, MPI a world of 1"
RC=0
SLURM_STEP_ID=0 SLURM_PROCID=0 SLURM_NTASKS=2 SLURM_STEP_NUM_TASKS=2 \
  "$XPAND" train "$WORK/a.yaml" --out "$WORK/slurm" >"$WORK/o1" 2>"$WORK/e1" || RC=$?
[ "$RC" -eq 2 ] || { show "$WORK/e1"; fail "exit $RC, expected 2"; }
grep -q "Slurm started this step with 2 tasks but MPI sees a world of 1" "$WORK/e1" || { show "$WORK/e1"; fail "message"; }
grep -q "srun --mpi=pmix" "$WORK/e1" || { show "$WORK/e1"; fail "no hint"; }
[ ! -e "$WORK/slurm/runs" ] || fail "a run directory was written"
ok "exit 2: $(head -c 120 "$WORK/e1")..."

step "--ranks-per-run 2 with 3 ranks"
RC=0
"$MPIEXEC" -np 3 "$XPAND" train "$WORK/a.yaml" --out "$WORK/bad" --ranks-per-run 2 >"$WORK/o2" 2>"$WORK/e2" || RC=$?
[ "$RC" -ne 0 ] || fail "exit 0"
grep -q -- "--ranks-per-run 2 must be a positive divisor of the world size 3" "$WORK/e2" || { show "$WORK/e2"; fail "message"; }
[ ! -e "$WORK/bad/runs" ] || fail "a run directory was written"
ok "exit $RC"

step "2 ranks, --ranks-per-run 1: two groups train one config each"
"$MPIEXEC" -np 2 "$XPAND" train "$WORK/a.yaml" "$WORK/b.yaml" --out "$WORK/groups" --ranks-per-run 1 \
  >"$WORK/o3" 2>"$WORK/e3" || { show "$WORK/e3"; fail "exit $?"; }
n=0
for f in "$WORK"/groups/runs/*.h5; do
  [ "$(attr "$f" status)" = completed ] || fail "$f not completed"
  [ "$(attr "$f" world_size)" = 1 ] || fail "$f world_size $(attr "$f" world_size)"
  n=$((n + 1))
done
[ "$n" -eq 2 ] || fail "$n run files, expected 2"
ok "2 run files, world_size 1 each"

step "2 ranks, one group: world_size 2 in the run file"
"$MPIEXEC" -np 2 "$XPAND" train "$WORK/a.yaml" --out "$WORK/one" >"$WORK/o4" 2>"$WORK/e4" || { show "$WORK/e4"; fail "exit"; }
f=$(ls "$WORK"/one/runs/*.h5)
[ "$(attr "$f" world_size)" = 2 ] || fail "world_size $(attr "$f" world_size)"
[ "$(attr "$f" dist_backend)" = mpi ] || fail "backend $(attr "$f" dist_backend)"
ok "world_size 2, backend mpi"

step "ranks of one group given different configs (MPMD launch)"
RC=0
"$MPIEXEC" -np 1 "$XPAND" train "$WORK/a.yaml" --out "$WORK/mpmd" : -np 1 "$XPAND" train "$WORK/b.yaml" --out "$WORK/mpmd" \
  >"$WORK/o5" 2>"$WORK/e5" || RC=$?
[ "$RC" -ne 0 ] || fail "exit 0"
grep -q "every rank of a group must get the same config" "$WORK/e5" || { show "$WORK/e5"; fail "message"; }
ok "exit $RC"
