"""Every command's --help has examples, and each example parses (click, not run), as
does every cmaprof command of the README.

An example is a line under "Examples:" that starts with ``cmaprof``; a trailing
backslash continues it, `` | `` and ``#`` end it. Parsing resolves the subcommands and
lets click check every option, choice and type (``make_context``); workload specs
(``cmaprof workload``, ``--workload``) go through the workloads' own parser, and a
command run under ``record`` or ``vm run`` (``-- cmaprof ...``) is parsed the same way.
The examples also follow the README's advice.
"""

from __future__ import annotations

import re
import shlex

import click
import pytest

from cmaprof import workloads
from cmaprof.cli import cli


def _commands(group: click.Group = cli, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [path]
    for name in group.list_commands(click.Context(group)):
        cmd = group.get_command(click.Context(group), name)
        if isinstance(cmd, click.Group):
            out += _commands(cmd, (*path, name))
        elif cmd is not None and not cmd.hidden:
            out.append((*path, name))
    return out


def _resolve(path: tuple[str, ...]) -> click.Command:
    cmd: click.Command = cli
    for name in path:
        assert isinstance(cmd, click.Group)
        sub = cmd.get_command(click.Context(cmd), name)
        assert sub is not None
        cmd = sub
    return cmd


def _help(path: tuple[str, ...]) -> str:
    cmd = _resolve(path)
    with click.Context(cmd, info_name=" ".join(("cmaprof", *path))) as ctx:
        return cmd.get_help(ctx)


def examples(text: str) -> list[str]:
    """The example command lines of a help text, continuation lines joined."""
    out, cur, inside = [], "", False
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith(("Examples:", "Example:")):
            inside = True
            continue
        if not inside:
            continue
        if cur:
            cur += " " + line
        elif line.startswith("cmaprof "):
            cur = line
        else:
            continue
        if cur.endswith("\\"):
            cur = cur[:-1].rstrip()
            continue
        out.append(re.split(r"\s[|#]\s?", cur)[0].strip())
        cur = ""
    return out


def parse(argv: list[str]) -> None:
    """Resolve ``cmaprof ARGS`` to its command and let click parse the rest."""
    assert argv[0] == "cmaprof"
    args = argv[1:]
    cmd: click.Command = cli
    parent = None
    name = "cmaprof"
    while isinstance(cmd, click.Group):
        assert args, f"{argv}: names a group, not a command"
        parent = click.Context(cmd, info_name=name, parent=parent)
        name = args.pop(0)
        sub = cmd.get_command(parent, name)
        assert sub is not None, f"{argv}: no command {name!r}"
        cmd = sub
    ctx = cmd.make_context(name, args, parent=parent)
    params = ctx.params
    specs = list(params.get("specs") or []) + list(params.get("workload_specs") or [])
    for spec in specs:
        workloads.parse_spec(spec)
    inner = list(params.get("command") or [])
    if inner and inner[0] == "cmaprof":
        parse(inner)


ALL = _commands()
EXAMPLES = [(p, ex) for p in ALL for ex in examples(_help(p))]


@pytest.mark.parametrize("path", ALL, ids=lambda p: " ".join(p) or "cmaprof")
def test_every_help_has_examples_of_itself(path):
    exs = examples(_help(path))
    assert exs, f"cmaprof {' '.join(path)} --help has no examples"
    prefix = " ".join(("cmaprof", *path))
    assert any(e == prefix or e.startswith(prefix + " ") for e in exs), exs


@pytest.mark.parametrize("path,example", EXAMPLES, ids=[e for _, e in EXAMPLES])
def test_help_example_parses(path, example):
    parse(shlex.split(example))


@pytest.mark.parametrize("path,example", EXAMPLES, ids=[e for _, e in EXAMPLES])
def test_help_example_follows_the_readme(path, example):
    """README: fewer than 4 iterations cannot reach significance (1 shows the effect);
    a 90% cma-alloc request tried thousands of positions and ran past a 10-minute
    timeout (ask for N%free or N%maxchunk)."""
    m = re.search(r"--iterations[ =](\d+)", example)
    assert m is None or int(m.group(1)) in (1,) or int(m.group(1)) >= 4, example
    assert not re.search(r"pages=\d+%(?![a-z])", example), example


def test_the_parser_refuses_what_click_refuses():
    with pytest.raises(click.UsageError):
        parse(shlex.split("cmaprof compare a b --format png"))
    with pytest.raises(click.UsageError):
        parse(shlex.split("cmaprof plot a -o x --image-format jpg"))
    with pytest.raises(Exception, match="unknown workload"):
        parse(shlex.split("cmaprof workload nosuch:1"))


def test_old_option_spellings_still_parse():
    parse(shlex.split("cmaprof plot a b -o out --format svg"))
    parse(shlex.split("cmaprof vm run --out /tmp/x -- true"))


def test_output_options_are_o_output_everywhere():
    """Every option that names where output goes is spelled -o/--output; an image
    format is --image-format, and --format offers text, csv or json only."""
    for path in ALL:
        cmd = _resolve(path)
        for param in cmd.params:
            if not isinstance(param, click.Option) or param.hidden:
                continue
            if {"--out", "--outdir", "--output-dir"} & set(param.opts):
                raise AssertionError(f"cmaprof {' '.join(path)}: {param.opts}")
            if "--output" in param.opts:
                assert param.opts == ["-o", "--output"], (path, param.opts)
            if "--format" in param.opts:
                assert isinstance(param.type, click.Choice), path
                assert set(param.type.choices) <= {"text", "csv", "json"}, path
    parse(shlex.split("cmaprof vm run -o /tmp/x -- true"))
    parse(shlex.split("cmaprof vm run --output /tmp/x -- true"))


def readme_commands() -> list[str]:
    """The ``cmaprof ...`` commands of the README's indented code blocks, continuation
    lines (a trailing backslash, or an open quote) joined."""
    from tests.conftest import ROOT

    out, cur = [], ""
    for line in (ROOT / "README.md").read_text().splitlines():
        if not line.startswith("    ") and not cur:
            continue
        text = line.removeprefix("    ")
        if not cur and not text.startswith("cmaprof "):
            continue
        cur = f"{cur}\n{text}" if cur else text
        if cur.endswith("\\"):
            cur = cur[:-1]
            continue
        try:
            shlex.split(cur, comments=True)
        except ValueError:  # an open quote: the command goes on
            continue
        out.append(cur)
        cur = ""
    return out


README_COMMANDS = readme_commands()


def test_readme_has_commands():
    assert len(README_COMMANDS) >= 12
    assert any(c.startswith("cmaprof vm run") for c in README_COMMANDS)


@pytest.mark.parametrize(
    "command", README_COMMANDS, ids=[c.split("\n")[0] for c in README_COMMANDS]
)
def test_readme_command_parses(command):
    parse(shlex.split(command, comments=True))
    assert not re.search(r"--iterations[ =][23]\b", command)
