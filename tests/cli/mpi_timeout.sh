#!/usr/bin/env bash
# A rank that never reaches a collective: the others abort the job once dist timeout passes, and
# the message names the operation, the ranks that arrived and the rank that did not.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cli_init "$@"
[ -x "$EXTRA" ] || fail "multi-rank test binary '$EXTRA' missing"

step "3 ranks, rank 1 sleeps instead of joining an all-reduce (timeout 3 s)"
start=$(date +%s)
RC=0
XPAND_TEST_HANG=1 timeout 120 "$MPIEXEC" -np 3 -x XPAND_TEST_HANG "$EXTRA" --gtest_filter='Timeout.*' \
  >"$WORK/out" 2>"$WORK/err" || RC=$?
elapsed=$(($(date +%s) - start))
cat "$WORK/out" "$WORK/err" >"$WORK/all"
[ "$RC" -ne 0 ] || { show "$WORK/all"; fail "the job exited 0"; }
[ "$RC" -ne 124 ] || { show "$WORK/all"; fail "the job hung until the test's own 120 s limit"; }
grep -q "collective timeout: all-reduce of the test tensor" "$WORK/all" || { show "$WORK/all"; fail "no timeout message"; }
grep -q "Ranks that arrived: 0, 2\." "$WORK/all" || { show "$WORK/all"; fail "arrived ranks not named"; }
grep -q "Ranks that did not arrive: 1 " "$WORK/all" || { show "$WORK/all"; fail "missing rank not named"; }
grep -q "aborting all 3 ranks" "$WORK/all" || { show "$WORK/all"; fail "no job abort"; }
[ "$elapsed" -lt 60 ] || fail "took ${elapsed}s"
ok "exit $RC after ${elapsed}s: $(grep -m1 -o 'Ranks that did not arrive: [0-9, ]*' "$WORK/all")"
