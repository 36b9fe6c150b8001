"""docs/scenarios.md is exactly what examples/scenarios/report.py writes: every number and verdict in it comes
from a fresh run of the serving search (bounded: a few configurations and 400-2,000 requests per simulation;
about 25 s of CPU on this project's machine)."""

from __future__ import annotations

import difflib
import runpy
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_scenarios_doc_is_a_fresh_run():
    report = runpy.run_path(str(ROOT / "examples" / "scenarios" / "report.py"), run_name="scenarios_report")
    fresh = report["document"]()
    committed = (ROOT / "docs" / "scenarios.md").read_text()
    if fresh != committed:
        diff = "".join(difflib.unified_diff(committed.splitlines(True), fresh.splitlines(True),
                                            "docs/scenarios.md (committed)", "a fresh run", n=0))
        raise AssertionError("docs/scenarios.md differs from a fresh run of examples/scenarios/report.py; "
                             "regenerate it with `.venv/bin/python examples/scenarios/report.py`:\n" + diff[:4000])
