"""Every `gimletc simulate` and `gimletc search` command in the README and docs/ runs, as written, on the
plans the same document's own commands write (its `gimletc compile` lines, or `make demo`).

The commands are parsed out of the markdown (fenced and indented code blocks, `\\` continuations), so this
test follows the docs: optional parts in [brackets] are left out, `# comments` dropped, files a command
writes (-o, --trace, --plot, --timeline, --save, `> FILE`) go to a temporary folder, and later commands
read them from there. Commands run in-process from the repository root."""

from __future__ import annotations

import contextlib
import io
import shlex
from pathlib import Path

import pytest

from gimletc.cli import main

ROOT = Path(__file__).parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN = ("simulate", "search")  # what the test checks
SETUP = ("compile",)  # what writes the plans they read
OUTPUTS = ("-o", "--output", "--trace", "--plot", "--timeline", "--save")


def code_lines(text: str) -> list[str]:
    """Shell lines of the markdown's code blocks (fenced, or indented by four spaces), continuations joined."""
    lines, out, fenced, buf = text.splitlines(), [], False, ""
    for line in lines:
        if line.strip().startswith("```"):
            fenced = not fenced
            continue
        if not (fenced or line.startswith("    ")):
            continue
        s = line.strip()
        if buf:
            s = buf + " " + s
            buf = ""
        if s.endswith("\\"):
            buf = s[:-1].rstrip()
            continue
        out.append(s)
    return out


def commands(text: str) -> list[list[str]]:
    """`gimletc` command lines (argv after the program), and `make demo` as ["make", "demo"]."""
    out = []
    for line in code_lines(text):
        try:
            argv = shlex.split(line, comments=True)
        except ValueError:
            continue
        if not argv:
            continue
        if argv[:2] == ["make", "demo"]:
            out.append(["make", "demo"])
            continue
        if Path(argv[0]).name != "gimletc" or len(argv) < 2 or argv[1] not in RUN + SETUP:
            continue
        kept, skip = [], False
        for tok in argv[1:]:  # leave out optional [parts]
            if tok.startswith("["):
                skip = True
            if not skip:
                kept.append(tok)
            if skip and tok.endswith("]"):
                skip = False
        out.append(kept)
    return out


def demo_command() -> list[str]:
    """The Makefile's `make demo` compile line."""
    text = (ROOT / "Makefile").read_text()
    recipe = text.split("\ndemo:", 1)[1]
    line = next(x for x in recipe.splitlines() if "gimletc compile" in x)
    argv = shlex.split(line.replace("$(BIN)/", ""))
    return argv[1:]


def run(argv: list[str], tmp: Path, written: dict[str, Path]) -> tuple[int, str, str]:
    args, redirect = [], None
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok == ">":
            redirect = argv[i + 1]
            i += 2
            continue
        if tok in OUTPUTS and i + 1 < len(argv):
            name = argv[i + 1]
            written[name] = tmp / name.replace("/", "_")
            args += [tok, str(written[name])]
            i += 2
            continue
        args.append(str(written[tok]) if tok in written else tok)
        i += 1
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(args)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    if redirect is not None:
        written[redirect] = tmp / redirect.replace("/", "_")
        written[redirect].write_text(out.getvalue())
    return code, out.getvalue(), err.getvalue()


def docs_with_commands() -> list[Path]:
    return [p for p in DOCS if any(c[0] in RUN for c in commands(p.read_text()))]


def test_the_parser_finds_the_documented_commands():
    readme = commands((ROOT / "README.md").read_text())
    assert ["make", "demo"] in readme
    assert any(c[0] == "simulate" and "plan.json" in c for c in readme)
    assert any(c[0] == "search" and "--plot" in c for c in readme)
    serving = commands((ROOT / "docs" / "serving.md").read_text())
    assert [c[0] for c in serving if c[0] in RUN][:2] == ["simulate", "search"]
    assert commands("    gimletc simulate p.json --rate 1 [--json]  # note\n") == [["simulate", "p.json", "--rate", "1"]]
    assert commands("```sh\n.venv/bin/gimletc search g.py \\\n    --slo-ttft-ms 5 --json > s.json\n```\n") == \
        [["search", "g.py", "--slo-ttft-ms", "5", "--json", ">", "s.json"]]
    assert demo_command()[:2] == ["compile", "examples/coding_agent.py"]


@pytest.mark.parametrize("doc", docs_with_commands(), ids=lambda p: p.name)
def test_documented_simulate_and_search_commands_run(doc, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    written: dict[str, Path] = {}
    ran = 0
    for argv in commands(doc.read_text()):
        if argv == ["make", "demo"]:
            argv = demo_command()
        code, out, err = run(argv, tmp_path, written)
        assert code == 0, f"{doc.name}: gimletc {' '.join(argv)} exited {code}: {err.strip()[-500:]}"
        if argv[0] in RUN:
            ran += 1
            assert out.strip()
    assert ran >= 1
