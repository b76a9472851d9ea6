#!/usr/bin/env bash
# What a cluster does to a run that the docs promise it survives, each case reproduced as it was
# found (docs/FORMAT.md, docs/SWEEPS.md):
#   index-lock     a process holding <out>/.index.lock (stopped, hung) cannot hang a finished run
#   dir-deleted    the output directory removed mid-run: exit 1, never "completed" for a lost file
#   ragged-live    a live run file whose columns differ by the row being appended is read, not refused
#   early-signal   SIGTERM/SIGUSR1 during start-up: exit 4 (resumable), not 143/138
#   damaged-ckpt   a checkpoint with damaged metadata, or one flipped bit in a tensor (Fletcher-32),
#                  is moved aside with a warning and the run starts over, instead of failing every
#                  rerun or resuming silently from wrong numbers
#   read-only      rerunning a completed run in a read-only directory is exit 0 (nothing to do)
#   busy-point     a sweep point trained by another live process waits, it is not counted failed
#   mpirun         what SIGUSR1 and SIGTERM to mpirun give (docs/SWEEPS.md, "Under mpirun")
#   disk-full      resuming on a nearly full disk: exit 1 with a message, old files untouched, no
#                  .part left (a small tmpfs; skipped with a note where mounting is not allowed)
#   operational    a preempted run resubmitted with another train.log_every and dist.timeout_s
#                  resumes under the same run id, records the changes in /resumes, and ends with
#                  the metrics of an uninterrupted run
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cli_init "$@"

cat >"$WORK/run.yaml" <<YAML
name: robust
seed: 11
threads: 1
data: {name: teacher, teacher_inputs: 32, teacher_classes: 6, train_size: 6000, test_size: 400, batch_size: 32}
model: {kind: mlp, widths: [32, 128, 64, 6]}
param: {kind: expanded, factor: 2, depth: 2}
train: {optimizer: adam, lr: 0.002, epochs: 2, eval_every: 40, log_every: 1000}
output: {snapshot_every: 60, snapshot_factors: true, checkpoint_every: 25, flush_seconds: 0.1}
YAML
sed 's/epochs: 2,/epochs: 20,/' "$WORK/run.yaml" >"$WORK/long.yaml"

# has_files GLOB: whether the glob matches a file (wait_for's command is evaluated anew each poll).
has_files() { compgen -G "$1" >/dev/null; }

# lock_held FILE: whether another process holds an flock on FILE.
lock_held() { ! flock -n "$1" true; }

# during_run DIR GLOB DELAY ACTION...: trains long.yaml into DIR in the background (under the
# launcher ${LAUNCH[@]}, when set), waits until GLOB matches and DELAY seconds more, runs ACTION
# (signal_run sends a signal to the run), and waits for the run: exit status in RC, output in
# $WORK/during.out and $WORK/during.err.
during_run() {
  local dir=$1 glob=$2 delay=$3
  shift 3
  ${LAUNCH[@]+"${LAUNCH[@]}"} "$XPAND" train "$WORK/long.yaml" --out "$dir" >"$WORK/during.out" 2>"$WORK/during.err" &
  RUN_PID=$!
  wait_for 120 has_files "$glob" || fail "nothing matched $glob"
  sleep "$delay"
  "$@"
  RC=0
  wait "$RUN_PID" || RC=$?
}
signal_run() { kill -s "$1" "$RUN_PID"; }

# elapsed_ms START_NS
elapsed_ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

