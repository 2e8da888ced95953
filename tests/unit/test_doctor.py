"""cmaprof doctor on fake machines built in tmp_path, and once on the real one."""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import pytest

from cmaprof.collectors import bccload, doctor
from cmaprof.collectors.doctor import CHECK_NAMES, Check

HOST_REL = "6.18.44-fc-v782"
GUEST_REL = "6.1.0-cmaprof-guest"
ALL_CAPS = "000001ffffffffff"


def fake_bcc() -> types.ModuleType:
    mod = types.ModuleType("bcc")
    mod.BPF = object  # type: ignore[attr-defined]
    mod.__version__ = "0.26.0"  # type: ignore[attr-defined]
    mod.__file__ = "/usr/lib/python3/dist-packages/bcc/__init__.py"
    return mod


class FakeMachine:
    """A directory tree standing for ``/``."""

    def __init__(self, root: Path, release: str) -> None:
        self.root = root
        self.release = release
        self.euid = 0
        self.attachments: list[dict] | None = []
        self.bcc_error: Exception | None = None

    def write(self, rel: str, text: str = "") -> Path:
        p = self.root / rel.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        return p

    def link(self, rel: str, target: str) -> None:
        p = self.root / rel.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.symlink_to(target)

    def mkdir(self, rel: str) -> Path:
        p = self.root / rel.lstrip("/")
        p.mkdir(parents=True, exist_ok=True)
        return p

    def event(self, group: str, name: str, fields: tuple[str, ...] = ()) -> None:
        body = "".join(
            f"\tfield:unsigned long {f};\toffset:8;\tsize:8;\tsigned:0;\n" for f in fields
        )
        self.write(
            f"/sys/kernel/tracing/events/{group}/{name}/format",
            f'name: {name}\nID: 1\nformat:\n{body}\nprint fmt: ""\n',
        )

    def import_bcc(self) -> types.ModuleType:
        if self.bcc_error is not None:
            raise self.bcc_error
        return fake_bcc()

    def run(self) -> dict[str, Check]:
        checks = doctor.run_checks(
            self.root,
            euid=lambda: self.euid,
            import_bcc=self.import_bcc,
            release=lambda: self.release,
            page_size=4096,
            environ={},
            attachments=lambda: self.attachments,
        )
        assert [c.name for c in checks] == list(CHECK_NAMES)
        return {c.name: c for c in checks}


def common_tree(m: FakeMachine) -> None:
    m.write("/proc/self/status", f"Name:\tpython3\nCapInh:\t0\nCapEff:\t{ALL_CAPS}\n")
    m.write("/proc/sys/kernel/cap_last_cap", "40\n")
    m.write("/proc/sys/kernel/kptr_restrict", "0\n")
    m.write("/proc/cmdline", "root=/dev/vda rw\n")
    m.write(
        "/proc/kallsyms",
        "0000000000000000 T bpf_get_raw_tracepoint\n0000000000000000 t bpf_raw_tp_link_attach\n",
    )
    m.write("/sys/kernel/btf/vmlinux", "BTF")
    m.write("/sys/kernel/security/lsm", "lockdown,capability,bpf")
    m.write("/sys/kernel/security/lockdown", "[none] integrity confidentiality\n")
    m.write("/etc/debian_version", "12.12\n")
    for ev in ("mm_page_alloc", "mm_page_free", "mm_page_alloc_extfrag", "kmalloc"):
        m.event("kmem", ev)
    m.event("migrate", "mm_migrate_pages")
    m.event("page_isolation", "test_pages_isolated")
    m.event("compaction", "mm_compaction_begin")
    m.event("compaction", "mm_compaction_end")


