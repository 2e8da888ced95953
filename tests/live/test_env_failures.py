"""Environment failures made for real on this host, one at a time, and always undone.

Each failure must give one clear line from ``cmaprof record`` (non-zero exit, the output
directory never created) and a row naming the problem and the fix from ``cmaprof
doctor``. How each is made:

* not root: ``setpriv`` to nobody;
* BCC missing: a mount namespace (``unshare -m``) with an empty directory bind-mounted
  over Debian's ``/usr/lib/python3/dist-packages/bcc``;
* BCC shadowed: a package called ``bcc`` without ``bcc.BPF`` (what PyPI's unrelated
  ``bcc`` is) first on ``PYTHONPATH``;
* no kernel headers: an empty directory over ``/lib/modules/$(uname -r)`` (this host has
  no ``/sys/kernel/kheaders.tar.xz``);
* a missing tracepoint group: an empty directory over ``events/kmem`` (required) or
  ``events/migrate`` (optional: ``--skip-unavailable`` records without it) in every
  mounted tracefs; and ``cma:*``, which this host really lacks;
* kptr_restrict: set to 2 and restored (recording must work: names only are used);
* lockdown and no CMA: the host's real state (lockdown ``integrity``, no CMA area);
  ``confidentiality`` cannot be undone without a reboot, so it is unit-tested only
  (tests/unit/test_doctor.py).

Mount namespaces end with their process, so nothing is left mounted even if a test dies.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import cmaprof_cmd, run_cli

RELEASE = os.uname().release
DEBIAN_BCC = Path("/usr/lib/python3/dist-packages/bcc")
TRACEFS = [Path(p) for p in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")]
LOCKDOWN = Path("/sys/kernel/security/lockdown")
KPTR = Path("/proc/sys/kernel/kptr_restrict")
KERNEL_ADDR = re.compile(r"\b(0x)?ffff[89a-f][0-9a-f]{11}\b", re.IGNORECASE)


def _in_namespace(
    binds: list[Path], argv: list[str], empty: Path, **kw
) -> subprocess.CompletedProcess:
    """Run ``argv`` in a private mount namespace with ``empty`` bind-mounted over each
    of ``binds`` (the host's mounts are untouched)."""
    script = (
        'e="$1"; n="$2"; shift 2; i=0; while [ $i -lt "$n" ]; do '
        'mount --bind "$e" "$1" || exit 97; shift; i=$((i+1)); done; exec "$@"'
    )
    empty.mkdir(exist_ok=True)
    cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(empty)]
    cmd += [str(len(binds)), *map(str, binds), *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)
    assert proc.returncode != 97, f"bind mount failed: {proc.stderr}"
    return proc


def _doctor_rows(proc: subprocess.CompletedProcess) -> dict[str, dict]:
    assert "Traceback" not in proc.stderr, proc.stderr
    return {r["name"]: r for r in json.loads(proc.stdout)}


def _assert_one_line_error(proc: subprocess.CompletedProcess, out: Path, *words: str) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("cmaprof: error:")]
    assert len(errors) == 1, proc.stderr
    for w in words:
        assert w in errors[0], (w, errors[0])
    assert not out.exists(), f"{out} was created by a recording that could not start"
    return errors[0]


def _record(out: Path, *extra: str) -> list[str]:
    return cmaprof_cmd() + ["record", "-o", str(out), "-d", "1", *extra]


def _doctor() -> list[str]:
    return cmaprof_cmd() + ["doctor", "--format", "json"]


def test_not_root_doctor_row(tmp_path):
    proc = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *_doctor()],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    row = _doctor_rows(proc)["root"]
    assert row["status"] == "fail" and "uid 65534" in row["detail"] and "root" in row["fix"]


def test_bcc_missing(tmp_path):
    if not DEBIAN_BCC.is_dir():
        pytest.skip(f"{DEBIAN_BCC} absent: BCC is not installed the Debian way here")
    out = tmp_path / "rec"
    rows = _doctor_rows(_in_namespace([DEBIAN_BCC], _doctor(), tmp_path / "empty"))
    assert rows["bcc"]["status"] == "fail"
    assert "not installed" in rows["bcc"]["detail"]
    assert "python3-bpfcc" in rows["bcc"]["fix"]
    proc = _in_namespace([DEBIAN_BCC], _record(out), tmp_path / "empty")
    _assert_one_line_error(
        proc, out, "bcc: ", "not installed", "fix: apt-get install python3-bpfcc"
    )