step "index-lock: a held .index.lock delays a finished run by at most the lock deadline"
O="$WORK/lock"
mkdir -p "$O"
flock -o "$O/.index.lock" sleep 90 &  # -o: the lock is flock's own, released when it is killed
holder=$!
wait_for 30 lock_held "$O/.index.lock" || fail "the lock holder did not take the lock"
t0=$(date +%s%N)
run_xpand "$WORK/lock.out" "$WORK/lock.err" train "$WORK/run.yaml" --out "$O"
ms=$(elapsed_ms "$t0")
kill "$holder" 2>/dev/null || true
wait "$holder" 2>/dev/null || true
[ "$RC" -eq 0 ] || { show "$WORK/lock.err"; fail "train with a held index lock exited $RC"; }
[ "$ms" -lt 60000 ] || fail "train with a held index lock took $ms ms (the lock deadline is 10 s)"
grep -q "index.h5 was not updated" "$WORK/lock.err" || { show "$WORK/lock.err"; fail "no warning that the index was not updated"; }
ok "exit 0 after $ms ms with: $(grep -o 'could not update.*held by another process[^;]*' "$WORK/lock.err" | head -1)"
step "index-lock: the next update brings the index up to date, re-reading only changed run files"
sed 's/name: robust/name: robust2/' "$WORK/run.yaml" >"$WORK/run2.yaml"
run_xpand "$WORK/idx.out" "$WORK/idx.err" index "$O"  # the explicit rebuild (every run file read)
[ "$RC" -eq 0 ] || { show "$WORK/idx.err"; fail "xpand index exited $RC"; }
sleep 2.2  # run files older than 2 s count as settled
run_xpand "$WORK/lock2.out" "$WORK/lock2.err" --log-level debug train "$WORK/run2.yaml" --out "$O"
[ "$RC" -eq 0 ] || { show "$WORK/lock2.err"; fail "second train exited $RC"; }
"$PYTHON" - "$O/index.h5" <<'PY'
import sys, h5py
with h5py.File(sys.argv[1], "r") as f:
    ids = sorted(s.decode() for s in f["summary/run_id"][:])
    st = [s.decode() for s in f["summary/status"][:]]
    assert len(ids) == 2 and all(s == "completed" for s in st), (ids, st)
    assert "file_mtime_ns" in f["summary"] and "file_size" in f["summary"], list(f["summary"])
print("    index rows:", ids)
PY
grep -o "index: [0-9]* run(s), [0-9]* reused" "$WORK/lock2.err" | grep -q "index: 2 run(s), 1 reused" ||
  { show "$WORK/lock2.err"; fail "the second run's index update did not reuse the first run's row"; }
ok "index.h5 lists both runs; the update reused the unchanged run's row"

step "quoted --set: name=\"x\" from a shell names the run x, as in a config file (no quotes kept)"
run_xpand "$WORK/q.out" "$WORK/q.err" train "$WORK/run.yaml" --set 'name="quoted"' --set train.max_steps=2 --out "$WORK/q"
[ "$RC" -eq 0 ] || { show "$WORK/q.err"; fail "train with a quoted name exited $RC"; }
has_files "$WORK/q/runs/quoted-*.h5" || { ls -R "$WORK/q" >&2; fail "the quotes stayed in the run name"; }
ok "$(basename "$(ls "$WORK"/q/runs/quoted-*.h5)")"

step "threads: more threads than CPUs are reduced to the CPUs this process may use"
run_xpand "$WORK/t.out" "$WORK/t.err" train "$WORK/run.yaml" --set threads=1000 --set train.max_steps=2 --out "$WORK/thr"
[ "$RC" -eq 0 ] || { show "$WORK/t.err"; fail "train with threads=1000 exited $RC"; }
grep -q "threads: 1000 is more than the" "$WORK/t.err" || { show "$WORK/t.err"; fail "no warning about threads=1000"; }
ok "$(grep -o 'threads: 1000 is more than the.*' "$WORK/t.err" | head -1)"

