#!/usr/bin/env bash
# A throwaway single-node Slurm cluster on this machine, for testing jobs/*.sbatch (and for trying a
# sweep the way a cluster runs it). Debian's slurm-wlm + munge; run as root.
#
#   scripts/slurm-local.sh start     start munged, slurmctld and slurmd; prints the SLURM_CONF to export
#   scripts/slurm-local.sh stop      stop them by their pids and remove the state
#   scripts/slurm-local.sh status    whether it runs (exit 0) and sinfo
#   scripts/slurm-local.sh env       the line to eval: export SLURM_CONF=...
#
# Everything lives under ${XPAND_SLURM_DIR:-/tmp/xpand-slurm}: slurm.conf, a private munge socket,
# pid files, logs (slurmctld.log, slurmd.log), spool and state. The cluster has one node named
# $(hostname) with all its CPUs and memory, one partition "debug", select/cons_tres,
# proctrack/linuxproc, MpiDefault=pmix, SlurmUser=root, and GresTypes=gpu with
# ${XPAND_SLURM_GPUS:-2} placeholder GPUs, so that scripts written for
# GPU clusters (--gpus-per-task=1) run unchanged; a CPU program just does not see a GPU.
# (The placeholder device files are character devices with /dev/null's numbers under the state dir.)
# Ports: ${XPAND_SLURM_PORT:-16817} (slurmctld) and the next one (slurmd).
set -euo pipefail
dir="${XPAND_SLURM_DIR:-/tmp/xpand-slurm}"
conf="$dir/slurm.conf"
gpus="${XPAND_SLURM_GPUS:-2}"
port="${XPAND_SLURM_PORT:-16817}"

die() { echo "slurm-local: $*" >&2; exit 1; }

pid_of() { [[ -s "$dir/$1.pid" ]] && cat "$dir/$1.pid"; }
alive() { local p; p=$(pid_of "$1" || true); [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null; }

stop() {
  local any=0
  for d in slurmd slurmctld munged; do
    local p; p=$(pid_of "$d" || true)
    [[ -n "$p" ]] || continue
    if kill -0 "$p" 2>/dev/null; then
      kill -TERM "$p" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null || true
      any=1
    fi
    rm -f "$dir/$d.pid"
  done
  # Job steps and tasks of this cluster that outlived slurmd (proctrack/linuxproc cannot reap them once
  # it is gone): slurmstepd inherits slurmd's SLURM_CONF, tasks their job's; nothing else is touched.
  for p in /proc/[0-9]*; do
    local pid=${p#/proc/}
    [[ "$pid" == "$$" ]] && continue
    local env
    env=$( { tr '\0' '\n' <"$p/environ"; } 2>/dev/null) || continue
    grep -qxF "SLURM_CONF=$conf" <<<"$env" || continue
    if [[ "$(cat "$p/comm" 2>/dev/null)" == slurmstepd ]] || grep -q "^SLURM_JOB_ID=" <<<"$env"; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  [[ -d "$dir" ]] && rm -rf "$dir"
  ((any)) && echo "slurm-local: stopped" || echo "slurm-local: was not running"
}

start() {
  [[ $(id -u) -eq 0 ]] || die "run as root (slurmd and munged need it)"
  for b in munged slurmctld slurmd sbatch; do
    command -v "$b" >/dev/null 2>&1 || [[ -x "/usr/sbin/$b" ]] || \
      die "$b not found: apt-get install slurm-wlm munge (scripts/setup.sh --slurm does it)"
  done
  if alive slurmctld && alive slurmd; then echo "slurm-local: already running"; echo "export SLURM_CONF=$conf"; return; fi
  [[ -d "$dir" ]] && stop >/dev/null
  mkdir -p "$dir"/{state,spool,munge}
  chmod 755 "$dir"

  # munge: the package's key (created on install) or a fresh one; a socket of our own so that a
  # system munged, if any, is left alone.
  local key=/etc/munge/munge.key
  if [[ ! -s "$key" ]]; then
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null 2>&1; then mungekey --create --keyfile="$key" --force >/dev/null
    else dd if=/dev/urandom of="$key" bs=1 count=1024 status=none; fi
  fi
  chown munge:munge "$key" /etc/munge; chmod 600 "$key"; chmod 700 /etc/munge
  chown munge:munge "$dir/munge"; chmod 755 "$dir/munge"
  mkdir -p /var/lib/munge /var/log/munge; chown munge:munge /var/lib/munge /var/log/munge
  runuser -u munge -- /usr/sbin/munged --socket="$dir/munge/munge.socket" --pid-file="$dir/munge/munged.pid" \
    --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed" --key-file="$key" --force \
    || die "munged did not start (see $dir/munge/munged.log)"
  for _ in $(seq 50); do [[ -S "$dir/munge/munge.socket" ]] && break; sleep 0.1; done
  [[ -S "$dir/munge/munge.socket" ]] || die "munged did not open its socket (see $dir/munge/munged.log)"
  cp "$dir/munge/munged.pid" "$dir/munged.pid"

  local host cpus mem
  host=$(hostname)
  cpus=$(nproc --all)
  mem=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
  cat >"$conf" <<CONF
# Written by scripts/slurm-local.sh: a throwaway single-node cluster.
ClusterName=xpand-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$((mem / cpus))
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=pmix
SwitchType=switch/none
SchedulerType=sched/backfill
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
JobRequeue=1
KillWait=60
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
GresTypes=gpu
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem $( ((gpus > 0)) && echo "Gres=gpu:$gpus") State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
  # Slurm wants a device file per GPU: character devices with /dev/null's numbers, named like
  # NVIDIA's so that Slurm numbers them (tasks see CUDA_VISIBLE_DEVICES, and no GPU behind it).
  mkdir -p "$dir/dev"
  for ((i = 0; i < gpus; i++)); do mknod "$dir/dev/nvidia$i" c 1 3; done
  {
    echo "# Placeholder GPUs: Slurm accounts for them; the device files are /dev/null clones."
    ((gpus > 0)) && echo "NodeName=$host Name=gpu File=$dir/dev/nvidia[0-$((gpus - 1))]"
  } >"$dir/gres.conf"

  export SLURM_CONF="$conf"
  /usr/sbin/slurmctld -f "$conf" || die "slurmctld did not start (see $dir/slurmctld.log)"
  /usr/sbin/slurmd -f "$conf" || die "slurmd did not start (see $dir/slurmd.log)"
  for _ in $(seq 150); do
    if sinfo -h -o '%T' 2>/dev/null | grep -qx idle; then
      echo "slurm-local: up (node $host, $cpus CPUs, ${mem} MiB, $gpus placeholder GPUs); state in $dir"
      echo "export SLURM_CONF=$conf"
      return
    fi
    sleep 0.2
  done
  sinfo 2>&1 || true
  tail -n 20 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 || true
  die "the node did not become idle within 30 s"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status)
    if alive slurmctld && alive slurmd; then SLURM_CONF="$conf" sinfo; exit 0; fi
    echo "slurm-local: not running"; exit 1 ;;
  env) echo "export SLURM_CONF=$conf" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
