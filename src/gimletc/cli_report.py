"""`gimletc report`: a plan (and optionally a serving search result) as one self-contained HTML page.

`register(app)` adds the command to the main typer app. Bad input raises a GimletError with one
line; the CLI's `main()` prints it and exits 2. The page is written atomically, only once it is whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add `report` to the gimletc app."""

    @app.command("report")
    def report_cmd(
        plan: Annotated[Path, typer.Argument(help="a plan written by `gimletc compile`")],
        output: Annotated[str, typer.Option("--output", "-o", help="where to write the HTML page (- for stdout)")] = "report.html",
        search: Annotated[Path | None, typer.Option(
            "--search", help="a serving search result (`gimletc search ... --json > FILE`): adds its Pareto frontier")
        ] = None,
    ) -> None:
        """Write a plan as one self-contained HTML page: metrics against the baseline, the graph and where
        each op runs, the per-device timeline, transfers, and the serving frontier of a search result."""
        import sys

        from gimletc._io import STDOUT, check_outputs, write_outputs
        from gimletc.plan import load_plan
        from gimletc.report import load_search, render_report

        check_outputs([output], allow_stdout=True)  # before any work
        p = load_plan(plan)
        s = load_search(search) if search is not None else None
        write_outputs([(output, render_report(p, s))], allow_stdout=True)
        if output != STDOUT:
            print(f"wrote {output}")
        else:
            sys.stderr.flush()