def debian_headers(m: FakeMachine, abi: str = "6.1.0-56", sublevel: int = 192) -> None:
    arch_tree = f"/usr/src/linux-headers-{abi}-amd64"
    m.write(f"{arch_tree}/include/generated/utsrelease.h", f'#define UTS_RELEASE "{abi}-amd64"\n')
    m.write(
        f"{arch_tree}/include/generated/uapi/linux/version.h",
        f"#define LINUX_VERSION_CODE {(6 << 16) + (1 << 8) + 255}\n"
        f"#define KERNEL_VERSION(a,b,c) 0\n#define LINUX_VERSION_MAJOR 6\n"
        f"#define LINUX_VERSION_PATCHLEVEL 1\n#define LINUX_VERSION_SUBLEVEL {sublevel}\n",
    )
    m.write(f"/usr/src/linux-headers-{abi}-common/include/linux/kconfig.h", "/* */\n")
    m.write(f"/usr/src/linux-headers-{abi}-common/include/linux/types.h", "/* */\n")
    m.write(f"{arch_tree}/include/generated/autoconf.h", "/* */\n")


@pytest.fixture
def host(tmp_path) -> FakeMachine:
    """Like the development host: 6.18, Debian 6.1 headers linked, no CMA, no kprobes."""
    m = FakeMachine(tmp_path / "host", HOST_REL)
    common_tree(m)
    debian_headers(m)
    # Absolute links, as setup.sh makes them: they must resolve inside the fake root.
    m.link(f"/lib/modules/{HOST_REL}/build", "/usr/src/linux-headers-6.1.0-56-amd64")
    m.link(f"/lib/modules/{HOST_REL}/source", "/usr/src/linux-headers-6.1.0-56-common")
    m.write("/proc/sys/kernel/bpf_stats_enabled", "0\n")
    m.mkdir("/sys/kernel/debug/extfrag")
    m.write("/sys/kernel/security/lockdown", "none [integrity] confidentiality\n")
    return m


@pytest.fixture
def guest(tmp_path) -> FakeMachine:
    """A CMA guest: kheaders, a 64 MiB area 'reserved', cma events, kprobes."""
    m = FakeMachine(tmp_path / "guest", GUEST_REL)
    common_tree(m)
    m.write("/sys/kernel/kheaders.tar.xz", "xz")
    m.write("/proc/sys/kernel/bpf_stats_enabled", "1\n")
    m.write("/sys/kernel/debug/cma/reserved/base_pfn", "262144\n")
    m.write("/sys/kernel/debug/cma/reserved/count", "16384\n")
    m.write("/sys/kernel/debug/cma/reserved/used", "0\n")
    m.mkdir("/sys/kernel/mm/cma/reserved")
    m.event("cma", "cma_alloc_start", ("name", "count", "align"))
    m.event("cma", "cma_alloc_finish", ("name", "pfn", "page", "count", "align"))
    m.event("cma", "cma_alloc_busy_retry", ("name", "pfn", "page", "count", "align"))
    m.event("cma", "cma_release", ("name", "pfn", "page", "count"))
    m.write("/sys/kernel/tracing/kprobe_events", "")
    return m


def statuses(checks: dict[str, Check]) -> dict[str, str]:
    return {n: c.status for n, c in checks.items()}


def assert_table_fits(checks: dict[str, Check]) -> str:
    text = doctor.table_checks(list(checks.values()))
    for line in text.splitlines():
        assert len(line) <= 80, line
    return text


def test_healthy_host(host):
    checks = host.run()
    assert statuses(checks) == {
        "root": "ok",
        "bcc": "ok",
        "headers": "warn",
        "tracefs": "ok",
        "events/kmem": "ok",
        "events/cma": "warn",
        "events/migrate": "ok",
        "events/page_isolation": "ok",
        "events/compaction": "ok",
        "cma_areas": "warn",
        "btf": "ok",
        "bpf_stats": "warn",
        "lockdown": "warn",
        "kptr_restrict": "ok",
        "kprobes": "warn",
        "raw_tracepoint": "ok",
        "other_tracers": "ok",
    }
    headers = checks["headers"].detail.lower()
    assert "linked fallback: debian 6.1 headers for a 6.18 kernel" in headers
    assert "6.1.0-56-amd64" in headers and HOST_REL in headers
    assert f"linux-headers-{HOST_REL}" in checks["headers"].fix
    assert "no CONFIG_CMA: no cma_alloc tracing" in checks["events/cma"].detail
    assert "enables it while recording" in checks["bpf_stats"].detail
    assert "integrity" in checks["lockdown"].detail
    assert "mm_page_alloc" in checks["events/kmem"].detail
    assert doctor.recording_possible(list(checks.values()))
    text = assert_table_fits(checks)
    assert "recording: possible" in text
    assert "fix: install the running kernel's headers" in text


