"""Every guest test's shell script parses (``sh -n``; Python ones compile) before a guest is booted for it:
a quoting slip otherwise costs a boot and a BCC compile under TCG to find."""

from __future__ import annotations

import importlib
import subprocess
from pathlib import Path

import pytest

MODULES = sorted(p.stem for p in (Path(__file__).parents[1] / "vm").glob("test_*.py"))


def _scripts(name: str) -> dict[str, str]:
    mod = importlib.import_module(f"tests.vm.{name}")
    return {k: v for k, v in vars(mod).items() if k.isupper() and isinstance(v, str) and "\n" in v}


@pytest.mark.parametrize("name", MODULES)
def test_guest_scripts_parse(name):
    scripts = _scripts(name)
    for var, text in scripts.items():
        if text.lstrip().startswith(("import ", "from ")):  # a Python script the shell runs
            compile(text, f"tests/vm/{name}.py:{var}", "exec")
            continue
        r = subprocess.run(["sh", "-n"], check=False, input=text, text=True, capture_output=True)
        assert r.returncode == 0, f"tests/vm/{name}.py {var}: {r.stderr}"


def test_the_scripts_are_found():
    assert {"SCRIPT", "PHASES"} <= set(_scripts("test_causes"))