def test_bcc_shadowed_by_pypi_package(tmp_path):
    fake = tmp_path / "site" / "bcc"
    fake.mkdir(parents=True)
    # PyPI's `bcc` is an unrelated package: importable as bcc, without bcc.BPF.
    (fake / "__init__.py").write_text('"""Not BCC."""\n__version__ = "0.0.3"\n')
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"))
    proc = subprocess.run(_doctor(), capture_output=True, text=True, check=False, env=env)
    row = _doctor_rows(proc)["bcc"]
    assert row["status"] == "fail" and str(fake) in row["detail"] and "not BCC" in row["detail"]
    assert "pip uninstall bcc" in row["fix"]
    assert proc.returncode == 1
    out = tmp_path / "rec"
    proc = subprocess.run(_record(out), capture_output=True, text=True, check=False, env=env)
    _assert_one_line_error(proc, out, "bcc: ", "not BCC", "pip uninstall bcc")


def test_no_kernel_headers(tmp_path):
    if Path("/sys/kernel/kheaders.tar.xz").exists():
        pytest.skip("this kernel has CONFIG_IKHEADERS: hiding /lib/modules does not remove headers")
    mods = Path(f"/lib/modules/{RELEASE}")
    if not mods.is_dir():
        pytest.skip(f"{mods} absent: this machine has no headers to hide")
    out = tmp_path / "rec"
    rows = _doctor_rows(_in_namespace([mods], _doctor(), tmp_path / "empty"))
    assert rows["headers"]["status"] == "fail"
    assert "no kernel headers" in rows["headers"]["detail"]
    assert "CONFIG_IKHEADERS" in rows["headers"]["fix"]
    proc = _in_namespace([mods], _record(out), tmp_path / "empty")
    _assert_one_line_error(proc, out, "headers: no kernel headers", "fix: ")


def _mounted_events(group: str) -> list[Path]:
    dirs = [t / "events" / group for t in TRACEFS if (t / "events" / group).is_dir()]
    if not dirs:
        pytest.skip(f"no events/{group} in any mounted tracefs")
    return dirs


def test_no_kmem_tracepoints(tmp_path):
    binds = _mounted_events("kmem")
    out = tmp_path / "rec"
    rows = _doctor_rows(_in_namespace(binds, _doctor(), tmp_path / "empty"))
    assert rows["events/kmem"]["status"] == "fail" and rows["events/kmem"]["fix"]
    proc = _in_namespace(binds, _record(out), tmp_path / "empty")
    _assert_one_line_error(proc, out, "events/kmem: ", "mm_page_alloc", "fix: ")


def test_missing_optional_group_is_skipped_when_asked(tmp_path):
    """No migrate:* events: --probes page_alloc,migrate fails, unless --skip-unavailable,
    which records page_alloc and says in the metadata and report why migrate is off."""
    binds = _mounted_events("migrate")
    rows = _doctor_rows(_in_namespace(binds, _doctor(), tmp_path / "empty"))
    assert rows["events/migrate"]["status"] == "warn"
    out = tmp_path / "rec"
    proc = _in_namespace(binds, _record(out, "--probes", "page_alloc,migrate"), tmp_path / "empty")
    _assert_one_line_error(proc, out, "probe migrate cannot run here", "--skip-unavailable")
    proc = _in_namespace(
        binds,
        _record(out, "--probes", "page_alloc,migrate", "--skip-unavailable"),
        tmp_path / "empty",
    )
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((out / "metadata.json").read_text())
    assert "migrate" not in meta["probes"] and "page_alloc" in meta["probes"]
    assert "migrate/mm_migrate_pages" in meta["probes_unavailable"]["migrate"]
    assert meta["skip_unavailable"] is True
    assert meta["probes_requested"] == ["page_alloc", "migrate"]
    text = run_cli("report", str(out)).stdout
    assert re.search(
        r"probes not run:\n(  .*\n)*  migrate: kernel lacks migrate/mm_migrate_pages", text
    )


def test_no_cma_on_this_host(tmp_path):
    """The host's real state: no cma:* tracepoints and no CMA area."""
    if any((t / "events/cma").is_dir() for t in TRACEFS):
        pytest.skip("this kernel has cma events: the no-CMA case needs a kernel without CONFIG_CMA")
    proc = run_cli("doctor", "--format", "json")
    rows = _doctor_rows(proc)
    assert rows["events/cma"]["status"] == "warn" and "CONFIG_CMA" in rows["events/cma"]["detail"]
    assert rows["cma_areas"]["status"] == "warn" and "cma=" in rows["cma_areas"]["fix"]
    out = tmp_path / "rec"
    proc = run_cli("record", "-o", str(out), "-d", "1", "--probes", "page_alloc,cma")
    _assert_one_line_error(proc, out, "probe cma cannot run here", "cma/cma_alloc_start")
    proc = run_cli(
        "record", "-o", str(out), "-d", "1", "--probes", "page_alloc,cma", "--skip-unavailable"
    )
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((out / "metadata.json").read_text())
    assert set(meta["probes"]) == {"page_alloc"}
    assert "cma/cma_alloc_start" in meta["probes_unavailable"]["cma"]
    assert meta["complete"] is True
    text = run_cli("report", str(out)).stdout
    assert "probes not run:" in text and "  cma: kernel lacks cma/cma_alloc_start" in text


