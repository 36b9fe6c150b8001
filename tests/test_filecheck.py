"""Pass tests as text: each tests/filecheck/**/*.mlir holds input IR, RUN lines and FileCheck lines.

As in LLVM's and xDSL's lit tests, a file says how it runs:

    // RUN: gimletc opt %s --pipeline place --cluster %S/../clusters/one_h200.yaml | filecheck %s
    // RUN: not gimletc opt %s --pipeline schedule 2>&1 | filecheck %s --check-prefix=ERR

`%s` is the file, `%S` its folder; `not` expects a failing exit; `2>&1` checks stderr too. The command runs
in-process (`gimletc.cli.main`) and its output is checked by `filecheck` (the PyPI port of LLVM FileCheck)
against the same file. One test per file; a second test per file plants a wrong line into each positive
check (CHECK, -NEXT, -SAME, -LABEL, -DAG) in turn and expects filecheck to fail, so no check line is dead.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from gimletc.cli import main as gimletc_main

ROOT = Path(__file__).parent / "filecheck"
FILES = sorted(ROOT.rglob("*.mlir"))
WRONG = "@@planted: not in the output@@"


@dataclass(frozen=True)
class Run:
    line: int
    negate: bool  # `not`: the command must fail
    merge_stderr: bool  # `2>&1`
    args: tuple[str, ...]  # gimletc's arguments
    filecheck: tuple[str, ...]  # filecheck's arguments, the check file last or among them


def run_lines(path: Path) -> list[Run]:
    """The file's RUN lines (a trailing backslash continues one), parsed and with %s and %S substituted."""
    runs, pending, start = [], "", 0
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        m = re.match(r"\s*//\s*RUN:(.*)$", line)
        if not m:
            continue
        start = start or i
        part = m.group(1).strip()
        if part.endswith("\\"):
            pending += part[:-1] + " "
            continue
        text = (pending + part).replace("%s", str(path)).replace("%S", str(path.parent))
        runs.append(_parse_run(start, text, path))
        pending, start = "", 0
    assert not pending, f"{path}: a RUN line ends with a backslash and nothing follows"
    assert runs, f"{path}: no RUN line"
    return runs


def _parse_run(line: int, text: str, path: Path) -> Run:
    words = shlex.split(text)
    where = f"{path.name}:{line}"
    assert words.count("|") == 1, f"{where}: expected `[not] gimletc ARGS [2>&1] | filecheck ARGS`, got {text!r}"
    bar = words.index("|")
    left, right = words[:bar], words[bar + 1 :]
    negate = bool(left) and left[0] == "not"
    left = left[1:] if negate else left
    merge = bool(left) and left[-1] == "2>&1"
    left = left[:-1] if merge else left
    assert left and left[0] == "gimletc", f"{where}: the command must be gimletc, got {left[:1]}"
    assert right and right[0] == "filecheck", f"{where}: the output must go to filecheck, got {right[:1]}"
    return Run(line, negate, merge, tuple(left[1:]), tuple(right[1:]))


def run_gimletc(run: Run) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `gimletc ARGS`, in-process."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            gimletc_main(list(run.args))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def run_filecheck(args: tuple[str, ...], output: str, tmp: Path) -> tuple[int, str]:
    """(exit code, messages) of `filecheck ARGS` reading `output`."""
    from filecheck.main import main as filecheck_main

    given = tmp / "output.txt"
    given.write_text(output, encoding="utf-8")
    msgs = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(msgs), contextlib.redirect_stderr(msgs):
        try:
            filecheck_main(["filecheck", "--input-file", str(given), *args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return code, msgs.getvalue()


_OUTPUTS: dict[tuple[Path, int], str] = {}


def command_output(path: Path, run: Run) -> str:
    """What filecheck reads for `run` (computed once per RUN line), after checking the exit status."""
    key = (path, run.line)
    if key not in _OUTPUTS:
        code, out, err = run_gimletc(run)
        where = f"{path.relative_to(ROOT)}:{run.line}"
        if run.negate:
            assert code != 0, f"{where}: expected gimletc to fail; it exited 0 with:\n{out}"
        else:
            assert code == 0, f"{where}: gimletc exited {code}: {err.strip()}"
        _OUTPUTS[key] = out + err if run.merge_stderr else out
    return _OUTPUTS[key]


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in paths]


@pytest.mark.parametrize("path", FILES, ids=_ids(FILES))
def test_filecheck(path: Path, tmp_path: Path) -> None:
    for run in run_lines(path):
        code, msgs = run_filecheck(run.filecheck, command_output(path, run), tmp_path)
        assert code == 0, f"{path.relative_to(ROOT)}:{run.line}: filecheck failed:\n{msgs}"


def _prefixes(run: Run) -> list[str]:
    out = []
    for i, a in enumerate(run.filecheck):
        if a.startswith("--check-prefix="):
            out.extend(a.split("=", 1)[1].split(","))
        elif a == "--check-prefix" and i + 1 < len(run.filecheck):
            out.extend(run.filecheck[i + 1].split(","))
    return out or ["CHECK"]


@pytest.mark.parametrize("path", FILES, ids=_ids(FILES))
def test_every_check_line_can_fail(path: Path, tmp_path: Path) -> None:
    """A wrong pattern planted into any positive check line makes filecheck fail: no check is dead
    (a misspelt prefix, a line under a prefix no RUN line uses)."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    runs = run_lines(path)
    checked = 0
    for prefix in dict.fromkeys(p for r in runs for p in _prefixes(r)):
        positive = re.compile(rf"//\s*{re.escape(prefix)}(-NEXT|-SAME|-LABEL|-DAG)?:")
        for n, line in enumerate(lines):
            if not positive.search(line):
                continue
            planted = tmp_path / path.name
            planted.write_text("".join([*lines[:n], line.rstrip("\n") + f" {WRONG}\n", *lines[n + 1 :]]),
                               encoding="utf-8")
            failed = False
            for run in runs:
                if prefix not in _prefixes(run):
                    continue
                args = tuple(str(planted) if a == str(path) else a for a in run.filecheck)
                failed |= run_filecheck(args, command_output(path, run), tmp_path)[0] != 0
            assert failed, f"{path.relative_to(ROOT)}:{n + 1}: a wrong pattern on this line did not fail: {line.strip()}"
            checked += 1
    # every line that looks like a check belongs to a prefix some RUN line uses
    used = {p for r in runs for p in _prefixes(r)}
    for n, line in enumerate(lines):
        m = re.match(r"\s*//\s*([A-Z][A-Z0-9_]*)(-NEXT|-SAME|-LABEL|-DAG|-NOT|-EMPTY|-COUNT-\d+)?:", line)
        if m and m.group(1) not in ("RUN", "COM"):
            assert m.group(1) in used, f"{path.relative_to(ROOT)}:{n + 1}: prefix {m.group(1)} is used by no RUN line"
    assert checked, f"{path.relative_to(ROOT)}: no positive check line"