def test_required_flags(host):
    checks = host.run()
    required = {n for n, c in checks.items() if c.required}
    assert required == {
        "root",
        "bcc",
        "headers",
        "tracefs",
        "events/kmem",
        "lockdown",
        "raw_tracepoint",
    }


def test_cma_guest(guest):
    checks = guest.run()
    st = statuses(checks)
    assert st["headers"] == "ok" and "kheaders" in checks["headers"].detail
    assert st["events/cma"] == "ok"
    assert "cma_alloc_start" in checks["events/cma"].detail
    assert "no errorno" in checks["events/cma"].detail
    assert st["cma_areas"] == "ok"
    assert checks["cma_areas"].detail == "1 area: reserved 64 MiB at pfn 0x40000"
    assert st["kprobes"] == "ok"
    assert st["bpf_stats"] == "ok"
    assert st["lockdown"] == "ok"
    assert all(c.status == "ok" for c in checks.values()), st
    assert doctor.recording_possible(list(checks.values()))
    assert "recording: possible (0 warnings)" in assert_table_fits(checks)


def test_cma_finish_with_errorno(guest):
    guest.event("cma", "cma_alloc_finish", ("name", "pfn", "page", "count", "align", "errorno"))
    assert "cma_alloc_finish has errorno" in guest.run()["events/cma"].detail


def test_cma_area_without_debugfs_range(guest):
    import shutil

    shutil.rmtree(guest.root / "sys/kernel/debug/cma")
    c = guest.run()["cma_areas"]
    assert c.status == "warn" and "reserved (no range)" in c.detail
    assert "mount -t debugfs" in c.fix


def test_no_tracefs(host):
    import shutil

    shutil.rmtree(host.root / "sys/kernel/tracing")
    checks = host.run()
    assert checks["tracefs"].status == "fail" and checks["tracefs"].required
    assert checks["tracefs"].fix.startswith("mount -t tracefs nodev /sys/kernel/tracing")
    assert checks["events/kmem"].status == "warn"
    assert "tracefs is not mounted" in checks["events/kmem"].detail
    assert not doctor.recording_possible(list(checks.values()))
    text = assert_table_fits(checks)
    assert "recording: NOT possible: tracefs failed" in text


def test_tracefs_under_debugfs(host):
    (host.root / "sys/kernel/tracing").rename(host.root / "sys/kernel/debug/tracing")
    checks = host.run()
    assert checks["tracefs"].status == "ok"
    assert checks["tracefs"].detail == "mounted at /sys/kernel/debug/tracing"
    assert checks["events/kmem"].status == "ok"


def test_lockdown_confidentiality(host):
    host.write("/sys/kernel/security/lockdown", "none integrity [confidentiality]\n")
    checks = host.run()
    assert checks["lockdown"].status == "fail"
    assert "bpf_probe_read_kernel" in checks["lockdown"].detail
    assert not doctor.recording_possible(list(checks.values()))
    assert_table_fits(checks)


def test_lockdown_unknown_without_securityfs(host):
    import shutil

    shutil.rmtree(host.root / "sys/kernel/security")
    host.mkdir("/sys/kernel/security")
    c = host.run()["lockdown"]
    assert c.status == "warn" and "securityfs" in c.fix
    host.write("/proc/cmdline", "ro lockdown=confidentiality quiet\n")
    assert host.run()["lockdown"].status == "fail"


def test_missing_kmem_events(host):
    import shutil

    shutil.rmtree(host.root / "sys/kernel/tracing/events/kmem")
    checks = host.run()
    assert checks["events/kmem"].status == "fail" and checks["events/kmem"].required
    assert not doctor.recording_possible(list(checks.values()))


def test_kmem_group_without_mm_page_alloc(host):
    import shutil

    shutil.rmtree(host.root / "sys/kernel/tracing/events/kmem/mm_page_alloc")
    c = host.run()["events/kmem"]
    assert c.status == "fail" and "lacks mm_page_alloc" in c.detail


