#!/bin/bash
# make test: the whole suite in two pytest processes side by side, so the 2-CPU CI machine
# is busy with host tests while a TCG guest compiles BPF (the long pole: three guest boots
# for the CMA scenario and the blocking-page cross-check). Each process runs its modules
# one at a time; a guest module boots one guest. Exit status: non-zero if either failed.
# Usage: scripts/run-tests.sh PYTEST [extra pytest args]
set -u
pytest=$1
shift
log=$(mktemp /tmp/cmaprof-test-guest.XXXXXX)
trap 'rm -f "$log"' EXIT
long=(tests/vm/test_scenario.py tests/vm/test_blockers.py)
"$pytest" -q -p no:cacheprovider "$@" "${long[@]}" >"$log" 2>&1 &
guest=$!
ignore=()
for m in "${long[@]}"; do ignore+=(--ignore "$m"); done
"$pytest" -q -p no:cacheprovider "$@" tests "${ignore[@]}"
rc_main=$?
wait "$guest"
rc_guest=$?
echo
echo "=== ${long[*]} (ran alongside; exit $rc_guest) ==="
cat "$log"
echo "=== exit: host+unit+other guests $rc_main, scenario+blockers guests $rc_guest ==="
[ "$rc_main" -eq 0 ] && [ "$rc_guest" -eq 0 ]