step "dir-deleted: removing the output directory mid-run is exit 1, not a reported success"
O="$WORK/deleted"
# rm -rf races the run: a checkpoint written between its listing and its rmdir leaves the directory
# not empty, so it is retried until the directory is gone.
remove_dir() {
  local tries=0
  until rm -rf "$1" 2>/dev/null && [ ! -e "$1" ]; do
    tries=$((tries + 1))
    [ "$tries" -lt 50 ] || { kill "$RUN_PID" 2>/dev/null; fail "could not remove $1 while the run wrote into it"; }
    sleep 0.1
  done
}
during_run "$O" "$O/runs/*.h5" 1 remove_dir "$O"
cp "$WORK/during.out" "$WORK/del.out"
cp "$WORK/during.err" "$WORK/del.err"
[ "$RC" -eq 1 ] || { show "$WORK/del.err"; fail "train whose directory was deleted exited $RC (want 1)"; }
# The end-of-run identity check says so, unless a checkpoint into the vanished directory failed
# first (its rename or its directory, depending on when the directory went: also exit 1); either way
# an error, and no success reported.
grep -q "^xpand: error: " "$WORK/del.err" || { show "$WORK/del.err"; fail "no message about the lost file"; }
grep -q "^results:" "$WORK/del.out" && fail "a lost run printed 'results:'"
ok "exit 1: $(grep -o '^xpand: error: .*' "$WORK/del.err" | head -1 | cut -c1-160)"

step "ragged-live: a running file whose columns differ in length is read at their common length"
O="$WORK/ragged"
run_xpand "$WORK/rag.out" "$WORK/rag.err" train "$WORK/run.yaml" --out "$O"
[ "$RC" -eq 0 ] || { show "$WORK/rag.err"; fail "train exited $RC"; }
F=$(ls "$O"/runs/*.h5)
"$PYTHON" - "$F" <<'PY'
import sys, h5py
with h5py.File(sys.argv[1], "r+") as f:
    f.attrs["status"] = "running"  # as a live run's file (or a killed one's)
    n = f["metrics/train/step"].shape[0]
    for name in list(f["metrics/train"]):
        if name != "time_compute":
            f["metrics/train"][name].resize((n - 1,))  # one column a row ahead of the others
PY
for args in "inspect $F --json" "inspect $O" "index $O" "inspect $F"; do
  # shellcheck disable=SC2086
  run_xpand "$WORK/rag.out" "$WORK/rag.err" $args
  [ "$RC" -eq 0 ] || { show "$WORK/rag.err"; fail "xpand $args on a live ragged file exited $RC"; }
done
run_xpand "$WORK/rag.out" "$WORK/rag.err" inspect "$F" --json
"$PYTHON" -c 'import json,sys; d=json.load(open(sys.argv[1])); n=d["train"]["rows"]; assert n == 373, n' "$WORK/rag.out" ||
  fail "inspect --json did not report the common length (373 rows)"
ok "inspect FILE/DIR, inspect --json and index accept it (373 common rows)"

step "early-signal: the handlers are in place before start-up's slow parts; SIGTERM/SIGUSR1 then exit 4"
# The signal is sent the moment /proc shows the handler installed (no timing guesses), and at that
# moment MPI's start-up (which spawns its helper process, orted, under a singleton launch) must not
# have happened yet: the old order installed the handlers after MPI and the config, about 1-2 s in.
for sig in TERM USR1; do
  O="$WORK/early-$sig"
  num=$(kill -l "$sig")
  "$XPAND" train "$WORK/long.yaml" --out "$O" >"$WORK/early.out" 2>"$WORK/early.err" &
  pid=$!
  caught=0
  for _ in $(seq 1 3000); do
    mask=$(awk '/^SigCgt:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    if [ -n "$mask" ] && (( (16#$mask >> (num - 1)) & 1 )); then caught=1; break; fi
    sleep 0.005
  done
  children=$(cat /proc/"$pid"/task/*/children 2>/dev/null | wc -w)
  kill -s "$sig" "$pid"
  RC=0
  wait "$pid" || RC=$?
  [ "$caught" -eq 1 ] || fail "SIG$sig: the handler never appeared in /proc/$pid/status"
  [ "$children" -eq 0 ] || fail "SIG$sig: the handler was installed only after MPI's start-up ($children child process(es))"
  [ "$RC" -eq 4 ] || { show "$WORK/early.err"; fail "SIG$sig during start-up: exit $RC (want 4)"; }
done
ok "both handlers present before MPI's start-up; SIGTERM and SIGUSR1 sent then: exit 4"

