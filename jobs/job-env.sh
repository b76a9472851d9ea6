# Sourced by jobs/sweep-step.sh and jobs/scaling.sbatch (not run by itself): resolves what every
# xpand job needs from the environment, or exits 2 naming what is missing.
#   job_env DEFAULT_SWEEP TAG    sets root (and cd's there), sweep, xpand, extra (XPAND_ARGS) and
#                                srun_extra (SRUN_ARGS)
job_env() {
  root="${XPAND_ROOT:-${SLURM_SUBMIT_DIR:-$PWD}}"
  cd "$root" || { echo "$2: cannot cd to $root" >&2; exit 2; }
  sweep="${SWEEP:-$1}"
  xpand="${XPAND:-}"
  if [[ -z "$xpand" ]]; then
    if [[ -x "$root/build/xpand" ]]; then xpand="$root/build/xpand"; else xpand="$(command -v xpand || true)"; fi
  fi
  [[ -n "$xpand" && -x "$xpand" ]] || { echo "$2: no xpand binary (set XPAND=/path/to/xpand)" >&2; exit 2; }
  [[ -f "$sweep" ]] || { echo "$2: sweep file $sweep not found (in $root)" >&2; exit 2; }
  read -r -a extra <<<"${XPAND_ARGS:-}"
  read -r -a srun_extra <<<"${SRUN_ARGS:-}"
}
