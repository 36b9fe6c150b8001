"""Plant known bugs in the accounting code one at a time and record which tests kill each.

    .venv/bin/python tests/planted_bugs.py            # print the table
    .venv/bin/python tests/planted_bugs.py --write    # and write it into docs/testing.md

Each bug is an exact text replacement in one source file. The script writes the bug, runs the
tests that pin the numbers (ORACLE_TESTS), puts the file back (also on error or Ctrl-C), and lists
the tests that failed. A bug no test kills is a hole in the suite. When the code moves (a refactor),
a replacement's text is no longer found: the script stops and says which, so the table is never
written from a bug that was not planted. The mutation-testing run (docs/testing.md) supersedes this
list; these are the bugs issue 9 found surviving the suite.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "testing.md"
BEGIN, END = "<!-- planted-bugs:begin -->", "<!-- planted-bugs:end -->"
ORACLE_TESTS = ["tests/test_oracles.py", "tests/test_passes.py"]


@dataclass(frozen=True)
class Bug:
    name: str
    path: str
    old: str
    new: str
    issue9: bool = True  # one of the eight bugs issue 9 planted


BUGS = [
    Bug("throughput halved", "src/gimletc/compiler.py",
        "throughput_rps=1.0 / bottleneck if", "throughput_rps=0.5 / bottleneck if"),
    Bug("cost from makespan instead of busy time", "src/gimletc/compiler.py",
        "cost += (dev.chip.price_per_hour or 0.0) * sockets / 3600 * busy[d]",
        "cost += (dev.chip.price_per_hour or 0.0) * sockets / 3600 * span"),
    Bug("speedup inverted", "src/gimletc/compiler.py",
        "speedup = base.metrics.latency_ms / plan.metrics.latency_ms if",
        "speedup = plan.metrics.latency_ms / base.metrics.latency_ms if"),
    Bug("baseline picks the worst chip type", "src/gimletc/compiler.py",
        "if best is None or key < best[0]:", "if best is None or key > best[0]:"),
    Bug("CPU-lane share removed (plan metrics)", "src/gimletc/compiler.py",
        'share = b / HOST_LANES if "#" in r else b', "share = b"),
    Bug("simulator drops idle energy (accelerators)", "src/gimletc/sim/load.py",
        "energy += chip.tdp_w * active + chip.idle_w * (span - active)", "energy += chip.tdp_w * active"),
    Bug("simulator drops idle energy (hosts)", "src/gimletc/sim/load.py",
        "h.chip.tdp_w * frac * span + h.chip.idle_w * (1 - frac) * span)", "h.chip.tdp_w * frac * span)"),
    Bug("simulator drops host sockets", "src/gimletc/sim/load.py",
        "energy += h.sockets * (h.chip.tdp_w", "energy += (h.chip.tdp_w"),
    Bug("greedy energy objective replaced by latency", "src/gimletc/passes/place.py",
        "primary = p.busy_energy(u, s) + sum(ev.chips[d].idle_w * max(st.latency, finish) for d in new)",
        "primary = finish"),
    # Beyond issue 9's eight: neighbours of them.
    Bug("energy ratio inverted", "src/gimletc/compiler.py",
        "ratio = plan.metrics.energy_j / base.metrics.energy_j if", "ratio = base.metrics.energy_j / plan.metrics.energy_j if",
        issue9=False),
    Bug("plan metrics drop host sockets", "src/gimletc/compiler.py",
        'sockets = cl.node(dev.node).host.sockets if dev.role == "host" else 1', "sockets = 1", issue9=False),
    Bug("energy drops idle power", "src/gimletc/cost/energy.py",
        "chip.tdp_w * busy + chip.idle_w * (span_s - busy)", "chip.tdp_w * busy", issue9=False),
    Bug("CPU-lane share removed (placement)", "src/gimletc/passes/place.py",
        "return 1.0 / HOST_LANES if self.slots[s].is_host", "return 1.0 if self.slots[s].is_host", issue9=False),
    Bug("TPOT over output tokens + 1", "src/gimletc/compiler.py",
        "tpot[name] = decode_s / out_tokens * 1e3", "tpot[name] = decode_s / (out_tokens + 1) * 1e3", issue9=False),
    Bug("TTFT from the prefill's start", "src/gimletc/compiler.py",
        "end = max((events[o.name].end for", "end = max((events[o.name].start for", issue9=False),
    Bug("utilisation over busy time, not latency", "src/gimletc/compiler.py",
        "utilisation={d: (busy[d] / span if", "utilisation={d: (busy[d] / max(busy.values()) if", issue9=False),
]


def killers(bug: Bug, tests: list[str]) -> list[str]:
    """Plant `bug`, run `tests`, restore the file; the ids of the tests that failed."""
    path = REPO / bug.path
    original = path.read_text()
    if original.count(bug.old) != 1:
        raise SystemExit(f"{bug.name}: {bug.path} holds {original.count(bug.old)} copies of {bug.old!r}, "
                         "not one; the code moved: update the bug")
    try:
        path.write_text(original.replace(bug.old, bug.new))
        out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--tb=no", "-rf",
                              *tests], cwd=REPO, capture_output=True, text=True, timeout=1800).stdout
    finally:
        path.write_text(original)
    return sorted({re.sub(r"\[.*", "", m) for m in re.findall(r"^FAILED (\S+)", out, re.M)})


def table(rows: list[tuple[Bug, list[str]]]) -> str:
    lines = ["| planted bug | where | killed by |", "|---|---|---|"]
    for bug, tests in rows:
        mark = "" if bug.issue9 else " (extra)"
        names = ", ".join(f"`{t.split('::')[-1]}`" for t in tests) or "**survives**"
        lines.append(f"| {bug.name}{mark} | `{bug.path.removeprefix('src/')}` | {names} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    rows = []
    for bug in BUGS:
        rows.append((bug, killers(bug, ORACLE_TESTS)))
        print(f"{bug.name}: {', '.join(rows[-1][1]) or 'SURVIVES'}", flush=True)
    text = table(rows)
    print(text)
    if "--write" in argv:
        doc = DOC.read_text()
        start, end = doc.index(BEGIN) + len(BEGIN), doc.index(END)
        DOC.write_text(doc[:start] + "\n" + text + "\n" + doc[end:])
    return 0 if all(tests for _, tests in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