def test_no_headers(host):
    (host.root / f"lib/modules/{HOST_REL}/build").unlink()
    (host.root / f"lib/modules/{HOST_REL}/source").unlink()
    checks = host.run()
    h = checks["headers"]
    assert h.status == "fail" and h.required
    assert "make setup" in h.fix
    assert not doctor.recording_possible(list(checks.values()))
    assert_table_fits(checks)


def test_dangling_headers_link(host):
    import shutil

    shutil.rmtree(host.root / "usr/src")
    h = host.run()["headers"]
    assert h.status == "fail" and "which does not exist" in h.detail


def test_matching_headers(host):
    tree = f"/usr/src/linux-headers-{HOST_REL}"
    host.write(f"{tree}/include/generated/utsrelease.h", f'#define UTS_RELEASE "{HOST_REL}"\n')
    host.write(f"{tree}/include/linux/kconfig.h", "")
    host.write(f"{tree}/include/linux/types.h", "")
    host.write(f"{tree}/include/generated/autoconf.h", "")
    (host.root / f"lib/modules/{HOST_REL}/build").unlink()
    (host.root / f"lib/modules/{HOST_REL}/source").unlink()
    host.link(f"/lib/modules/{HOST_REL}/build", tree)
    h = host.run()["headers"]
    assert h.status == "ok" and "headers of the running kernel" in h.detail


def test_fallback_headers_shadow_kheaders(guest):
    """Links to other headers win over kheaders in BCC: doctor says how to undo them."""
    debian_headers(guest)
    guest.link(f"/lib/modules/{GUEST_REL}/build", "/usr/src/linux-headers-6.1.0-56-amd64")
    guest.link(f"/lib/modules/{GUEST_REL}/source", "/usr/src/linux-headers-6.1.0-56-common")
    h = guest.run()["headers"]
    assert h.status == "warn" and "kheaders.tar.xz matches the kernel" in h.detail
    assert "remove the links" in h.fix


def test_not_root(host):
    host.euid = 1000
    checks = host.run()
    assert checks["root"].status == "fail" and "sudo" in checks["root"].fix
    assert not doctor.recording_possible(list(checks.values()))


def test_root_without_bpf_caps(host):
    host.write("/proc/self/status", "CapEff:\t00000000a80425fb\n")  # docker's default set
    c = host.run()["root"]
    assert c.status == "fail"
    assert "CAP_BPF" in c.detail and "CAP_PERFMON" in c.detail and "CAP_SYS_ADMIN" in c.detail


def test_old_kernel_needs_only_sys_admin(host):
    host.write("/proc/sys/kernel/cap_last_cap", "37\n")
    host.write("/proc/self/status", f"CapEff:\t{1 << 21:016x}\n")
    c = host.run()["root"]
    assert c.status == "ok" and c.detail == "euid 0, CapEff has CAP_SYS_ADMIN"


def test_no_raw_tracepoints(host):
    host.write("/proc/kallsyms", "0000000000000000 T schedule\n")
    checks = host.run()
    assert checks["raw_tracepoint"].status == "fail"
    assert not doctor.recording_possible(list(checks.values()))


def test_bcc_problem_is_a_failed_row(host):
    host.bcc_error = bccload.BccProblem(
        "BCC's Python bindings are not installed", "apt-get install python3-bpfcc"
    )
    checks = host.run()
    assert checks["bcc"].status == "fail"
    assert checks["bcc"].fix == "apt-get install python3-bpfcc"
    assert not doctor.recording_possible(list(checks.values()))


def test_unexpected_error_becomes_a_row(host):
    host.bcc_error = RuntimeError("boom")
    c = host.run()["bcc"]
    assert c.status == "fail" and "RuntimeError: boom" in c.detail


def test_pypi_bcc_is_detected(monkeypatch, tmp_path):
    impostor = types.ModuleType("bcc")
    impostor.__file__ = str(tmp_path / "site-packages/bcc/__init__.py")
    monkeypatch.setitem(sys.modules, "bcc", impostor)
    with pytest.raises(bccload.BccProblem) as exc:
        bccload.import_bcc()
    msg = str(exc.value)
    assert impostor.__file__ in msg
    assert "pip uninstall bcc" in msg


