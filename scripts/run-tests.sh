#!/bin/bash
# make test / make test-matrix: the suite in two pytest streams side by side, so the
# 2-CPU machine is busy with host tests while a TCG guest compiles BPF (the long pole).
# Each stream runs its modules one at a time; a guest module boots one guest per kernel.
#
# make test (CI, about 40 minutes):
#   stream 1: tests/unit, tests/live, the guest modules whose result depends on the
#             kernel's memory layout (vm run, movable layout: no BPF compile) on EVERY
#             kernel of ../shared/kernels, then on the newest kernel the runner's own
#             modules (panic, signals) and the cma guest test (a full BCC compile;
#             CMAPROF_CMA_KERNELS=all runs it on every kernel);
#   stream 2: the buffer-head scenario and the blocking-page cross-check on the newest
#             kernel.
#   Every probe is also compiled against every kernel's own headers on the host
#   (tests/live/test_probe_matrix.py, seconds per kernel).
# make test-matrix (about 3 hours): every guest module on every kernel, two streams.
#
# Usage: scripts/run-tests.sh PYTEST test|matrix [extra pytest args]
# Exit status: non-zero if any stream failed.
set -u
pytest=$1
mode=$2
shift 2
logdir=$(mktemp -d /tmp/cmaprof-test.XXXXXX)
trap 'rm -rf "$logdir"' EXIT
long=(tests/vm/test_scenario.py tests/vm/test_blockers.py)
layout=(tests/vm/test_vm_run.py tests/vm/test_vm_movable.py)
runner=(tests/vm/test_vm_panic.py tests/vm/test_vm_signal.py)
run() { "$pytest" -q -p no:cacheprovider "$@"; }

if [ "$mode" = matrix ]; then
    CMAPROF_TEST_KERNELS=all run "$@" "${long[@]}" >"$logdir/2" 2>&1 &
    second=$!
    CMAPROF_TEST_KERNELS=all run "$@" tests/vm/test_cma.py "${layout[@]}" "${runner[@]}"
    rc1=$?
else
    CMAPROF_TEST_KERNELS=newest run "$@" "${long[@]}" >"$logdir/2" 2>&1 &
    second=$!
    ignore=()
    for m in "${long[@]}" "${runner[@]}" tests/vm/test_cma.py; do ignore+=(--ignore "$m"); done
    CMAPROF_TEST_KERNELS=all run "$@" tests "${ignore[@]}"
    rc1=$?
    echo
    echo "=== ${runner[*]} on the newest kernel ==="
    CMAPROF_TEST_KERNELS=newest run "$@" "${runner[@]}"
    rc=$?
    [ "$rc1" -eq 0 ] && rc1=$rc
    echo
    echo "=== tests/vm/test_cma.py on ${CMAPROF_CMA_KERNELS:-newest} ==="
    CMAPROF_TEST_KERNELS=${CMAPROF_CMA_KERNELS:-newest} run "$@" tests/vm/test_cma.py
    rc=$?
    [ "$rc1" -eq 0 ] && rc1=$rc
fi
wait "$second"
rc2=$?
echo
echo "=== ${long[*]} (ran alongside; exit $rc2) ==="
cat "$logdir/2"
echo "=== exit: stream 1 $rc1, stream 2 $rc2 ==="
[ "$rc1" -eq 0 ] && [ "$rc2" -eq 0 ]
