"""No classic-tracepoint program may return 0: perf_trace_run_bpf_submit()
(kernel/events/core.c) drops the event for every perf user when one does."""

import re

from tests.conftest import ROOT

PROBES = sorted((ROOT / "probes").glob("*.bpf.c"))


def _tracepoint_bodies(text: str) -> list[tuple[str, str]]:
    """(name, body) of each TRACEPOINT_PROBE and each int fn(struct tracepoint__...)."""
    heads = re.finditer(
        r"^(TRACEPOINT_PROBE\([^)]*\)|int \w+\(struct tracepoint__\w+ \*\w+\))\s*\{",
        text,
        re.MULTILINE,
    )
    out = []
    for h in heads:
        depth, i = 1, h.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        out.append((h.group(1), text[h.end() : i]))
    return out


def test_classic_tracepoint_programs_never_return_zero():
    bodies = [(p.name, n, b) for p in PROBES for n, b in _tracepoint_bodies(p.read_text())]
    assert len(bodies) >= 8, bodies  # migrate (2) and cma (6) at least
    for fname, name, body in bodies:
        assert not re.search(r"\breturn\s+0\s*;", body), f"{fname}: {name} returns 0"
        assert re.search(r"\breturn\s+1\s*;", body), f"{fname}: {name} has no return 1"