def test_missing_bcc_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "bcc", None)  # makes `import bcc` raise ImportError
    with pytest.raises(bccload.BccProblem) as exc:
        bccload.import_bcc()
    assert exc.value.fix  # each cause names a fix (install, venv, interpreter, reinstall)


def test_json(guest):
    rows = doctor.checks_as_json(list(guest.run().values()))
    assert [r["name"] for r in rows] == list(CHECK_NAMES)
    assert set(rows[0]) == {"name", "status", "detail", "fix", "required"}
    json.dumps(rows)


def test_table_wraps_long_text():
    checks = [
        Check("headers", "warn", "x" * 200 + " " + "word " * 60, "/a/very/long/path/" * 10, True),
        Check("events/page_isolation", "fail", "short", "do it", True),
    ]
    text = doctor.table_checks(checks)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "events/page_isolation* FAIL  short" in text


def test_real_machine():
    """Runs on whatever machine runs the tests, root or not: never crashes, all rows."""
    checks = doctor.run_checks()
    assert [c.name for c in checks] == list(CHECK_NAMES)
    assert {c.status for c in checks} <= {"ok", "warn", "fail"}
    for c in checks:
        assert c.detail, c
    if os.geteuid() != 0:
        assert next(c for c in checks if c.name == "root").status == "fail"
    text = doctor.table_checks(checks)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert isinstance(doctor.recording_possible(checks), bool)


# --- every environment failure: one doctor row, and the same text from record's preflight


def _preflight_error(m: FakeMachine) -> str:
    from cmaprof.errors import EnvironmentProblem

    checks = list(m.run().values())
    with pytest.raises(EnvironmentProblem) as exc:
        doctor.preflight(checks)
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def _break_not_root(m):
    m.euid = 1000


def _break_no_bcc(m):
    m.bcc_error = bccload.BccProblem(
        "BCC's Python bindings are not installed", "apt-get install python3-bpfcc"
    )


def _break_pypi_bcc(m):
    m.bcc_error = bccload.BccProblem(
        "the module `bcc` imported from /x/bcc/__init__.py is not BCC (it has no bcc.BPF)",
        "python -m pip uninstall bcc",
    )


def _break_no_headers(m):
    (m.root / f"lib/modules/{HOST_REL}/build").unlink()
    (m.root / f"lib/modules/{HOST_REL}/source").unlink()


def _break_lockdown(m):
    m.write("/sys/kernel/security/lockdown", "none integrity [confidentiality]\n")


def _break_no_kmem(m):
    import shutil

    shutil.rmtree(m.root / "sys/kernel/tracing/events/kmem")


def _break_no_tracefs(m):
    import shutil

    shutil.rmtree(m.root / "sys/kernel/tracing")


@pytest.mark.parametrize(
    "breaker, row, words",
    [
        (_break_not_root, "root", ("uid 1000", "sudo")),
        (_break_no_bcc, "bcc", ("not installed", "python3-bpfcc")),
        (_break_pypi_bcc, "bcc", ("not BCC", "pip uninstall bcc")),
        (_break_no_headers, "headers", ("no kernel headers", "CONFIG_IKHEADERS")),
        (_break_lockdown, "lockdown", ("confidentiality", "lockdown=none")),
        (_break_no_kmem, "events/kmem", ("mm_page_alloc", "CONFIG_TRACEPOINTS")),
        (_break_no_tracefs, "tracefs", ("not mounted", "mount -t tracefs")),
    ],
)
def test_preflight_says_what_the_doctor_row_says(host, breaker, row, words):
    breaker(host)
    checks = host.run()
    c = checks[row]
    assert c.status == "fail" and c.required and c.fix
    msg = _preflight_error(host)
    assert msg.startswith(f"{row}: {c.detail}; fix: {c.fix}"), msg
    for w in words:
        assert w in msg, (w, msg)


def test_preflight_passes_with_warnings(host):
    """The host as it is: linked 6.1 headers, lockdown integrity, no CMA, no kprobes."""
    warned = doctor.preflight(list(host.run().values()))
    names = {c.name for c in warned}
    assert {"headers", "lockdown", "events/cma", "cma_areas", "kprobes"} <= names