def test_lockdown_as_the_host_has_it():
    try:
        mode = re.search(r"\[(\w+)\]", LOCKDOWN.read_text()).group(1)  # type: ignore[union-attr]
    except (OSError, AttributeError):
        pytest.skip(f"{LOCKDOWN} unreadable: securityfs not mounted or no lockdown LSM")
    row = _doctor_rows(run_cli("doctor", "--format", "json"))["lockdown"]
    expected = {"none": "ok", "integrity": "warn", "confidentiality": "fail"}[mode]
    assert row["status"] == expected and (mode in row["detail"] or mode == "none")
    if mode == "integrity":
        # what the row claims: a debugfs file with write permission cannot be opened
        # (LOCKDOWN_DEBUGFS), even for reading (CMA's alloc/free files are such files)
        dbg = Path("/sys/kernel/debug")
        files = [p for p in dbg.iterdir() if p.is_file() and p.stat().st_mode & 0o222]
        if not files:
            pytest.skip("no writable file at the top of debugfs to try")
        with pytest.raises(PermissionError):
            files[0].open("rb").close()


def test_kptr_restrict_2_records(tmp_path):
    """kptr_restrict=2 hides kallsyms addresses even from root: recording still works
    (cmaprof reads symbol names only) and prints no address."""
    old = KPTR.read_text()
    out = tmp_path / "rec"
    try:
        KPTR.write_text("2\n")
        assert Path("/proc/kallsyms").read_text().split(None, 1)[0] == "0" * 16
        row = _doctor_rows(run_cli("doctor", "--format", "json"))["kptr_restrict"]
        assert row["status"] == "ok" and row["detail"].startswith("2: ")
        proc = run_cli("record", "-o", str(out), "-d", "1", "--probes", "page_alloc")
    finally:
        KPTR.write_text(old)
    assert KPTR.read_text() == old
    assert proc.returncode == 0, proc.stderr
    rep = run_cli("report", str(out))
    assert rep.returncode == 0, rep.stderr
    for text in (proc.stderr, rep.stdout, (out / "metadata.json").read_text()):
        assert not KERNEL_ADDR.search(text)
    # every file of this fresh recording, its report in every format with and without
    # --redact, and its plots: no kernel address (no pfn where redacted)
    from tests.unit.test_redact import scan_outputs

    res = scan_outputs(out, tmp_path / "scan", {"record stderr": proc.stderr})
    assert res["files"] > 10


def test_incomplete_headers_stop_before_bcc_crashes(tmp_path):
    """BCC_KERNEL_SOURCE at a tree holding only kconfig.h: BCC 0.26 died with SIGSEGV
    inside BPF() (exit 139, a half-written recording); now the headers row stops it."""
    tree = tmp_path / "ks"
    (tree / "include/linux").mkdir(parents=True)
    (tree / "include/linux/kconfig.h").write_text("/* */\n")
    env = dict(os.environ, BCC_KERNEL_SOURCE=str(tree))
    proc = subprocess.run(_doctor(), capture_output=True, text=True, check=False, env=env)
    rows = _doctor_rows(proc)
    assert rows["headers"]["status"] == "fail" and "incomplete" in rows["headers"]["detail"]
    out = tmp_path / "rec"
    proc = subprocess.run(_record(out), capture_output=True, text=True, check=False, env=env)
    _assert_one_line_error(proc, out, "headers: incomplete kernel headers", "BCC_KERNEL_SOURCE")


def test_compile_failure_leaves_nothing(tmp_path, monkeypatch):
    """A compile error BCC reports (it raises a bare Exception; wrong-version headers
    can cause one) is one error and removes the start-up files. The error is injected:
    this host's headers compile."""
    from cmaprof.collectors import bccload
    from cmaprof.collectors.record import RecordOptions, record
    from cmaprof.errors import EnvironmentProblem

    def fail(names, options=None):
        raise Exception("Failed to compile BPF module <text>")  # noqa: TRY002 - as bcc.BPF

    monkeypatch.setattr(bccload, "load_probes", fail)
    out = tmp_path / "rec"
    with pytest.raises(EnvironmentProblem) as exc:
        record(RecordOptions(output=out, duration_s=1, probes=["page_alloc"]))
    assert "BCC could not compile or load the probes" in str(exc.value)
    assert "cmaprof probes dump page_alloc" in str(exc.value)
    assert not out.exists()
