# shellcheck shell=bash disable=SC2034
# Shared helpers of the end-to-end CLI tests (tests/cli/*.sh); sourced, not run.
# Every test is invoked as: bash tests/cli/NAME.sh XPAND_BINARY SOURCE_DIR WORK_DIR [EXTRA]
# (EXTRA: the multi-rank test binary, for the mpi_*.sh tests).

PYTHON=${PYTHON:-/usr/bin/python3}

step() { echo "--- $*"; }
ok() { echo "    ok: $*"; }
fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# cli_init "$@": checks the arguments and sets XPAND, SRC, WORK (absolute; emptied) and EXTRA.
cli_init() {
  if [ $# -lt 3 ] || [ $# -gt 4 ]; then
    echo "usage: bash $0 XPAND_BINARY SOURCE_DIR WORK_DIR [EXTRA]" >&2
    exit 1
  fi
  EXTRA=${4:-}
  XPAND=$(realpath "$1")
  SRC=$(realpath "$2")
  WORK=$3
  [ -x "$XPAND" ] || fail "xpand binary '$1' is missing or not executable"
  [ -d "$SRC/configs" ] || fail "source dir '$2' has no configs/"
  "$PYTHON" -c 'import h5py, numpy' 2>/dev/null || fail "$PYTHON lacks h5py/numpy (set PYTHON=/usr/bin/python3)"
  case "$WORK" in "" | / ) fail "refusing to use WORK_DIR '$WORK'" ;; esac
  rm -rf -- "$WORK"
  mkdir -p -- "$WORK"
  WORK=$(realpath "$WORK")
  echo "xpand: $XPAND"
  echo "source: $SRC"
  echo "work: $WORK"
}

# run_xpand OUTFILE ERRFILE ARGS...: runs xpand, never trips set -e; exit status in RC.
run_xpand() {
  local out=$1 err=$2
  shift 2
  RC=0
  "$XPAND" "$@" >"$out" 2>"$err" || RC=$?
}

# show FILE: prints a file indented, for failure diagnostics.
show() { sed 's/^/    | /' "$1" >&2; }

# MPI launcher of the multi-rank tests (ctest sets MPIEXEC, and the OMPI_* variables that let Open
# MPI run as root and oversubscribe a small machine).
MPIEXEC=${MPIEXEC:-mpirun}

# wait_for SECONDS COMMAND...: polls COMMAND every 0.2 s; status 1 if it never succeeded.
wait_for() {
  local limit=$1 t=0
  shift
  until "$@"; do
    sleep 0.2
    t=$((t + 1))
    [ "$t" -lt $((limit * 5)) ] || return 1
  done
}
