"""Which probe a failed compile is blamed on, and what the message says (no BCC).

The texts are clang's real output under BCC 0.26 (cut to the lines that matter): the
7.3 headers without -fms-extensions, and a probe's own syntax error.
"""

from __future__ import annotations

from cmaprof.collectors import compilecheck
from cmaprof.collectors.compilecheck import CompileFailure, dependents, first_error

HEADER_ERROR = """\
include/linux/compiler_types.h:8:4: warning: x [-Wfoo]
<built-in>:329:33: note: expanded from here
In file included from /work/main/probes/blockers.bpf.c:50:
include/linux/fs.h:1940:2: warning: declaration does not declare anything [-Wmissing-declarations]
        struct __filename_head;
        ^
include/linux/fs.h:1944:1: error: static_assert failed due to requirement 'sizeof(struct filename) % 64 == 0'
"""

NESTED = """\
In file included from /work/main/probes/common.h:12:
In file included from include/linux/mm_types.h:5:
include/linux/x.h:1:9: error: expected expression
"""

OWN_ERROR = """\
In file included from /work/main/probes/blockers.bpf.c:50:
include/linux/fs.h:1940:2: warning: declaration does not declare anything
/work/main/probes/migrate.bpf.c:22:23: error: expected value in expression
"""


def test_header_error_is_blamed_on_the_probe_that_included_it():
    path, line = first_error(HEADER_ERROR)
    assert compilecheck.probe_of(path) == "blockers"
    assert "struct filename" in line


def test_error_in_common_code_names_no_probe():
    path, _ = first_error(NESTED)
    assert path.endswith("probes/common.h")
    assert compilecheck.probe_of(path) is None


def test_error_in_a_probe_file_is_that_probe():
    path, line = first_error(OWN_ERROR)
    assert compilecheck.probe_of(path) == "migrate"
    assert line.endswith("expected value in expression")


def test_no_error_line():
    assert first_error("include/a.h:1:2: warning: w\n") is None


def test_dependents_follow_needs():
    names = ["bulk", "page_alloc", "cma", "migrate", "blockers"]
    assert dependents("cma", names) == ["cma", "blockers"]
    assert dependents("blockers", names) == ["blockers"]
    assert dependents(None, names) == []


def test_message_names_probe_error_and_what_skip_leaves_out():
    names = ["page_alloc", "cma", "migrate", "blockers"]
    assert CompileFailure(None, "e").message(names).startswith("the probes do not compile")
    msg = CompileFailure("cma", "cma.bpf.c:1:2: error: boom").message(names)
    assert msg.startswith("probe cma does not compile or load on this kernel: cma.bpf.c")
    assert "--skip-unavailable to record without cma, blockers" in msg
    core = CompileFailure("page_alloc", "e").message(names)
    assert "--skip-unavailable" not in core


def test_cache_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compilecheck.cached("k") is None
    compilecheck.remember("k", CompileFailure(None, "Failed to compile BPF module <text>"))
    assert compilecheck.cached("k") is None, "no compiler error line: not remembered"
    compilecheck.remember("k", CompileFailure("blockers", "x: error: y"))
    assert compilecheck.cached("k") == CompileFailure("blockers", "x: error: y")
    compilecheck.remember("k", None)
    assert compilecheck.cached("k") is True
