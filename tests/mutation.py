"""Mutation testing of the accounting, plan metrics, baseline and simulator-energy code.

    make mutation                              # set up the `mutation` extra and run this
    .venv/bin/python tests/mutation.py         # the same, once the extra is installed
    .venv/bin/python tests/mutation.py --list  # the functions in scope, and stop

The scope lives in pyproject.toml: `[tool.mutmut]` (the files mutmut rewrites and the tests it
runs) and `[tool.gimletc.mutation]` (the functions whose mutants are run and scored). This script
finds each scoped function in the source (and stops, naming the entry, if one names nothing, as it
will after a rename), runs mutmut on those functions' mutants only, from a fresh `mutants/` folder,
prints the score, and checks that every surviving mutant is named in docs/testing.md's table of
accepted survivors (between the `mutation-survivors` markers). It exits 1 if a survivor is not
explained there, or if the table names a mutant that no longer survives, so the table stays true.
Not part of `make test` or CI: one run takes minutes (docs/testing.md gives the last one's time).
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "testing.md"
BEGIN, END = "<!-- mutation-survivors:begin -->", "<!-- mutation-survivors:end -->"
SEP = "\u01c1"  # mutmut's separator in a method's mangled name: xǁClassǁmethod


@dataclass(frozen=True)
class Function:
    module: str  # gimletc.sim.load
    qualname: str  # _Sim._result or plan_metrics
    path: str  # src/gimletc/sim/load.py

    @property
    def mangled(self) -> str:
        """mutmut's name for the function; its mutants are this + "__mutmut_<n>"."""
        cls, _, name = self.qualname.rpartition(".")
        return f"{self.module}.x{SEP}{cls}{SEP}{name}" if cls else f"{self.module}.x_{name}"


def load_config() -> tuple[list[str], list[str]]:
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]
    return tool["mutmut"]["only_mutate"], tool["gimletc"]["mutation"]["functions"]


def defined_functions(only_mutate: list[str]) -> list[Function]:
    """Every top-level function and method (what mutmut mutates) in the files mutmut rewrites."""
    out = []
    for path in sorted((REPO / "src").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if not any(fnmatch.fnmatch(rel, p) for p in only_mutate):
            continue
        module = ".".join(path.relative_to(REPO / "src").with_suffix("").parts).removesuffix(".__init__")
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append(Function(module, node.name, rel))
            elif isinstance(node, ast.ClassDef):
                out += [Function(module, f"{node.name}.{m.name}", rel) for m in node.body
                        if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))]
    return out


def scoped_functions(only_mutate: list[str], entries: list[str]) -> list[Function]:
    """The functions the scope's entries name; an entry that names none is an error."""
    defined = defined_functions(only_mutate)
    chosen: dict[Function, None] = {}
    for entry in entries:
        module, sep, qualname = entry.partition(":")
        if not sep:
            sys.exit(f"mutation scope: {entry!r} is not module:function")
        hits = [f for f in defined if fnmatch.fnmatchcase(f.module, module) and fnmatch.fnmatchcase(f.qualname, qualname)]
        if not hits:
            sys.exit(f"mutation scope: {entry!r} names no function in the files of [tool.mutmut] only_mutate "
                     f"({', '.join(only_mutate)}); was it renamed or moved? Update pyproject.toml.")
        chosen.update(dict.fromkeys(hits))
    return list(chosen)


def mutmut(*args: str, log: Path | None = None) -> str:
    exe = Path(sys.executable).with_name("mutmut")
    if not exe.exists():
        sys.exit("mutmut is not installed: run `make mutation` (it installs the `mutation` extra)")
    if log is None:
        return subprocess.run([str(exe), *args], cwd=REPO, check=True, capture_output=True, text=True).stdout
    with log.open("w") as f:
        rc = subprocess.run([str(exe), *args], cwd=REPO, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        sys.exit(f"mutmut {args[0]} failed (exit {rc}); its output is in {log.relative_to(REPO)}")
    return ""


def documented_survivors() -> set[str]:
    text = DOC.read_text()
    if BEGIN not in text or END not in text:
        sys.exit(f"{DOC.relative_to(REPO)}: the {BEGIN} ... {END} markers are missing")
    table = text[text.index(BEGIN):text.index(END)]
    return set(re.findall(r"`([\w.\u01c1]+__mutmut_\d+)`", table))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", action="store_true", help="print the functions in scope and stop")
    args = ap.parse_args()
    only_mutate, entries = load_config()
    functions = scoped_functions(only_mutate, entries)
    if args.list:
        for f in functions:
            print(f"{f.path}: {f.qualname}")
        return

    t0 = time.monotonic()
    shutil.rmtree(REPO / "mutants", ignore_errors=True)  # fresh: no stale test-to-function map
    (REPO / "mutants").mkdir()
    log = REPO / "mutants" / "run.log"
    print(f"mutmut: {len(functions)} functions in scope; generating and running their mutants "
          f"(progress in {log.relative_to(REPO)})", flush=True)
    mutmut("run", *(f"{f.mangled}__mutmut_*" for f in functions), log=log)
    elapsed = time.monotonic() - t0

    status: dict[str, str] = {}
    prefixes = tuple(f"{f.mangled}__mutmut_" for f in functions)
    for line in mutmut("results", "--all", "true").splitlines():
        name, _, st = line.strip().rpartition(": ")
        if name.startswith(prefixes):
            status[name] = st
    if not status:
        sys.exit(f"mutmut ran no mutant of the scope; see {log.relative_to(REPO)}")
    counts: dict[str, int] = {}
    for st in status.values():
        counts[st] = counts.get(st, 0) + 1
    killed = counts.get("killed", 0) + counts.get("timeout", 0)
    survivors = sorted(n for n, st in status.items() if st not in ("killed", "timeout"))
    print(f"mutation score: {killed}/{len(status)} killed ({100 * killed / len(status):.1f}%); "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + f"; {elapsed:.0f} s")

    documented = documented_survivors()
    unexplained = [n for n in survivors if n not in documented]
    stale = sorted(documented - set(survivors))
    for n in survivors:
        print(f"  {'accepted' if n in documented else 'UNEXPLAINED'} {status[n]}: {n}")
    if unexplained:
        print(f"{len(unexplained)} surviving mutants are not explained in docs/testing.md: kill each with a test "
              f"or add it to the table with why it is acceptable (`.venv/bin/mutmut show NAME` shows the change)")
    if stale:
        print("docs/testing.md lists mutants that no longer survive: remove their rows\n  " + "\n  ".join(stale))
    sys.exit(1 if unexplained or stale else 0)


if __name__ == "__main__":
    main()
