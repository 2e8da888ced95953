#!/bin/bash
# make test / make test-matrix: the suite in two pytest streams side by side, so the
# 2-CPU machine is busy with host tests while a TCG guest compiles BPF (the long pole).
# Each stream runs its modules one at a time; a guest module boots one guest per kernel.
#
# make test (CI, about 40 minutes):
#   stream 1: tests/unit, tests/live, the guest modules whose result depends on the
#             kernel's memory layout (vm run, movable layout: no BPF compile) on EVERY
#             kernel of ../shared/kernels, then on the newest kernel the runner's own
#             modules (panic, signals), the cma guest test and perf/trace-cmd beside
#             cmaprof in a guest (a full BCC compile each; CMAPROF_CMA_KERNELS=all
#             runs them on every kernel);
#   stream 2: the buffer-head scenario, the blocking-page cross-check and a failed
#             cma_alloc() per cause class on the newest kernel.
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
long=(tests/vm/test_scenario.py tests/vm/test_blockers.py tests/vm/test_causes.py)
# a full BCC compile in the guest each; newest kernel in make test (CMAPROF_CMA_KERNELS)
cmaguest=(tests/vm/test_cma.py tests/vm/test_coexist.py)
layout=(tests/vm/test_vm_run.py tests/vm/test_vm_movable.py)
runner=(tests/vm/test_vm_panic.py tests/vm/test_vm_signal.py)
run() { "$pytest" -q -p no:cacheprovider "$@"; }

if [ "$mode" = matrix ]; then
    CMAPROF_TEST_KERNELS=all run "$@" "${long[@]}" >"$logdir/2" 2>&1 &
    second=$!
    CMAPROF_TEST_KERNELS=all run "$@" "${cmaguest[@]}" "${layout[@]}" "${runner[@]}"
    rc1=$?
else
    CMAPROF_TEST_KERNELS=newest run "$@" "${long[@]}" >"$logdir/2" 2>&1 &
    second=$!
    ignore=()
    for m in "${long[@]}" "${runner[@]}" "${cmaguest[@]}"; do ignore+=(--ignore "$m"); done
    CMAPROF_TEST_KERNELS=all run "$@" tests "${ignore[@]}"
    rc1=$?
    echo
    echo "=== ${runner[*]} on the newest kernel ==="
    CMAPROF_TEST_KERNELS=newest run "$@" "${runner[@]}"
    rc=$?
    [ "$rc1" -eq 0 ] && rc1=$rc
    echo
    echo "=== ${cmaguest[*]} on ${CMAPROF_CMA_KERNELS:-newest} ==="
    CMAPROF_TEST_KERNELS=${CMAPROF_CMA_KERNELS:-newest} run "$@" "${cmaguest[@]}"
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