def test_preflight_names_how_many_failed(host):
    _break_not_root(host)
    _break_lockdown(host)
    msg = _preflight_error(host)
    assert msg.startswith("root: ") and "and 1 more: run cmaprof doctor" in msg


def test_lockdown_integrity_is_a_warning(host):
    # the development host's real state (/sys/kernel/security/lockdown)
    c = host.run()["lockdown"]
    assert c.status == "warn" and "integrity" in c.detail and "debugfs" in c.detail
    assert doctor.recording_possible(list(host.run().values()))


@pytest.mark.parametrize(
    "value, words", [("0", "shows addresses"), ("1", "CAP_SYSLOG"), ("2", "root included")]
)
def test_kptr_restrict_explained(host, value, words):
    host.write("/proc/sys/kernel/kptr_restrict", value + "\n")
    c = host.run()["kptr_restrict"]
    assert c.status == "ok" and c.detail.startswith(value + ": ") and words in c.detail
    assert "recording works" in c.detail


def test_no_cma_is_a_warning_that_names_the_fix(host):
    checks = host.run()
    assert checks["events/cma"].status == "warn" and "CONFIG_CMA" in checks["events/cma"].detail
    assert checks["cma_areas"].status == "warn" and "cma=" in checks["cma_areas"].fix
    assert doctor.recording_possible(list(checks.values()))


def test_incomplete_headers_fail_before_bcc_crashes(host):
    """Measured on the host: BCC_KERNEL_SOURCE at a tree holding only kconfig.h made
    BCC 0.26 die with SIGSEGV inside BPF(); doctor and record now stop first."""
    tree = host.mkdir("/tmp/ks")
    host.write("/tmp/ks/include/linux/kconfig.h", "/* */\n")
    checks = doctor.run_checks(
        host.root,
        euid=lambda: 0,
        import_bcc=host.import_bcc,
        release=lambda: HOST_REL,
        page_size=4096,
        environ={"BCC_KERNEL_SOURCE": "/tmp/ks"},
    )
    c = next(c for c in checks if c.name == "headers")
    assert c.status == "fail" and "include/linux/types.h" in c.detail
    assert "BCC_KERNEL_SOURCE" in c.fix and tree.is_dir()
    (host.root / "usr/src/linux-headers-6.1.0-56-amd64/include/generated/autoconf.h").unlink()
    c = host.run()["headers"]
    assert c.status == "fail" and "include/generated/autoconf.h" in c.detail


def test_other_tracers_listed_never_a_failure(host):
    """Events enabled at the top level and in instances, and BPF programs on the
    tracepoints cmaprof uses (bpftool perf list), in one ok row."""
    host.write("/sys/kernel/tracing/set_event", "kmem:mm_page_alloc\nsched:sched_switch\n")
    host.write("/sys/kernel/tracing/instances/mine/set_event", "kmem:mm_page_alloc\n")
    host.write("/sys/kernel/tracing/instances/idle/set_event", "")
    host.attachments = [
        {"pid": 7, "fd": 3, "prog_id": 9, "fd_type": "tracepoint", "tracepoint": "mm_page_alloc"},
        {"pid": 7, "fd": 4, "prog_id": 10, "fd_type": "tracepoint", "tracepoint": "mm_page_alloc"},
        {
            "pid": 8,
            "fd": 3,
            "prog_id": 11,
            "fd_type": "raw_tracepoint",
            "tracepoint": "sched_switch",
        },
    ]
    row = host.run()["other_tracers"]
    assert row.status == "ok" and not row.required
    assert "tracefs top level: kmem:mm_page_alloc, sched:sched_switch" in row.detail
    assert "tracefs instance mine: kmem:mm_page_alloc" in row.detail
    assert "idle" not in row.detail
    assert "BPF on mm_page_alloc (tracepoint): 2 by ?[7]" in row.detail
    assert "sched_switch" not in row.detail.split("BPF on")[1]
    host.attachments = None
    assert "bpftool missing" in host.run()["other_tracers"].detail
    host.attachments = []
    assert "no BPF program on cmaprof's tracepoints" in host.run()["other_tracers"].detail