# stop_run DIR: trains long.yaml in DIR until its first checkpoint exists, then SIGTERM (exit 4).
stop_run() {
  during_run "$1" "$1/checkpoints/*.h5" 0.5 signal_run TERM
  [ "$RC" -eq 4 ] || { show "$WORK/during.err"; fail "stopped run exited $RC (want 4)"; }
}

step "damaged-ckpt: a checkpoint missing a tensor is moved aside and the run starts over"
O="$WORK/ckpt-meta"
stop_run "$O"
C=$(ls "$O"/checkpoints/*.h5)
"$PYTHON" - "$C" <<'PY'
import sys, h5py
with h5py.File(sys.argv[1], "r+") as f:
    del f["params"][sorted(f["params"])[0]]
PY
for attempt in 1 2; do
  run_xpand "$WORK/dm.out" "$WORK/dm.err" train "$WORK/run.yaml" --set train.epochs=20 --out "$O"
  [ "$RC" -eq 0 ] || { show "$WORK/dm.err"; fail "rerun $attempt after a damaged checkpoint exited $RC"; }
  [ "$attempt" -eq 2 ] || grep -q "the checkpoint is damaged" "$WORK/dm.err" || { show "$WORK/dm.err"; fail "no warning about the damaged checkpoint"; }
done
ls "$O"/checkpoints/*.prev-1 >/dev/null || fail "the damaged checkpoint was not kept aside"
ok "exit 0, warned, damaged checkpoint kept as $(basename "$(ls "$O"/checkpoints/*.prev-1)")"

step "damaged-ckpt: one flipped bit in a checkpoint tensor is caught by its checksum"
O="$WORK/ckpt-bit"
stop_run "$O"
C=$(ls "$O"/checkpoints/*.h5)
"$PYTHON" - "$C" <<'PY'
import sys, h5py
path = sys.argv[1]
with h5py.File(path, "r") as f:
    d = next(f["params"][k] for k in sorted(f["params"]) if f["params"][k].size > 0)
    assert d.fletcher32, "checkpoint arrays carry no Fletcher-32 checksum"
    off = d.id.get_chunk_info(0).byte_offset
with open(path, "r+b") as fh:
    fh.seek(off + 5)
    b = fh.read(1)
    fh.seek(off + 5)
    fh.write(bytes([b[0] ^ 0x10]))
print(f"    flipped one bit at byte {off + 5}")
PY
run_xpand "$WORK/bit.out" "$WORK/bit.err" train "$WORK/long.yaml" --out "$O"
[ "$RC" -eq 0 ] || { show "$WORK/bit.err"; fail "rerun after a flipped bit exited $RC"; }
grep -q "the checkpoint is damaged" "$WORK/bit.err" || { show "$WORK/bit.err"; fail "a flipped bit in a checkpoint was resumed silently"; }
grep -q "resuming from the checkpoint" "$WORK/bit.err" && fail "resumed from a damaged checkpoint"
ok "$(grep -o 'the checkpoint is damaged ([^)]*' "$WORK/bit.err" | head -1 | cut -c1-150)"

step "read-only: rerunning a completed run in a read-only directory is exit 0"
RO="$WORK/ro"
mkdir -p "$RO"
if mount --bind "$O" "$RO" 2>/dev/null && mount -o remount,ro,bind "$RO" 2>/dev/null; then
  run_xpand "$WORK/ro.out" "$WORK/ro.err" train "$WORK/long.yaml" --out "$RO"
  umount "$RO"
  [ "$RC" -eq 0 ] || { show "$WORK/ro.err"; fail "completed run in a read-only directory: exit $RC (want 0)"; }
  grep -q "already completed" "$WORK/ro.err" || { show "$WORK/ro.err"; fail "no 'already completed' message"; }
  ok "exit 0: already completed"
else
  umount "$RO" 2>/dev/null || true
  echo "    skipped: cannot make a read-only bind mount here"
fi

step "busy-point: a point another live process trains is waited for, not counted failed"
O="$WORK/busy"
cat >"$WORK/busy-sweep.yaml" <<YAML
base: run.yaml
grid:
  seed: [11]
YAML
run_xpand "$WORK/plan.out" "$WORK/plan.err" plan "$WORK/busy-sweep.yaml" --json
[ "$RC" -eq 0 ] || { show "$WORK/plan.err"; fail "plan exited $RC"; }
ID=$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["points"][0]["run_id"])' "$WORK/plan.out")
mkdir -p "$O/locks"
flock -o "$O/locks/$ID.lock" sleep 6 &
holder=$!
wait_for 30 lock_held "$O/locks/$ID.lock" || fail "the lock holder did not take the lock"
run_xpand "$WORK/busy.out" "$WORK/busy.err" sweep "$WORK/busy-sweep.yaml" --out "$O" --progress 0
wait "$holder" 2>/dev/null || true
[ "$RC" -eq 0 ] || { show "$WORK/busy.err"; fail "sweep with a busy point exited $RC (want 0)"; }
grep -q "leaving it to that process" "$WORK/busy.err" || { show "$WORK/busy.err"; fail "the busy point was not recognised"; }
grep -q "1 completed, 0 failed" "$WORK/busy.err" || { show "$WORK/busy.err"; fail "the sweep did not end with the point completed"; }
ok "the sweep waited for the lock's holder, then trained the point: 1 completed, 0 failed"

step "mpirun: SIGUSR1 is forwarded (exit 4); SIGTERM makes mpirun exit 1, the run still preempted"
for sig in USR1 TERM; do
  O="$WORK/mpirun-$sig"
  LAUNCH=("$MPIEXEC" -np 2)
  during_run "$O" "$O/checkpoints/*.h5" 0.5 signal_run "$sig"
  LAUNCH=()
  cp "$WORK/during.err" "$WORK/mpi.err"
  want=4
  [ "$sig" = USR1 ] || want=1
  [ "$RC" -eq "$want" ] || { show "$WORK/mpi.err"; fail "mpirun after SIG$sig exited $RC (docs/SWEEPS.md says $want)"; }
  st=$("$PYTHON" -c 'import h5py,glob,sys; print(h5py.File(glob.glob(sys.argv[1]+"/runs/*.h5")[0],"r",swmr=True).attrs["status"])' "$O")
  # After SIGTERM mpirun SIGKILLs the ranks after a grace period: a rank that had not finished its
  # checkpoint by then leaves the file "running", which resumes from the previous checkpoint.
  case "$sig:$st" in USR1:preempted | TERM:preempted | TERM:running) ;; *) fail "after SIG$sig to mpirun the run says '$st'" ;; esac
  run_xpand "$WORK/mpi2.out" "$WORK/mpi2.err" train "$WORK/long.yaml" --out "$O"
  [ "$RC" -eq 0 ] && grep -q "resuming from the checkpoint" "$WORK/mpi2.err" ||
    { show "$WORK/mpi2.err"; fail "the run stopped through mpirun (SIG$sig) did not resume"; }
done
ok "SIGUSR1: mpirun exit 4; SIGTERM: mpirun exit 1; both runs resume"

step "disk-full: resuming on a nearly full disk is exit 1 with a message, nothing lost"
T="$WORK/tmpfs"
mkdir -p "$T"
if mount -t tmpfs -o size=80m tmpfs "$T" 2>/dev/null; then
  trap 'umount "$T" 2>/dev/null || true' EXIT
  stop_run "$T/o"
  RUNF=$(ls "$T"/o/runs/*.h5)
  before=$(sha256sum "$RUNF" "$T"/o/checkpoints/*.h5 | sha256sum)
  size=$(stat -c %s "$RUNF")
  free=$(df -B1 --output=avail "$T" | tail -1)
  fill=$((free - size / 2))
  [ "$fill" -gt 0 ] && head -c "$fill" /dev/zero >"$T/fill" 2>/dev/null || true
  echo "    run file $size bytes; $(df -B1 --output=avail "$T" | tail -1) bytes left free"
  run_xpand "$WORK/full.out" "$WORK/full.err" train "$WORK/long.yaml" --out "$T/o"
  [ "$RC" -eq 1 ] || { show "$WORK/full.err"; fail "resume on a full disk exited $RC (want 1)"; }
  grep -q "MiB are free" "$WORK/full.err" || { show "$WORK/full.err"; fail "no message about the free space"; }
  [ -z "$(ls "$T"/o/runs/*.part 2>/dev/null)" ] || fail "a .part file was left behind"
  after=$(sha256sum "$RUNF" "$T"/o/checkpoints/*.h5 | sha256sum)
  [ "$before" = "$after" ] || fail "the old run file or checkpoint changed"
  rm -f "$T/fill"
  run_xpand "$WORK/full2.out" "$WORK/full2.err" train "$WORK/long.yaml" --out "$T/o"
  [ "$RC" -eq 0 ] || { show "$WORK/full2.err"; fail "resume after freeing space exited $RC"; }
  grep -q "resuming from the checkpoint" "$WORK/full2.err" || fail "the run did not resume after space was freed"
  umount "$T"
  trap - EXIT
  ok "exit 1 with: $(grep -o 'needs about.*are free' "$WORK/full.err" | head -1 | sed 's/ in .* but/ ... but/'); resumed once space was freed"
else
  echo "    skipped: cannot mount a tmpfs here (run as root to include this case)"
fi

step "operational: a preempted run resubmitted with other operational keys resumes the same run"
O="$WORK/oper"
stop_run "$O"
run_xpand "$WORK/op.out" "$WORK/op.err" train "$WORK/long.yaml" --out "$O" --set train.log_every=7 \
  --set dist.timeout_s=1234
[ "$RC" -eq 0 ] || { show "$WORK/op.err"; fail "the resubmitted run exited $RC"; }
grep -q "resuming from the checkpoint" "$WORK/op.err" || { show "$WORK/op.err"; fail "it did not resume"; }
grep -q "resumed with train.log_every 7 (was 1000)" "$WORK/op.err" || { show "$WORK/op.err"; fail "no log of the change"; }
run_xpand "$WORK/un.out" "$WORK/un.err" train "$WORK/long.yaml" --out "$WORK/oper-straight"
[ "$RC" -eq 0 ] || { show "$WORK/un.err"; fail "the uninterrupted run exited $RC"; }
"$PYTHON" - "$O" "$WORK/oper-straight" <<'PY' || fail "operational resume"
import glob, sys, h5py, numpy as np
(resumed,) = glob.glob(sys.argv[1] + "/runs/*.h5")
(straight,) = glob.glob(sys.argv[2] + "/runs/*.h5")
assert resumed.split("/")[-1] == straight.split("/")[-1], (resumed, straight)  # one run id
with h5py.File(resumed, "r") as a, h5py.File(straight, "r") as b:
    assert a.attrs["status"] == "completed" and int(a.attrs["resumes"]) == 1, dict(a.attrs)
    keys = [k.decode() if isinstance(k, bytes) else k for k in a["resumes/key"][()]]
    old = [k.decode() if isinstance(k, bytes) else k for k in a["resumes/old"][()]]
    new = [k.decode() if isinstance(k, bytes) else k for k in a["resumes/new"][()]]
    step = a["resumes/step"][()]
    assert sorted(keys) == ["dist.timeout_s", "train.log_every"], keys
    assert dict(zip(keys, new)) == {"dist.timeout_s": "1234", "train.log_every": "7"}, (keys, new)
    assert dict(zip(keys, old)) == {"dist.timeout_s": "300", "train.log_every": "1000"}, (keys, old)
    assert (step == int(a.attrs["resumed_from_step"])).all() and step[0] > 0, step
    for col in ("test_loss", "test_acc", "train_loss"):
        x, y = a["metrics/eval"][col][-1], b["metrics/eval"][col][-1]
        assert x == y, (col, x, y)
print(f"    same run id, /resumes {list(zip(step.tolist(), keys, old, new))}, final eval equal to the uninterrupted run")
PY
ok "operational keys changed on resubmission: resumed, recorded, same final metrics"

echo "robustness: all cases passed"
