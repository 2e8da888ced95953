"""Every probe compiles against the exact headers of every test kernel, on the host.

A compile inside a TCG guest takes minutes; here each kernel's own headers (its
CONFIG_IKHEADERS archive, taken out of the bzImage: cmaprof.kernel.image) are given to
BCC through BCC_KERNEL_SOURCE and the whole probe set is compiled (not loaded: the host
has no kprobes and no cma tracepoints, so those parts are compiled in through their
kprobe paths). The guest tests then prove the same probes load and count on each kernel.
The negative control compiles 7.3 without the kernel's own -fms-extensions and must fail
in the blockers probe (linux/fs.h's static_assert on struct filename).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cmaprof.guest import kernel_version, shared_test_kernels

pytestmark = pytest.mark.live

ALL = ["bulk", "page_alloc", "cma", "migrate", "blockers", "stream"]
#: what features.defines() would give on a CMA kernel with kprobes, less the cma
#: tracepoints (absent on the host: BCC builds tracepoint argument structs from the
#: running kernel's tracefs) and with the kprobe bracket and putback kprobe compiled in
DEFINES = {
    "HAVE_CMA_START": 0,
    "HAVE_CMA_FINISH": 0,
    "HAVE_CMA_ERRORNO": 0,
    "HAVE_CMA_BUSY_RETRY": 0,
    "HAVE_OLD_CMA_ALLOC": 0,
    "HAVE_CMA_RELEASE": 0,
    "HAVE_TEST_PAGES_ISOLATED": 1,
    "HAVE_KPROBE_CMA_ALLOC": 1,
    "HAVE_KPROBE_PUTBACK": 1,
    "BLK_ORIGIN_ENTRIES": 65536,
    "BULK_HAS_LIST": 0,
    "HAVE_MIGRATE_START": 1,
    "HAVE_THP_FIELDS": 1,
    # record --by comm,tgid,stack: the page_alloc cube's by-hash and stack map, and the
    # blockers' origin stacks (the default path, all 0, compiles in every other test)
    "PA_BY_COMM": 1,
    "PA_BY_TGID": 1,
    "PA_BY_STACK": 1,
    "BLK_BY_STACK": 1,
}

_CHILD = """
import json, sys
from cmaprof.collectors import compilecheck
f = compilecheck.compile_only(sys.argv[1].split(","), json.loads(sys.argv[2]))
print(json.dumps(None if f is None else {"probe": f.probe, "error": f.error}))
"""


def _compile(kernel, env_extra=None):
    from cmaprof.kernel.image import extract_kheaders

    env = dict(os.environ, BCC_KERNEL_SOURCE=str(extract_kheaders(kernel)), **(env_extra or {}))
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, ",".join(ALL), json.dumps(DEFINES)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


KERNELS = shared_test_kernels()


@pytest.mark.parametrize("kernel", KERNELS, ids=[kernel_version(k) for k in KERNELS])
def test_every_probe_compiles_against_the_kernels_own_headers(kernel):
    failure, stderr = _compile(kernel)
    assert failure is None, f"{kernel.name}: {failure}\n{stderr[-3000:]}"


def test_shared_kernels_exist():
    assert len(KERNELS) >= 3, f"expected 6.1, 6.12 and 7.3 in ../shared/kernels, got {KERNELS}"


def test_without_ms_extensions_7_3_fails_in_blockers():
    """The compile check can fail, and names the probe whose header include broke."""
    newest = [k for k in KERNELS if kernel_version(k).startswith("7.")]
    if not newest:
        pytest.skip("no 7.x kernel in ../shared/kernels")
    env = {"CMAPROF_CFLAGS": "-fno-ms-extensions"}
    failure, _ = _compile(newest[0], env)
    assert failure is not None
    assert failure["probe"] == "blockers", failure
    assert "struct filename" in failure["error"], failure
