"""The layers import downwards only, and no module imports itself round a cycle.

Every ``import`` of the installed package is read with :mod:`ast`, those inside
functions too (a lazy import is still a dependency). The layers, bottom first (see
docs/architecture.md):

  0  cmaprof (the package: version only), cmaprof.errors
  1  cmaprof.kernel                     text the kernel writes: format files, procfs, dmesg...
  2  cmaprof.probes, cmaprof.workloads  BPF C and its ABI; workloads that make the kernel work
  3  cmaprof.recording                  the contract: schema, writer, reader, metadata
  4  cmaprof.collectors | cmaprof.analysis   (never each other)
  5  cmaprof.guest, cmaprof.experiment(_plan)  guests, and experiments run in them
  6  cmaprof.cli                        the command line

A module may import its own layer or lower ones (annotation-only imports under
``if TYPE_CHECKING:`` count too). No module may import itself round a cycle at run
time. On failure the test prints every offending edge and the whole layer graph.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: source tree -> installed package (setup.cfg's package_dir)
TREES = {
    "cmaprof": "cmaprof",
    "probes": "cmaprof.probes",
    "collectors": "cmaprof.collectors",
    "analysis": "cmaprof.analysis",
}
LAYERS = {
    "cmaprof": 0,  # the package itself: its version, nothing imported
    "cmaprof.errors": 0,
    "cmaprof.kernel": 1,
    "cmaprof.probes": 2,
    "cmaprof.workloads": 2,
    "cmaprof.recording": 3,
    "cmaprof.collectors": 4,
    "cmaprof.analysis": 4,
    "cmaprof.guest": 5,
    "cmaprof.experiment": 5,
    "cmaprof.experiment_plan": 5,
    "cmaprof.cli": 6,
    "cmaprof.__main__": 6,
}
APART = {frozenset({"cmaprof.collectors", "cmaprof.analysis"})}


def modules() -> dict[str, Path]:
    """Installed module name -> source file."""
    out = {}
    for tree, pkg in TREES.items():
        for path in sorted((ROOT / tree).rglob("*.py")):
            rel = path.relative_to(ROOT / tree).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if tree == "cmaprof" and parts and parts[0] in ("probes", "collectors", "analysis"):
                continue  # not in this source tree
            out[".".join([pkg, *parts])] = path
    return out


def _type_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside ``if TYPE_CHECKING:`` blocks."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for stmt in node.body:
                out.update(id(n) for n in ast.walk(stmt))
    return out


def imports(name: str, path: Path, known: set[str], runtime_only: bool = False) -> set[str]:
    """The cmaprof modules ``name`` imports (``from P import m`` is P.m when that is a
    module). ``runtime_only`` leaves out imports under ``if TYPE_CHECKING:`` (annotations
    only: they cannot make an import cycle)."""
    is_pkg = path.name == "__init__.py"
    base = name if is_pkg else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_only(tree) if runtime_only else set()
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                anchor = base.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                mod = ".".join(anchor + ([mod] if mod else []))
            for a in node.names:
                sub = f"{mod}.{a.name}"
                out.add(sub if sub in known else mod)
    return {m for m in out if m.startswith("cmaprof") and m != name}


def layer_of(name: str) -> tuple[str, int]:
    keys = [k for k in LAYERS if name == k or (k != "cmaprof" and name.startswith(k + "."))]
    best = max(keys, key=len, default="")
    assert best, f"{name} is in no layer: add it to LAYERS (and to docs/architecture.md)"
    return best, LAYERS[best]


def graph(runtime_only: bool = False) -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {n: imports(n, p, known, runtime_only) for n, p in mods.items()}


def _cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in g:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def layer_graph(g: dict[str, set[str]]) -> str:
    edges: dict[str, set[str]] = defaultdict(set)
    for a, deps in g.items():
        for b in deps:
            la, lb = layer_of(a)[0], layer_of(b)[0]
            if la != lb:
                edges[la].add(lb)
    return "\n".join(
        f"  {a} ({LAYERS[a]}) -> {', '.join(sorted(edges[a]))}"
        for a in sorted(edges, key=lambda k: (LAYERS[k], k))
    )


def test_every_module_is_in_a_layer():
    for name in graph():
        layer_of(name)


def test_imports_go_down_only():
    g = graph()
    bad = []
    for a, deps in sorted(g.items()):
        la, na = layer_of(a)
        for b in sorted(deps):
            lb, nb = layer_of(b)
            if nb > na or frozenset({la, lb}) in APART:
                bad.append(f"  {a} -> {b}   ({la} {na} imports {lb} {nb})")
    assert not bad, "imports against the layers:\n" + "\n".join(bad) + "\n\n" + layer_graph(g)


def test_no_import_cycle():
    g = graph(runtime_only=True)
    cycles = _cycles(g)
    assert not cycles, (
        "import cycles:\n"
        + "\n".join("  " + " <-> ".join(c) for c in cycles)
        + "\n\n"
        + layer_graph(g)
    )
